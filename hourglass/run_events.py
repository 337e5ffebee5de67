"""Cursors of the run event log, and what maintenance prunes from it: plain values, no I/O.

Every change of a run's state is a row of `run_events`, written by the statement that makes
the change and stamped with the id of its transaction. A WatchJob client resumes from a
cursor, like a Kubernetes watch from a resourceVersion.

A cursor is a PostgreSQL snapshot (`pg_snapshot`, "xmin:xmax:xip,..."): the server took it
when it last read the log, and the client has seen every event that snapshot sees. The
events after the cursor are exactly those whose transaction the snapshot does not see. A
sequence cannot serve as the cursor by itself: ids are handed out before commit, so a
transaction holding id 9 can commit after one holding id 10 has been read, and "after 10"
would skip 9 forever. A snapshot has no such gap. It also keeps each run's events in order:
one run's changes are serialised by its row lock, so a snapshot that sees a change sees every
earlier change of that run, and within one read the events go out in id order, which for one
run is the order of its changes.

One read can return many events, and the client may vanish halfway through them. So a
cursor taken inside a read also names that read's snapshot (`top`) and the last id sent
(`last`): the client has seen what `base` sees, plus what `top` sees up to id `last`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from hourglass.domain import Attempt, RunState

# How long events are kept: a client may resume from a cursor at most this old.
DEFAULT_RETENTION = timedelta(minutes=15)

_XID = r"\d{1,20}"
_SNAPSHOT = re.compile(rf"({_XID}):({_XID}):((?:{_XID}(?:,{_XID})*)?)")
_CURSOR_PARTS = 3
_MAX_XID = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A pg_snapshot: transactions below xmin are done, those at or above xmax had not
    started, and those in xip were in progress."""

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        match = _SNAPSHOT.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a snapshot")
        xmin, xmax = int(match.group(1)), int(match.group(2))
        xip = tuple(int(x) for x in match.group(3).split(",")) if match.group(3) else ()
        if not 0 < xmin <= xmax <= _MAX_XID:
            raise ValueError(f"{text!r}: needs 0 < xmin <= xmax")
        if list(xip) != sorted(set(xip)) or any(not xmin <= x < xmax for x in xip):
            raise ValueError(f"{text!r}: in-progress ids must be sorted, distinct, in [xmin, xmax)")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in self.xip)}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a client has seen: every event `base` sees, and, inside a read, every event
    `top` sees with an id up to `last`."""

    base: Snapshot
    top: Snapshot | None = None
    last: int = 0

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor a server returned; ValueError for anything else."""
        parts = text.split("/")
        if len(parts) == 1:
            return cls(Snapshot.parse(parts[0]))
        if len(parts) != _CURSOR_PARTS or not parts[2].isdigit() or len(parts[2]) > 19:
            raise ValueError(f"{text!r} is not a cursor")
        base, top = Snapshot.parse(parts[0]), Snapshot.parse(parts[1])
        if top.xmin < base.xmin or top.xmax < base.xmax:
            raise ValueError(f"{text!r}: its read is older than its base")
        return cls(base, top, int(parts[2]))

    def __str__(self) -> str:
        if self.top is None:
            return str(self.base)
        return f"{self.base}/{self.top}/{self.last}"

    def within(self, top: Snapshot, last: int) -> Cursor:
        """The position after the event `last` of a read whose snapshot is `top`."""
        return Cursor(self.base, top, last)

    def newest_xmax(self) -> int:
        return self.top.xmax if self.top is not None else self.base.xmax


def expired(cursor: Cursor, *, pruned_below: int) -> bool:
    """Whether events after `cursor` may have been pruned. Pruning removes the events of
    every transaction below `pruned_below`; the cursor's snapshot sees all of those only if
    its xmin is not lower."""
    return cursor.base.xmin < pruned_below


def unknown(cursor: Cursor, *, xmax_now: int) -> bool:
    """Whether `cursor` names transactions this database has not reached: it comes from
    another database, or from before a restore of this one. The events after it cannot be
    told apart, so the client has to list again."""
    return cursor.newest_xmax() > xmax_now


def prune_before(now: datetime, *, retention: timedelta) -> datetime:
    """Events written before this instant may go."""
    if retention <= timedelta(0):
        raise ValueError("event retention must be positive")
    return now - retention


def attempts_at(state: RunState, attempt: int, stored: Iterable[Attempt]) -> tuple[Attempt, ...]:
    """A run's attempts as they stood right after a change to `state` at attempt `attempt`,
    from the attempts as stored now. Earlier attempts had ended, as stored. The current one
    had not started if the run was queued; was running, with only what its start wrote, if
    the run was running; and had ended as stored if the run had ended."""
    earlier = [a for a in stored if a.number < attempt]
    current = next((a for a in stored if a.number == attempt), None)
    if current is None or state == RunState.QUEUED:
        return tuple(earlier)
    if state == RunState.RUNNING:
        current = dataclasses.replace(
            current,
            state=RunState.RUNNING,
            finished_at=None,
            exit_code=None,
            stdout_tail="",
            stderr_tail="",
            error="",
        )
    return (*earlier, current)
