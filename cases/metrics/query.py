"""Reads: the series a selector picks (the label index in PostgreSQL), then their files
(the catalogue names the partitions: only the hours of the range, only the shards of those
series), each read with the series and the range pushed down into Parquet's statistics.

- step 0: raw points, one per (series, timestamp): duplicates are collapsed here too, for the
  files the compaction job has not merged yet;
- a step (a multiple of a minute): per partition the coarsest rollup that divides the step
  and is up to date with its 1-minute files (else the 1-minute files, always there), merged
  into one bucket per step: average, min, max and count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from hourglass import artifacts
from hourglass.cases import Invalid
from hourglass.cases.metrics import columns, selectors, store
from hourglass.cases.metrics.files import Files, Partition
from hourglass.store import db

HOUR_MS = 3_600_000
MAX_SERIES = 10_000
MAX_POINTS = 5_000_000
MAX_LOG_LINES = 5_000
LEVELS = (3600, 300, 60)


@dataclass
class Dataset:
    series_id: int
    labels: dict[str, str]
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)


def check_range(start: int, end: int, step: int, *, unit: str = "ms") -> None:
    if start < 0 or end < 0:
        raise Invalid(f"start_{unit}", "must not be negative")
    if end < start:
        raise Invalid(f"end_{unit}", f"{end} is before start_{unit} {start}")
    if step < 0 or step % 60_000:
        raise Invalid("step_ms", f"{step} is not 0 (raw) or a whole number of minutes in ms")
    if step and (end - start) // step > 100_000:
        raise Invalid("step_ms", "more than 100,000 steps in the range; take a larger step")


async def pick(
    pool: db.Pool, kind: str, selector: str, series_id: int
) -> list[tuple[int, dict[str, str]]]:
    async with pool.connection() as conn:
        if series_id:
            found = await store.labels_of(conn, [series_id])
            return [(sid, labels) for sid, labels in found.items()]
        matchers = selectors.parse(selector)
        picked = await store.select_series(conn, kind, matchers, limit=MAX_SERIES)
    if len(picked) > MAX_SERIES:
        raise Invalid("selector", f"picks more than {MAX_SERIES} series; narrow it")
    return picked


def _read(readers: Sequence[columns.Reader], ids: list[int], start: int, end: int) -> pa.Table:
    return pa.concat_tables([r.read(series=ids, start=start, end=end) for r in readers])


async def _tables(
    files: Files, wanted: Sequence[store.Segment], ids: list[int], start: int, end: int
) -> list[pa.Table]:
    readers = []
    for segment in wanted:
        partition = Partition(segment.kind, segment.resolution, segment.hour, segment.shard)
        readers.append(await files.reader(partition, segment.digest))
    if not readers:
        return []
    return [await asyncio.to_thread(_read, readers, ids, start, end)]


def _overlapping(segments: Sequence[store.Segment]) -> bool:
    """Whether two of these files share a partition (so may hold the same point): files of
    different partitions never do, and compaction leaves one file per partition."""
    seen = {(s.kind, s.resolution, s.hour, s.shard) for s in segments}
    return len(seen) < len(segments)


def _choose(
    segments: Sequence[store.Segment], step_s: int
) -> tuple[list[store.Segment], list[store.Segment], int]:
    """Per partition, the coarsest up-to-date rollup dividing the step; or, for a partition
    of several raw files (not compacted yet: a point a sender sent twice may be in two of
    them, and counted twice in their 1m rollups), its raw files. (rollup files, raw files,
    the finest resolution used)."""
    by_part: dict[tuple[int, int], list[store.Segment]] = {}
    for segment in segments:
        by_part.setdefault((segment.hour, segment.shard), []).append(segment)
    chosen: list[store.Segment] = []
    raw: list[store.Segment] = []
    finest = LEVELS[0]
    for part in by_part.values():
        points = [s for s in part if s.kind == "points"]
        if len(points) > 1:
            raw += points
            finest = 60
            continue
        minute = [s for s in part if s.resolution == 60]
        newest = max((s.id for s in minute), default=0)
        for level in LEVELS:
            if step_s % level:
                continue
            files = [s for s in part if s.kind == "rollups" and s.resolution == level]
            if level == 60 or (files and max(s.covers for s in files) >= newest):
                chosen += files
                finest = min(finest, level)
                break
    return chosen, raw, finest


async def fetch(
    pool: db.Pool,
    files: Files,
    *,
    picked: list[tuple[int, dict[str, str]]],
    start: int,
    end: int,
    step: int,
    shards: int,
) -> tuple[list[Dataset], int]:
    """The datasets of the picked series, and the resolution (seconds, 0 for raw)."""
    if not picked:
        return [], 0
    ids = [sid for sid, _ in picked]
    first, last = start - start % HOUR_MS, end - end % HOUR_MS
    if step:
        first -= HOUR_MS  # a bucket of a step > 1h may start in an earlier hour
    kinds = ("rollups", "points") if step else ("points",)
    for attempt in range(3):  # a file compacted away between the catalogue and the read
        async with pool.connection() as conn:
            found = await store.segments(
                conn, kinds=kinds, first_hour=first, last_hour=last,
                shards=sorted({sid % shards for sid in ids}),
            )  # fmt: skip
        resolution = 0
        raw: list[store.Segment] = []
        if step:
            found, raw, resolution = _choose(found, step // 1000)
        try:
            low = start - start % step if step else start
            tables = await _tables(files, found, ids, low, end)
            raw_tables = await _tables(files, raw, ids, low, end)
            break
        except artifacts.ArtifactNotFound:
            if attempt == 2:
                raise
    kind = "rollups" if step else "points"
    table = columns.concat(tables, kind)
    if table.num_rows > MAX_POINTS:
        raise Invalid("end_ms", "the range holds more than 5,000,000 points; narrow it")
    if step:
        if raw_tables:
            fresh = columns.unique(columns.concat(raw_tables, "points"), "points")
            table = columns.concat([table, columns.rollup(fresh, 60_000)], "rollups")
        table = await asyncio.to_thread(columns.rollup, table, step)
    elif _overlapping(found):
        table = await asyncio.to_thread(columns.unique, table, "points")
    elif len({s.hour for s in found}) > 1:  # one file per partition: no duplicates
        table = await asyncio.to_thread(
            table.sort_by, [("series", "ascending"), ("ts", "ascending")]
        )
    # else: one hour, one file per shard: a series' rows are already together, in time order
    return _split(table, dict(picked), step), resolution


def _split(table: pa.Table, labels: dict[int, dict[str, str]], step: int) -> list[Dataset]:
    """The table (each series' rows together, in time order) cut into one dataset per series."""
    out: dict[int, Dataset] = {sid: Dataset(sid, found) for sid, found in labels.items()}
    if table.num_rows:
        counts = pc.value_counts(table["series"])
        sids = counts.field("values").to_pylist()
        sizes = counts.field("counts").to_pylist()
        columns_ = {
            name: table[name].to_pylist() for name in table.column_names if name != "series"
        }
        position = 0
        for sid, n in zip(sids, sizes, strict=True):  # in table order: by series
            ds = out[sid]
            window = slice(position, position + n)
            ds.timestamps = columns_["ts"][window]
            if step:
                sums, cnt = columns_["sum"][window], columns_["count"][window]
                ds.values = [total / c for total, c in zip(sums, cnt, strict=True)]
                ds.min, ds.max, ds.count = columns_["min"][window], columns_["max"][window], cnt
            else:
                ds.values = columns_["value"][window]
            position += n
    return [out[sid] for sid in sorted(out)]


async def fetch_logs(
    pool: db.Pool,
    files: Files,
    *,
    picked: list[tuple[int, dict[str, str]]],
    start_ns: int,
    end_ns: int,
    limit: int,
    shards: int,
) -> list[tuple[int, dict[str, str], list[int], list[str]]]:
    if not picked:
        return []
    ids = [sid for sid, _ in picked]
    first = start_ns // 1_000_000
    last = end_ns // 1_000_000
    for attempt in range(3):
        async with pool.connection() as conn:
            found = await store.segments(
                conn, kinds=("logs",), first_hour=first - first % HOUR_MS,
                last_hour=last - last % HOUR_MS, shards=sorted({sid % shards for sid in ids}),
            )  # fmt: skip
        try:
            tables = await _tables(files, found, ids, start_ns, end_ns)
            break
        except artifacts.ArtifactNotFound:
            if attempt == 2:
                raise
    table = columns.unique(columns.concat(tables, "logs"), "logs")
    table = table.sort_by([("ts", "ascending"), ("series", "ascending")]).slice(0, limit)
    table = table.sort_by([("series", "ascending"), ("ts", "ascending")])
    data = table.to_pydict()
    labels = dict(picked)
    out: dict[int, tuple[int, dict[str, str], list[int], list[str]]] = {}
    for sid, at, line in zip(data["series"], data["ts"], data["line"], strict=True):
        got = out.setdefault(sid, (sid, labels[sid], [], []))
        got[2].append(at)
        got[3].append(line)
    return [out[sid] for sid in sorted(out)]
