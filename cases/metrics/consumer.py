"""Stream processing: broker entries -> column files (raw points, live 1-minute rollups, log
lines), registered in PostgreSQL with the entry ids, then acknowledged.

One turn reads up to READ_COUNT entries (first those claimed from a stopped consumer), drops
the ones already applied, resolves each series' id in the label index (a cache in front of
one INSERT ... ON CONFLICT for the new ones), and writes one points file and one 1-minute
rollup file per partition (hour x series shard) that the turn touched. The rollup of each
turn is partial; partials merge exactly (min of mins, sums of sums), so the query merges
them, and the compaction job rewrites them as one from the deduplicated points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from redis.exceptions import RedisError

from hourglass.cases.metrics import columns, metrics, store, validation
from hourglass.cases.metrics.broker import Broker, entry_ms
from hourglass.cases.metrics.files import Files, Partition
from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.store import db

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MAX_CACHE = 1_000_000
ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, *store.UNAVAILABLE_ERRORS)


class SeriesIds:
    """Label set -> series id, cached: the label index is asked only about new series."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool
        self.known: dict[tuple[str, str], int] = {}

    async def resolve(self, kind: str, keyed: dict[str, validation.Labels]) -> dict[str, int]:
        found = {k: self.known[(kind, k)] for k in keyed if (kind, k) in self.known}
        missing = [(k, dict(labels)) for k, labels in keyed.items() if k not in found]
        for _ in range(5):
            if not missing:
                break
            async with self.pool.connection() as conn:
                got = await store.series_ids(conn, kind, missing)
            found.update(got)
            missing = [(k, labels) for k, labels in missing if k not in got]
        if missing:
            raise store.Conflict(f"{len(missing)} series could not be added to the label index")
        if len(self.known) > MAX_CACHE:
            self.known.clear()
        self.known.update({(kind, k): v for k, v in found.items()})
        return found


def _key(labels: Any) -> tuple[str, validation.Labels]:
    pairs = tuple(sorted((label.name, label.value) for label in labels))
    return validation.canonical(pairs), pairs


class Consumer:
    def __init__(self, *, broker: Broker, pool: db.Pool, files: Files, shards: int) -> None:
        self.broker = broker
        self.pool = pool
        self.files = files
        self.shards = shards
        self.ids = SeriesIds(pool)

    async def turn(self, block_ms: int = 1000) -> int:
        """One read-write-register-acknowledge turn; the entries it applied."""
        entries = await self.broker.claim()
        if entries:
            metrics.redelivered.inc(len(entries))
        else:
            entries = await self.broker.read(block_ms)
        if not entries:
            metrics.backlog.set(await self.broker.backlog())
            return 0
        names = [name for name, _ in entries]
        applied_now = 0
        for _ in range(3):
            async with self.pool.connection() as conn:
                seen = await store.applied(conn, names)
            fresh = [(name, body) for name, body in entries if name not in seen]
            if not fresh:
                metrics.skipped.inc(len(seen))
                break
            segments = await self.write(fresh)
            try:
                async with db.transaction(self.pool) as conn:
                    await store.register(conn, add=segments, entries=[n for n, _ in fresh])
            except store.Conflict:  # another consumer applied some meanwhile: look again
                continue
            applied_now = len(fresh)
            break
        else:  # left pending: claimed again after claim_after
            return 0
        await self.broker.done(names)
        metrics.ingest_lag.set(max(0.0, time.time() - entry_ms(names[-1]) / 1000))
        metrics.backlog.set(await self.broker.backlog())
        return applied_now

    async def write(self, entries: list[tuple[str, bytes]]) -> list[store.Segment]:
        points: dict[str, tuple[validation.Labels, list[list[int]], list[list[float]]]] = {}
        logs: dict[str, tuple[validation.Labels, list[list[int]], list[list[str]]]] = {}
        for _, body in entries:
            batch = pb.Batch.FromString(body)
            for series in batch.series:
                key, labels = _key(series.labels)
                slot = points.setdefault(key, (labels, [], []))
                slot[1].append(list(series.timestamps_ms))
                slot[2].append(list(series.values))
            for stream in batch.streams:
                key, labels = _key(stream.labels)
                got = logs.setdefault(key, (labels, [], []))
                got[1].append(list(stream.timestamps_ns))
                got[2].append(list(stream.lines))
        made: list[store.Segment] = []
        if points:
            table = await self._table("points", points)
            made += await self._files(table, "points")
            metrics.applied.labels("points").inc(table.num_rows)
        if logs:
            table = await self._table("logs", logs)
            made += await self._files(table, "logs")
            metrics.applied.labels("logs").inc(table.num_rows)
        return made

    async def _table(self, kind: str, grouped: dict[str, Any]) -> pa.Table:
        ids = await self.ids.resolve(kind, {k: v[0] for k, v in grouped.items()})
        sids: list[int] = []
        stamps: list[int] = []
        values: list[Any] = []
        for key, (_, times, vals) in grouped.items():
            sid = ids[key]
            for chunk_t, chunk_v in zip(times, vals, strict=True):
                sids.extend([sid] * len(chunk_t))
                stamps.extend(chunk_t)
                values.extend(chunk_v)
        made = columns.points if kind == "points" else columns.logs
        # A point sent twice within one turn is written once: one file holds no duplicates.
        return await asyncio.to_thread(columns.unique, made(sids, stamps, values), kind)

    async def _files(self, table: pa.Table, kind: str) -> list[store.Segment]:
        """One file per partition the table touches (and a 1m rollup beside each points file)."""
        ms = table["ts"] if kind == "points" else pc.divide(table["ts"], 1_000_000)
        hour = pc.subtract(ms, pc.remainder(ms, HOUR_MS))
        shard = pc.remainder(table["series"], self.shards)
        key = pc.add(pc.multiply(hour, 1024), shard)
        made: list[store.Segment] = []
        parts = defaultdict(list)
        for value in pc.unique(key).to_pylist():
            parts[(value // 1024, value % 1024)].append(value)
        for (hour_ms, shard_no), _ in sorted(parts.items()):
            rows = table.filter(pc.equal(key, hour_ms * 1024 + shard_no))
            made.append(await self.put(rows, kind, 0, hour_ms, shard_no))
            if kind == "points":
                made.append(
                    await self.put(columns.rollup(rows, 60_000), "rollups", 60, hour_ms, shard_no)
                )
        metrics.files_written.labels("consumer").inc(len(made))
        return made

    async def put(
        self, table: pa.Table, kind: str, resolution: int, hour: int, shard: int, covers: int = 0
    ) -> store.Segment:
        body = await asyncio.to_thread(columns.encode, table, kind)
        partition = Partition(kind, resolution, hour, shard)
        digest = await self.files.put(partition, body)
        stamps = table["ts"]
        return store.Segment(
            kind=kind, resolution=resolution, hour=hour, shard=shard, digest=digest,
            rows=table.num_rows, bytes=len(body), min_ts=pc.min(stamps).as_py() or 0,
            max_ts=pc.max(stamps).as_py() or 0, covers=covers,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.broker.prepare()
                break
            except ERRORS as exc:
                log.warning("metrics: the broker is unavailable (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        while not stop.is_set():
            try:
                await self.turn()
            except ERRORS as exc:
                log.warning("metrics: consume failed (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                with contextlib.suppress(*ERRORS):
                    await self.broker.prepare()  # a Redis restarted without its file
