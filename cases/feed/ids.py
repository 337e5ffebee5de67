"""Snowflake post ids (pure): 41 bits of milliseconds since EPOCH_MS, 10 bits of worker id,
12 bits of sequence. Ids sort by creation time, which is what makes a cursor (the last id a
page showed) stable while new posts arrive, and lets a timeline be a sorted set of ids.

Two servers never share a worker id (workerid.py leases it from etcd), so their ids never
collide. Within one worker id, an id is never issued twice, even when the clock steps back:

- **Borrow.** When the clock reads the same or an earlier millisecond than the last id's,
  the generator keeps the last millisecond and takes the next sequence number; when those
  4096 run out it borrows the next millisecond. Ids stay strictly increasing.
- **Wait.** It borrows at most MAX_BORROW_MS ahead of the clock: beyond that, `next_id`
  raises Wait with the milliseconds to wait (a clock stepped far back stalls writes for that
  long rather than issuing ids far in the future).
- **Reserve.** Ids are issued only below a ceiling the server has first written to etcd
  (`reserve`, then `extend` once written). A server that takes the worker id over later
  starts above that ceiling, so a restart (or a second server after a lease expired) never
  repeats an id its predecessor gave out, whatever either clock says.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIME = (1 << 41) - 1
# How far ahead of the clock ids may be borrowed, and reserved in etcd at a time.
MAX_BORROW_MS = 3_000
RESERVE_MS = 2_000


class Wait(Exception):
    """No id can be issued now: wait `ms` milliseconds (the clock is far behind the last
    id, or the reservation in etcd has not been extended)."""

    def __init__(self, ms: int, why: str) -> None:
        super().__init__(f"wait {ms} ms: {why}")
        self.ms = ms


def compose(ms: int, worker: int, sequence: int) -> int:
    """The id of (milliseconds since EPOCH_MS, worker, sequence)."""
    return (ms << (WORKER_BITS + SEQUENCE_BITS)) | (worker << SEQUENCE_BITS) | sequence


def parts(post_id: int) -> tuple[int, int, int]:
    """(milliseconds since EPOCH_MS, worker, sequence) of an id."""
    return (
        post_id >> (WORKER_BITS + SEQUENCE_BITS),
        (post_id >> SEQUENCE_BITS) & MAX_WORKER,
        post_id & MAX_SEQUENCE,
    )


def unix_ms(post_id: int) -> int:
    """When the id was made, in Unix milliseconds."""
    return parts(post_id)[0] + EPOCH_MS


def created_at(post_id: int) -> datetime:
    return datetime.fromtimestamp(unix_ms(post_id) / 1000, UTC)


def first_id_at(unix_millis: int) -> int:
    """The smallest id made at or after `unix_millis`: ids below it are older."""
    return compose(max(0, unix_millis - EPOCH_MS), 0, 0)


class Snowflake:
    """The id generator of one worker id. `floor` is the last ceiling a previous holder of
    this worker id reserved (milliseconds since EPOCH_MS): every id it issues lies above."""

    def __init__(self, worker: int, *, floor: int = 0) -> None:
        if not 0 <= worker <= MAX_WORKER:
            raise ValueError(f"worker id {worker} is outside [0, {MAX_WORKER}]")
        self.worker = worker
        self.last = floor
        self.sequence = MAX_SEQUENCE  # the floor's millisecond is spent: start above it
        self.ceiling = floor

    def next_id(self, now_unix_ms: int) -> int:
        """A new id, larger than every id this generator (and the floor) gave; Wait when
        the clock is more than MAX_BORROW_MS behind, or the reservation runs out."""
        now = now_unix_ms - EPOCH_MS
        if now > self.last:
            ms, sequence = now, 0
        elif self.sequence < MAX_SEQUENCE:
            ms, sequence = self.last, self.sequence + 1
        else:
            ms, sequence = self.last + 1, 0
        if ms - now > MAX_BORROW_MS:
            raise Wait(ms - now - MAX_BORROW_MS, "the clock is behind the last id")
        if ms >= self.ceiling:
            raise Wait(max(1, ms - self.ceiling + 1), "the etcd reservation is not extended")
        if ms > MAX_TIME:
            raise OverflowError("Snowflake ids ran out of time bits")
        self.last, self.sequence = ms, sequence
        return compose(ms, self.worker, sequence)

    def reserve(self, now_unix_ms: int) -> int:
        """The ceiling to write to etcd next: RESERVE_MS ahead of the clock or of the last id,
        whichever is later. Call `extend` with it once it is written."""
        return max(self.last, now_unix_ms - EPOCH_MS, self.ceiling) + RESERVE_MS

    def extend(self, ceiling: int) -> None:
        self.ceiling = max(self.ceiling, ceiling)

    def revoke(self) -> None:
        """The worker id's lease is lost: issue nothing more (another server may take it)."""
        self.ceiling = -1
