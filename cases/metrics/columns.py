"""Column files: Parquet written and read with pyarrow, one column chunk per column.

Three kinds of table, each sorted by (series, ts):
- points: series (int64, dictionary/RLE: sorted ids repeat), ts (unix ms, DELTA_BINARY_PACKED:
  a regular scrape interval packs to a few bits per point), value (float64,
  BYTE_STREAM_SPLIT: the bytes of similar floats line up, so zstd finds the runs);
- rollups (one row per series and bucket): min, max, sum (float64), count (int64);
- logs: series, ts (unix ns), line (string).

Everything here is pure (bytes in, bytes or tables out), so the encodings, the rollups and
the dropping of duplicate points have unit tests of their own. pyarrow does the work in C++:
the consumer and the jobs never loop over points in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

POINTS = pa.schema([("series", pa.int64()), ("ts", pa.int64()), ("value", pa.float64())])
ROLLUPS = pa.schema(
    [
        ("series", pa.int64()),
        ("ts", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("sum", pa.float64()),
        ("count", pa.int64()),
    ]
)
LOGS = pa.schema([("series", pa.int64()), ("ts", pa.int64()), ("line", pa.string())])
SCHEMAS = {"points": POINTS, "rollups": ROLLUPS, "logs": LOGS}
_ENCODINGS = {
    "points": {"ts": "DELTA_BINARY_PACKED", "value": "BYTE_STREAM_SPLIT"},
    "rollups": {
        "ts": "DELTA_BINARY_PACKED",
        "min": "BYTE_STREAM_SPLIT",
        "max": "BYTE_STREAM_SPLIT",
        "sum": "BYTE_STREAM_SPLIT",
        "count": "DELTA_BINARY_PACKED",
    },
    "logs": {"ts": "DELTA_BINARY_PACKED"},
}
_DICTIONARY = {"points": ["series"], "rollups": ["series"], "logs": ["series", "line"]}
# Set in a points file whose values are all short decimals (as most gauges are: 47.29, 1024):
# they are stored as int64 mantissas of that many decimal places, delta-encoded, as
# VictoriaMetrics stores values. Decoding divides by 10**scale, which gives back exactly the
# double that was sent: encode checks that before choosing it.
SCALE_KEY = b"hourglass.value_scale"
MAX_SCALE = 6
ROW_GROUP = 16_384  # rows: a read of a few series skips the other groups by their statistics


def decimal_scale(values: pa.ChunkedArray | pa.Array) -> int | None:
    """The fewest decimal places that hold every value exactly (None: not short decimals)."""
    if len(values) == 0:
        return None
    for scale in range(MAX_SCALE + 1):
        factor = 10.0**scale
        rounded = pc.round(pc.multiply(values, factor))
        if (pc.max(pc.abs(rounded)).as_py() or 0) >= 2**53:
            return None
        if pc.all(pc.equal(pc.divide(rounded, factor), values)).as_py():
            return scale
    return None


def encode(table: pa.Table, kind: str) -> bytes:
    """The table as one Parquet file, sorted by (series, ts), zstd-compressed."""
    table = table.sort_by([("series", "ascending"), ("ts", "ascending")])
    encodings = dict(_ENCODINGS[kind])
    if kind == "points":
        scale = decimal_scale(table["value"])
        if scale is not None:
            mantissas = pc.cast(pc.round(pc.multiply(table["value"], 10.0**scale)), pa.int64())
            table = table.set_column(2, "value", mantissas)
            table = table.replace_schema_metadata({SCALE_KEY: str(scale).encode()})
            encodings["value"] = "DELTA_BINARY_PACKED"
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=_DICTIONARY[kind],
        column_encoding=encodings,
        row_group_size=ROW_GROUP,
        write_statistics=["series", "ts"],
        data_page_version="2.0",
    )
    return bytes(sink.getvalue().to_pybytes())


def restore(table: pa.Table, metadata: dict[bytes, bytes] | None) -> pa.Table:
    """Values stored as decimal mantissas back to the doubles that were sent."""
    scale = (metadata or {}).get(SCALE_KEY)
    if scale is None or "value" not in table.column_names:
        return table
    values = pc.divide(pc.cast(table["value"], pa.float64()), 10.0 ** int(scale))
    return table.set_column(table.column_names.index("value"), "value", values)


def decode(
    body: bytes,
    *,
    series: Sequence[int] | None = None,
    start: int | None = None,
    end: int | None = None,
) -> pa.Table:
    """The rows of a file, only of `series` (when given) and with start <= ts <= end. The
    filter is pushed down: row groups whose statistics rule them out are not read."""
    filters: list[tuple[str, str, object]] = []
    if series is not None:
        filters.append(("series", "in", list(series)))
    if start is not None:
        filters.append(("ts", ">=", start))
    if end is not None:
        filters.append(("ts", "<=", end))
    table = pq.read_table(pa.BufferReader(body), filters=filters or None)
    return restore(table, table.schema.metadata)


class Reader:
    """One file, its footer parsed once, with each row group's (series, ts) bounds: a read
    decodes only the row groups that may hold what it asks for. Files never change, so a
    server keeps Readers as long as it keeps the bytes."""

    def __init__(self, body: bytes) -> None:
        self.file = pq.ParquetFile(pa.BufferReader(body))
        meta = self.file.metadata
        self.metadata = self.file.schema_arrow.metadata
        self.bounds: list[tuple[int, int, int, int]] = []
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            s, t = group.column(0).statistics, group.column(1).statistics
            self.bounds.append((s.min, s.max, t.min, t.max))

    def read(self, *, series: Sequence[int], start: int, end: int) -> pa.Table:
        low, high = min(series), max(series)
        wanted = [
            i
            for i, (s_min, s_max, t_min, t_max) in enumerate(self.bounds)
            if s_max >= low and s_min <= high and t_max >= start and t_min <= end
        ]
        table = restore(self.file.read_row_groups(wanted), self.metadata)
        if table.num_rows == 0:
            return table
        ts = table["ts"]
        mask = pc.and_(pc.greater_equal(ts, start), pc.less_equal(ts, end))
        if len(series) > 1 or low != high:
            mask = pc.and_(mask, pc.is_in(table["series"], value_set=pa.array(series, pa.int64())))
        else:
            mask = pc.and_(mask, pc.equal(table["series"], low))
        return table.filter(mask)


def points(series: Sequence[int], ts: Sequence[int], values: Sequence[float]) -> pa.Table:
    return pa.table(
        [pa.array(series, pa.int64()), pa.array(ts, pa.int64()), pa.array(values, pa.float64())],
        schema=POINTS,
    )


def logs(series: Sequence[int], ts: Sequence[int], lines: Sequence[str]) -> pa.Table:
    return pa.table(
        [pa.array(series, pa.int64()), pa.array(ts, pa.int64()), pa.array(lines, pa.string())],
        schema=LOGS,
    )


def unique(table: pa.Table, kind: str) -> pa.Table:
    """One row per (series, ts) -- per (series, ts, line) for logs -- sorted: the same point
    sent twice (a retried batch, a redelivered broker entry) is stored once. Of two points
    with the same timestamp but different values, the one read last stays."""
    if table.num_rows == 0:
        return table
    keys = ["series", "ts", "line"] if kind == "logs" else ["series", "ts"]
    if kind == "logs":
        kept = table.group_by(keys, use_threads=False).aggregate([])
    else:
        kept = table.group_by(keys, use_threads=False).aggregate([("value", "last")])
        kept = kept.rename_columns({"value_last": "value"})
    return kept.select(SCHEMAS[kind].names).sort_by([(k, "ascending") for k in keys])


def rollup(table: pa.Table, step_ms: int) -> pa.Table:
    """Points (or finer rollups) -> one row per series and aligned bucket of `step_ms`:
    min, max, sum and count, which merge exactly (rollups of rollups are rollups)."""
    if table.num_rows == 0:
        return ROLLUPS.empty_table()
    bucket = pc.subtract(table["ts"], pc.remainder(table["ts"], step_ms))
    work = table.set_column(1, "ts", bucket)
    if "value" in table.column_names:
        merged = work.group_by(["series", "ts"], use_threads=False).aggregate(
            [("value", "min"), ("value", "max"), ("value", "sum"), ("value", "count")]
        )
        names = {"value_min": "min", "value_max": "max", "value_sum": "sum", "value_count": "count"}
    else:
        merged = work.group_by(["series", "ts"], use_threads=False).aggregate(
            [("min", "min"), ("max", "max"), ("sum", "sum"), ("count", "sum")]
        )
        names = {"min_min": "min", "max_max": "max", "sum_sum": "sum", "count_sum": "count"}
    merged = merged.rename_columns(names)
    return merged.select(ROLLUPS.names).sort_by([("series", "ascending"), ("ts", "ascending")])


def concat(tables: Sequence[pa.Table], kind: str) -> pa.Table:
    if not tables:
        return SCHEMAS[kind].empty_table()
    return pa.concat_tables([t.select(SCHEMAS[kind].names) for t in tables])
