"""The run_events table: the log of every change of a run's state, read by WatchJob.

A trigger on `runs` writes it, inside the statement that changes the runs (one INSERT per
statement, however many rows), so no code path can change a state without its event, and an
event exists exactly when its change committed. What a cursor is, and why it is a snapshot,
is in `hourglass.run_events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hourglass.domain import JobId, RunId, RunState
from hourglass.run_events import Cursor, Snapshot
from hourglass.store.db import Connection


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A run as one change left it."""

    id: int
    job_id: JobId
    run_id: RunId
    state: RunState
    attempt: int
    scheduled_at: datetime
    created_at: datetime
    finished_at: datetime | None
    trigger: str
    reason: str


def _event(row: dict[str, Any]) -> RunEvent:
    return RunEvent(
        id=row["id"],
        job_id=JobId(row["job_id"]),
        run_id=RunId(row["run_id"]),
        state=RunState(row["state"]),
        attempt=row["attempt"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        trigger=row["trigger"],
        reason=row["reason"],
    )


async def snapshot(conn: Connection) -> Snapshot:
    """The snapshot of the current statement (of the transaction, in REPEATABLE READ): what
    a list read in the same transaction saw, as a cursor."""
    cursor = await conn.execute("SELECT pg_current_snapshot()::text AS snapshot")
    row = await cursor.fetchone()
    assert row is not None
    return Snapshot.parse(row["snapshot"])


@dataclass(frozen=True, slots=True)
class Read:
    """One read of a job's events after a snapshot."""

    events: list[RunEvent]
    # The snapshot they were read with: it sees them all, and the next read starts after it.
    snapshot: Snapshot
    # Events of transactions below this xid had been pruned when they were read.
    pruned_below: int


async def read_after(conn: Connection, job_id: JobId, *, after: Snapshot) -> Read:
    """A job's events that `after` does not see, in id order. One statement, so the events,
    the snapshot and the pruning horizon agree: if `after` was not expired by that horizon,
    no event it does not see had been pruned before the read."""
    cursor = await conn.execute(
        """
        SELECT s.snapshot::text AS snapshot, s.pruned_below::text AS pruned_below,
               e.id, e.job_id, e.run_id, e.state, e.attempt, e.scheduled_at, e.created_at,
               e.finished_at, e.trigger, e.reason
        FROM (SELECT pg_current_snapshot() AS snapshot,
                     coalesce((SELECT below FROM run_events_pruned), '0') AS pruned_below)
             AS s
        LEFT JOIN LATERAL (
            SELECT * FROM run_events
            WHERE job_id = %(job)s AND xid >= pg_snapshot_xmin(%(after)s::pg_snapshot)
              AND NOT pg_visible_in_snapshot(xid, %(after)s::pg_snapshot)
        ) AS e ON true
        ORDER BY e.id
        """,
        {"job": job_id, "after": str(after)},
    )
    rows = await cursor.fetchall()
    return Read(
        events=[_event(row) for row in rows if row["id"] is not None],
        snapshot=Snapshot.parse(rows[0]["snapshot"]),
        pruned_below=int(rows[0]["pruned_below"]),
    )


async def read_rest(conn: Connection, job_id: JobId, *, cursor: Cursor) -> list[RunEvent]:
    """The events a cursor taken inside a read had not reached yet: those its read's snapshot
    (`top`) sees and its base does not, after id `last`, in id order. All of them committed
    before `top` was taken, so any snapshot now sees them."""
    assert cursor.top is not None
    result = await conn.execute(
        """
        SELECT e.id, e.job_id, e.run_id, e.state, e.attempt, e.scheduled_at, e.created_at,
               e.finished_at, e.trigger, e.reason
        FROM run_events e
        WHERE e.job_id = %(job)s AND e.xid >= pg_snapshot_xmin(%(base)s::pg_snapshot)
          AND NOT pg_visible_in_snapshot(e.xid, %(base)s::pg_snapshot)
          AND pg_visible_in_snapshot(e.xid, %(top)s::pg_snapshot)
          AND e.id > %(last)s
        ORDER BY e.id
        """,
        {"job": job_id, "base": str(cursor.base), "top": str(cursor.top), "last": cursor.last},
    )
    return [_event(row) for row in await result.fetchall()]


async def horizon(conn: Connection) -> tuple[int, int]:
    """(the xid below which events have been pruned, the current snapshot's xmax): what
    decides whether a client's cursor can still be served."""
    cursor = await conn.execute(
        "SELECT coalesce((SELECT below FROM run_events_pruned), '0')::text AS below,"
        " pg_snapshot_xmax(pg_current_snapshot())::text AS xmax"
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["below"]), int(row["xmax"])


async def prune_bound(conn: Connection, *, before: datetime) -> int:
    """The xid below which every event may go: that of the oldest event written at or after
    `before`, and never past the oldest transaction still running (which may yet write
    events with its own, older, id). Recorded first, so a cursor that might miss a pruned
    event is refused from now on."""
    cursor = await conn.execute(
        """
        WITH bound AS (
            SELECT least(
                pg_snapshot_xmin(pg_current_snapshot()),
                (SELECT xid FROM run_events WHERE at >= %(before)s ORDER BY xid LIMIT 1)
            ) AS below
        )
        INSERT INTO run_events_pruned (singleton, below)
        SELECT true, below FROM bound
        ON CONFLICT (singleton)
        DO UPDATE SET below = greatest(run_events_pruned.below, EXCLUDED.below)
        RETURNING below::text
        """,
        {"before": before},
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["below"])


async def prune(conn: Connection, *, below: int, limit: int) -> int:
    """Deletes up to `limit` events of transactions below `below`, oldest first; returns how
    many."""
    cursor = await conn.execute(
        """
        DELETE FROM run_events WHERE (xid, id) IN (
            SELECT xid, id FROM run_events WHERE xid < %(below)s::text::xid8
            ORDER BY xid, id LIMIT %(limit)s)
        """,
        {"below": str(below), "limit": limit},
    )
    return cursor.rowcount
