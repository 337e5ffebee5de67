"""The batch work, run by the resource's ScheduledJobs through the server's admin RPCs:

- compaction: each partition's small files (one per consumer turn) become one, with the
  duplicate points dropped, and its 1-minute rollup rebuilt from those exact points;
- downsampling: 5-minute and 1-hour rollups of complete hours, from the 1-minute files;
- retention: files older than the retention (raw and 1m) or the rollup retention (5m, 1h).

Each replaces files in ONE transaction that names the files it read (store.register):
a job racing another, or a consumer adding a file meanwhile, never loses a point; the loser
of a race changes nothing. Objects are deleted only after the catalogue forgot them, and a
reader that finds one gone reads the catalogue again (query.fetch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from hourglass.cases.metrics import columns, store
from hourglass.cases.metrics.consumer import Consumer
from hourglass.cases.metrics.files import Files, Partition
from hourglass.store import db

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
ENTRY_MEMORY_S = 86_400  # how long applied broker entry ids are remembered


@dataclass
class Outcome:
    partitions: int = 0
    files: int = 0
    rows_dropped: int = 0


async def _read_all(files: Files, segments: Sequence[store.Segment]) -> list[pa.Table]:
    out = []
    for s in segments:
        body = await files.get(Partition(s.kind, s.resolution, s.hour, s.shard), s.digest)
        out.append(await asyncio.to_thread(columns.decode, body))
    return out


async def _replace(
    pool: db.Pool, files: Files, old: Sequence[store.Segment], new: Sequence[store.Segment]
) -> bool:
    try:
        async with db.transaction(pool) as conn:
            await store.register(conn, add=new, remove=[s.id for s in old])
    except store.Conflict as exc:
        log.info("metrics: %s; leaving it to the other", exc)
        return False
    keep = {s.digest for s in new}
    for s in old:
        if s.digest not in keep:
            await files.delete(Partition(s.kind, s.resolution, s.hour, s.shard), s.digest)
    return True


async def compact(pool: db.Pool, files: Files, writer: Consumer) -> Outcome:
    outcome = Outcome()
    async with pool.connection() as conn:
        crowded = await store.crowded(conn)
    for kind, hour, shard in crowded:
        async with pool.connection() as conn:
            found = await store.segments(
                conn, kinds=(kind, "rollups"), first_hour=hour, last_hour=hour, shards=[shard]
            )
        raw = [s for s in found if s.kind == kind and s.resolution == 0]
        minute = [s for s in found if kind == "points" and s.resolution == 60]
        if len(raw) < 2:
            continue
        tables = await _read_all(files, raw)
        merged = await asyncio.to_thread(columns.unique, columns.concat(tables, kind), kind)
        new = [await writer.put(merged, kind, 0, hour, shard)]
        if kind == "points":
            minutes = await asyncio.to_thread(columns.rollup, merged, 60_000)
            new.append(await writer.put(minutes, "rollups", 60, hour, shard))
        if await _replace(pool, files, [*raw, *minute], new):
            outcome.partitions += 1
            outcome.files += len(raw)
            outcome.rows_dropped += sum(s.rows for s in raw) - merged.num_rows
    return outcome


async def downsample(pool: db.Pool, files: Files, writer: Consumer, *, now_ms: int) -> int:
    """Rollups written. Only complete hours: the current one still grows."""
    written = 0
    current = now_ms - now_ms % HOUR_MS
    for level in (300, 3600):
        async with pool.connection() as conn:
            stale = await store.stale_rollups(conn, resolution=level, before_hour=current)
        for hour, shard in stale:
            async with pool.connection() as conn:
                found = await store.segments(
                    conn, kinds=("rollups",), first_hour=hour, last_hour=hour, shards=[shard]
                )
            minute = [s for s in found if s.resolution == 60]
            old = [s for s in found if s.resolution == level]
            async with pool.connection() as conn:
                raw = await store.segments(
                    conn, kinds=("points",), first_hour=hour, last_hour=hour, shards=[shard]
                )
            if not minute or len(raw) > 1:  # not compacted yet: its 1m files may overlap
                continue
            table = columns.concat(await _read_all(files, minute), "rollups")
            rolled = await asyncio.to_thread(columns.rollup, table, level * 1000)
            covers = max(s.id for s in minute)
            new = await writer.put(rolled, "rollups", level, hour, shard, covers=covers)
            if await _replace(pool, files, old, [new]):
                written += 1
    return written


async def retention(
    pool: db.Pool, files: Files, *, now_ms: int, retention_s: int, rollup_retention_s: int
) -> tuple[int, int]:
    """(files deleted, series forgotten)."""
    async with pool.connection() as conn:
        old = await store.expired(
            conn,
            raw_before=now_ms - retention_s * 1000,
            rollups_before=now_ms - rollup_retention_s * 1000,
        )
    deleted = len(old) if old and await _replace(pool, files, old, []) else 0
    async with pool.connection() as conn:
        forgotten = await store.forget(
            conn,
            entries_before_s=now_ms / 1000 - ENTRY_MEMORY_S,
            series_before_s=now_ms / 1000 - rollup_retention_s,
        )
    return deleted, forgotten
