"""One leaderboard resource: counting batches, answering windows, rolling up, forgetting.

PostgreSQL is the truth: a batch is committed there (counts and the buckets' versions, with
its batch id) before RecordEvents answers. Redis holds a copy of each bucket as a sorted set
(cases/leaderboard/cache.py) and answers FetchLeaderboard; a copy that is behind, or gone, is
reloaded from PostgreSQL before it is used, and when Redis cannot answer at all PostgreSQL
does, so every answer is exact.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis.exceptions

from hourglass.cases.leaderboard import buckets, metrics, store
from hourglass.cases.leaderboard.cache import Cache, Stale
from hourglass.cases.leaderboard.spec import Spec
from hourglass.clock import Clock
from hourglass.store import db

log = logging.getLogger(__name__)

# How long a process trusts its copy of the rollup marks. A stale copy is only slower (finer
# buckets are always complete), never wrong, since the marks only grow.
MARKS_TTL = 5.0
# Redis sets outlive their bucket's retention by this much, then expire on their own.
EXPIRE_SLACK = 86400
# How far ahead of the server's clock an event may be (clients' clocks drift): nothing is ever
# counted later than that, so a window's end is lowered to it.
MAX_AHEAD = 3600
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    event_type: str
    # (key, weight, unix seconds)
    events: list[tuple[str, int, int]]
    digest: bytes


@dataclass(frozen=True, slots=True)
class Recorded:
    recorded: int
    duplicate: bool


class Conflict(Exception):
    """A batch id already used for other events."""


@dataclass
class Answer:
    entries: list[tuple[str, int]]
    buckets: int
    start: int
    end: int
    source: str = "redis"


@dataclass
class Board:
    pool: db.Pool
    cache: Cache
    spec: Spec
    clock: Clock
    _types: dict[str, int] = field(default_factory=dict)
    _marks: tuple[float, dict[int, int]] = (0.0, {})

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def horizon(self) -> int:
        return buckets.horizon(self.now(), retention=self.spec.retention, sizes=self.spec.sizes)

    async def prepare(self) -> None:
        async with db.transaction(self.pool) as conn:
            await store.ensure_sizes(conn, self.spec.sizes[1:])

    async def _type(self, name: str) -> int | None:
        """The event type's id, None while no batch of it was recorded; cached once found
        (record creates a new type inside its batch's transaction)."""
        found = self._types.get(name)
        if found is None:
            async with self.pool.connection() as conn:
                found = await store.type_id(conn, name, create=False)
            if found is not None:
                self._types[name] = found
        return found

    # -- ingest ----------------------------------------------------------------------------

    async def record(self, batch: Batch) -> Recorded:
        now = self.clock.now()
        type_id = await self._type(batch.event_type)
        async with db.transaction(self.pool) as conn:
            await store.share_lock(conn)
            earlier = await store.claim_batch(
                conn,
                batch_id=batch.batch_id,
                digest=batch.digest,
                events=len(batch.events),
                now=now,
            )
            if earlier is not None:
                if earlier != batch.digest:
                    raise Conflict("batch_id: already used for a different batch of events")
                metrics.duplicates.inc()
                return Recorded(0, duplicate=True)
            if type_id is None:
                # A new event type is created in the batch's transaction, so a refused batch
                # leaves nothing behind; a concurrent first batch of it waits for this one.
                type_id = await store.type_id(conn, batch.event_type, create=True)
                assert type_id is not None
            marks = await store.rolled_until(conn)
            grouped = buckets.aggregate(batch.events, sizes=self.spec.sizes, rolled_until=marks)
            order = sorted(grouped)
            touched = await store.touch_buckets(
                conn,
                type_id=type_id,
                sizes=[size for size, _ in order],
                starts=[start for _, start in order],
            )
            ids: list[int] = []
            keys: list[str] = []
            counts: list[int] = []
            changes = []
            for bucket_id, size, start, version in touched:
                added = grouped[(size, start)]
                ids += [bucket_id] * len(added)
                keys += added.keys()
                counts += added.values()
                changes.append((bucket_id, version, self._expire_in(size, start), added))
            await store.add_counts(conn, bucket_ids=ids, keys=keys, counts=counts)
        self._types[batch.event_type] = type_id  # committed: safe to remember
        metrics.events.labels("recorded").inc(len(batch.events))
        metrics.rows.inc(len(ids))
        # Committed: the batch is acknowledged whatever Redis does now. A set that misses
        # this change is behind its bucket's version and is reloaded when next read.
        try:
            stale = await self.cache.apply(changes)
            if stale:
                metrics.stale.labels("apply").inc(stale)
        except REDIS_ERRORS as exc:
            metrics.redis_errors.inc()
            log.warning("redis missed a batch (%s); its buckets reload when read", exc)
        return Recorded(len(batch.events), duplicate=False)

    def _expire_in(self, size: int, start: int) -> int:
        """Seconds a Redis copy of the bucket lives: until it is past the retention, and a
        day more. Relative (EXPIRE, not EXPIREAT), so that it follows this server's clock."""
        until = start + size + self.spec.retention + self.spec.sizes[-1] + EXPIRE_SLACK
        return max(until - self.now(), EXPIRE_SLACK)

    # -- queries ---------------------------------------------------------------------------

    async def marks(self) -> dict[int, int]:
        fetched_at, marks = self._marks
        if time.monotonic() - fetched_at > MARKS_TTL:
            async with self.pool.connection() as conn:
                marks = await store.rolled_until(conn)
            self._marks = (time.monotonic(), marks)
        return marks

    async def fetch(self, event_type: str, *, k: int, start: int, end: int) -> Answer:
        """The exact top k of [start, end); start is raised to the retention horizon, end
        lowered to the latest instant an event may have (an hour ahead)."""
        start = max(start, self.horizon())
        smallest = self.spec.smallest
        end = min(end, -(-(self.now() + MAX_AHEAD) // smallest) * smallest)
        if start >= end:
            return Answer([], 0, start, end, "empty")
        pieces = buckets.decompose(
            start, end, sizes=self.spec.sizes, rolled_until=await self.marks()
        )
        metrics.fetch_buckets.observe(len(pieces))
        type_id = await self._type(event_type)
        if type_id is None:
            return Answer([], len(pieces), start, end, "empty")
        async with self.pool.connection() as conn:
            found = await store.find_buckets(
                conn,
                type_id=type_id,
                sizes=[size for size, _ in pieces],
                starts=[at for _, at in pieces],
            )
        wanted = [(bucket_id, version) for bucket_id, _, _, version in found]
        for _ in range(3):
            try:
                entries, _rounds, _evaluated = await self.cache.top(wanted, k=k)
                return Answer(entries, len(pieces), start, end, "redis")
            except Stale as stale:
                metrics.stale.labels("fetch").inc(len(stale.indexes))
                try:
                    await self.load([wanted[i][0] for i in stale.indexes])
                except REDIS_ERRORS as exc:
                    log.warning("redis unavailable (%s); answering from PostgreSQL", exc)
                    break
                # A bucket may have moved on meanwhile: ask PostgreSQL for the versions again.
                async with self.pool.connection() as conn:
                    found = await store.find_buckets(
                        conn,
                        type_id=type_id,
                        sizes=[size for size, _ in pieces],
                        starts=[at for _, at in pieces],
                    )
                wanted = [(bucket_id, version) for bucket_id, _, _, version in found]
            except REDIS_ERRORS as exc:
                metrics.redis_errors.inc()
                log.warning("redis unavailable (%s); answering from PostgreSQL", exc)
                break
        metrics.fallbacks.inc()
        async with self.pool.connection() as conn:
            entries = await store.top(conn, bucket_ids=[i for i, _ in wanted], k=k)
        return Answer(entries, len(pieces), start, end, "postgres")

    async def load(self, bucket_ids: Sequence[int]) -> None:
        """Copies buckets from PostgreSQL into Redis, a few hundred at a time."""
        ids = list(bucket_ids)
        for at in range(0, len(ids), 200):
            async with self.pool.connection() as conn:
                contents = await store.bucket_contents(conn, ids[at : at + 200])
            for bucket_id, (size, start, version, counts) in contents.items():
                await self.cache.load(
                    bucket_id,
                    version=version,
                    expire_in=self._expire_in(size, start),
                    counts=counts,
                )
            metrics.loaded.inc(len(contents))

    # -- batch jobs ------------------------------------------------------------------------

    async def rollup(self) -> tuple[int, dict[int, int]]:
        """Builds every coarse bucket whose time has passed; returns (created, marks). The
        new buckets are copied into Redis at once, so the first query does not pay for it."""
        created: list[int] = []
        async with db.transaction(self.pool) as conn:
            await store.exclusive_lock(conn)
            marks = await store.rolled_until(conn)
            targets = buckets.rollup_targets(self.now(), sizes=self.spec.sizes, rolled_until=marks)
            sizes = self.spec.sizes
            for size, (since, until) in sorted(targets.items()):
                finer = sizes[sizes.index(size) - 1]
                created += await store.roll_up(
                    conn, size=size, finer=finer, since=since, until=until
                )
            marks = await store.rolled_until(conn)
        self._marks = (time.monotonic(), marks)
        metrics.rolled_up.inc(len(created))
        try:
            await self.load(created)
        except REDIS_ERRORS as exc:
            log.warning("could not copy rolled-up buckets to redis (%s); they load when read", exc)
        log.info("rolled up %d buckets", len(created), extra={"buckets_created": len(created)})
        return len(created), marks

    async def enforce_retention(self) -> tuple[int, int]:
        """Deletes what is older than the retention; returns (buckets deleted, horizon)."""
        horizon = self.horizon()
        batches_before = self.clock.now() - timedelta(seconds=self.spec.retention)
        async with db.transaction(self.pool) as conn:
            await store.exclusive_lock(conn)
            gone = await store.delete_before(conn, horizon=horizon, batches_before=batches_before)
        metrics.deleted.inc(len(gone))
        try:
            await self.cache.forget(gone)
        except REDIS_ERRORS as exc:  # the sets expire on their own
            log.warning("could not delete %d sets from redis (%s)", len(gone), exc)
        log.info("retention deleted %d buckets", len(gone), extra={"buckets_deleted": len(gone)})
        return len(gone), horizon


def digest(batch_id: str, event_type: str, events: Sequence[tuple[str, int, int]]) -> bytes:
    """What a batch id stands for: a retry must carry the same events."""
    h = hashlib.sha256(event_type.encode())
    for key, weight, instant in events:
        h.update(f"\0{key}\0{weight}\0{instant}".encode())
    return h.digest()


def to_unix(instant: datetime) -> int:
    return int(instant.timestamp())


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
