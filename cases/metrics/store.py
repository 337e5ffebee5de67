"""The MetricsPipeline's SQL, and nothing else: the label index (series, postings), the
catalogue of column files (segments) and the broker entries already applied. Every function
takes the connection, so the caller groups them into one transaction; the tables live in the
resource's own schema (the connection's search_path)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from hourglass.cases.metrics.selectors import Matcher
from hourglass.store import db

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)


class Conflict(Exception):
    """Another consumer or job got there first: the caller drops its work and moves on."""


async def open_pool(dsn: str, *, max_size: int = 8) -> db.Pool:
    return await db.open_pool(dsn, max_size=max_size)


async def series_ids(
    conn: db.Connection, kind: str, labelled: Sequence[tuple[str, dict[str, str]]]
) -> dict[str, int]:
    """The id of each (key, labels), adding the series (and its postings) that are new, in
    one statement. A key that a concurrent call is adding may be missing: ask again."""
    keys = [key for key, _ in labelled]
    spelled = [json.dumps(labels, sort_keys=True) for _, labels in labelled]
    rows = await (
        await conn.execute(
            "WITH new AS ("
            "  INSERT INTO series (kind, key, labels)"
            "  SELECT %(kind)s, k, l::jsonb FROM unnest(%(keys)s::text[], %(labels)s::text[])"
            "    AS u(k, l)"
            "  ON CONFLICT (kind, key) DO NOTHING RETURNING id, key, labels),"
            " posted AS ("
            "  INSERT INTO postings (name, value, series_id)"
            "  SELECT e.key, e.value, new.id FROM new, jsonb_each_text(new.labels) AS e)"
            " SELECT id, key FROM new"
            " UNION ALL SELECT id, key FROM series WHERE kind = %(kind)s AND key = ANY(%(keys)s)",
            {"kind": kind, "keys": keys, "labels": spelled},
        )
    ).fetchall()
    return {row["key"]: int(row["id"]) for row in rows}


def _condition(matcher: Matcher, index: int, params: dict[str, Any]) -> str:
    """SQL true for the series `matcher` picks; a label a series lacks counts as ""."""
    name, value = f"n{index}", f"v{index}"
    params[name] = matcher.name
    if matcher.op in ("=", "!="):
        params[value] = matcher.value
        test = f"p.value = %({value})s"
    else:
        params[value] = matcher.pattern
        test = f"p.value ~ %({value})s"
    # Only constants and parameter names go into the text; every value is a parameter.
    posting = f"SELECT 1 FROM postings p WHERE p.series_id = s.id AND p.name = %({name})s"  # noqa: S608
    has = f"EXISTS ({posting} AND {test})"
    hasnt = f"NOT EXISTS ({posting} AND {test})"
    any_other = f"EXISTS ({posting} AND NOT ({test}))"
    empty = matcher.matches_empty()
    if matcher.op in ("=", "=~"):
        # picks the series whose value matches, and (if "" matches) those without the label
        return f"NOT {any_other}" if empty else has
    # != and !~: every series except those whose value matches (absent: "" decides)
    return hasnt if empty else any_other


async def select_series(
    conn: db.Connection, kind: str, matchers: Sequence[Matcher], *, limit: int
) -> list[tuple[int, dict[str, str]]]:
    """(id, labels) of every series of `kind` that all matchers pick, by id; at most
    limit + 1 (the caller refuses more than `limit`). Candidates come from the postings of a
    matcher that needs a value (= or =~ not matching ""), the most selective first."""
    params: dict[str, Any] = {"kind": kind, "limit": limit + 1}
    conditions = [_condition(m, i, params) for i, m in enumerate(matchers)]
    anchor = next(
        (i for i, m in enumerate(matchers) if m.op == "=" and not m.matches_empty()),
        next(i for i, m in enumerate(matchers) if not m.matches_empty()),
    )
    first = matchers[anchor]
    test = "value = %(av)s" if first.op == "=" else "value ~ %(av)s"
    params["an"] = first.name
    params["av"] = first.value if first.op == "=" else first.pattern
    if first.op not in ("=", "=~"):
        source = "series s"
    else:
        source = (
            f"(SELECT DISTINCT series_id FROM postings WHERE name = %(an)s AND {test}) c"  # noqa: S608
            " JOIN series s ON s.id = c.series_id"
        )
    query = (
        f"SELECT s.id, s.labels FROM {source} WHERE s.kind = %(kind)s AND "  # noqa: S608
        + " AND ".join(conditions)
        + " ORDER BY s.id LIMIT %(limit)s"
    )
    rows = await (await conn.execute(query, params)).fetchall()
    return [(int(row["id"]), dict(row["labels"])) for row in rows]


async def labels_of(conn: db.Connection, ids: Sequence[int]) -> dict[int, dict[str, str]]:
    rows = await (
        await conn.execute("SELECT id, labels FROM series WHERE id = ANY(%s)", (list(ids),))
    ).fetchall()
    return {int(row["id"]): dict(row["labels"]) for row in rows}


async def label_names(conn: db.Connection) -> list[str]:
    rows = await (await conn.execute("SELECT DISTINCT name FROM postings ORDER BY 1")).fetchall()
    return [row["name"] for row in rows]


async def label_values(conn: db.Connection, name: str, *, limit: int) -> list[str]:
    rows = await (
        await conn.execute(
            "SELECT DISTINCT value FROM postings WHERE name = %s ORDER BY 1 LIMIT %s",
            (name, limit),
        )
    ).fetchall()
    return [row["value"] for row in rows]


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str
    resolution: int
    hour: int
    shard: int
    digest: str
    rows: int
    bytes: int
    min_ts: int
    max_ts: int
    covers: int = 0
    id: int = 0


_COLUMNS = (
    "kind", "resolution", "hour", "shard", "digest", "rows", "bytes", "min_ts", "max_ts", "covers"
)  # fmt: skip
_SELECT = (
    "SELECT id, kind, resolution, hour, shard, digest, rows, bytes, min_ts, max_ts, covers"
    " FROM segments"
)


def _segment(row: dict[str, Any]) -> Segment:
    return Segment(**{name: row[name] for name in ("id", *_COLUMNS)})


async def applied(conn: db.Connection, entry_ids: Sequence[str]) -> set[str]:
    rows = await (
        await conn.execute(
            "SELECT entry_id FROM applied_entries WHERE entry_id = ANY(%s)", (list(entry_ids),)
        )
    ).fetchall()
    return {row["entry_id"] for row in rows}


async def register(
    conn: db.Connection,
    *,
    add: Sequence[Segment],
    remove: Sequence[int] = (),
    entries: Sequence[str] = (),
) -> list[int]:
    """In the caller's transaction: marks `entries` applied, deletes the segments `remove`
    and inserts `add` (their new ids). Conflict if an entry was already applied or a segment
    to remove is already gone: then the caller rolls back, and nothing changed."""
    if entries:
        marked = await (
            await conn.execute(
                "INSERT INTO applied_entries (entry_id) SELECT unnest(%s::text[])"
                " ON CONFLICT DO NOTHING RETURNING entry_id",
                (list(entries),),
            )
        ).fetchall()
        if len(marked) != len(set(entries)):
            raise Conflict("broker entries already applied by another consumer")
    if remove:
        gone = await (
            await conn.execute(
                "DELETE FROM segments WHERE id = ANY(%s) RETURNING id", (list(remove),)
            )
        ).fetchall()
        if len(gone) != len(set(remove)):
            raise Conflict("segments already replaced by another job")
    if not add:
        return []
    columns = [[getattr(s, name) for s in add] for name in _COLUMNS]
    rows = await (
        await conn.execute(
            "INSERT INTO segments (kind, resolution, hour, shard, digest, rows, bytes, min_ts,"
            " max_ts, covers)"
            " SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::int[], %s::text[],"
            " %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " RETURNING id",
            columns,
        )
    ).fetchall()
    return [int(row["id"]) for row in rows]


async def segments(
    conn: db.Connection,
    *,
    kinds: Sequence[str],
    first_hour: int,
    last_hour: int,
    shards: Sequence[int] | None = None,
) -> list[Segment]:
    """The files of these kinds whose hours overlap [first_hour, last_hour], oldest first."""
    query = _SELECT + " WHERE kind = ANY(%s) AND hour BETWEEN %s AND %s"
    params: list[Any] = [list(kinds), first_hour, last_hour]
    if shards is not None:
        query += " AND shard = ANY(%s)"
        params.append(list(shards))
    rows = await (await conn.execute(query + " ORDER BY id", params)).fetchall()
    return [_segment(row) for row in rows]


async def crowded(conn: db.Connection) -> list[tuple[str, int, int]]:
    """(kind, hour, shard) of the raw partitions with more than one file."""
    rows = await (
        await conn.execute(
            "SELECT kind, hour, shard FROM segments WHERE resolution = 0"
            " GROUP BY kind, hour, shard HAVING count(*) > 1 ORDER BY hour, shard, kind"
        )
    ).fetchall()
    return [(row["kind"], int(row["hour"]), int(row["shard"])) for row in rows]


async def stale_rollups(
    conn: db.Connection, *, resolution: int, before_hour: int
) -> list[tuple[int, int]]:
    """(hour, shard) of complete hours whose `resolution` rollup is missing, or older than
    the newest 1m file of the partition."""
    rows = await (
        await conn.execute(
            "SELECT m.hour, m.shard FROM segments m WHERE m.kind = 'rollups'"
            " AND m.resolution = 60 AND m.hour < %s GROUP BY m.hour, m.shard"
            " HAVING max(m.id) > coalesce((SELECT max(r.covers) FROM segments r"
            "   WHERE r.kind = 'rollups' AND r.resolution = %s AND r.hour = m.hour"
            "   AND r.shard = m.shard), 0)"
            " ORDER BY m.hour, m.shard",
            (before_hour, resolution),
        )
    ).fetchall()
    return [(int(row["hour"]), int(row["shard"])) for row in rows]


async def expired(conn: db.Connection, *, raw_before: int, rollups_before: int) -> list[Segment]:
    rows = await (
        await conn.execute(
            _SELECT + " WHERE (resolution IN (0, 60) AND hour + 3600000 <= %s)"
            " OR (resolution IN (300, 3600) AND hour + 3600000 <= %s) ORDER BY id",
            (raw_before, rollups_before),
        )
    ).fetchall()
    return [_segment(row) for row in rows]


async def forget(conn: db.Connection, *, entries_before_s: float, series_before_s: float) -> int:
    """Forgets applied entry ids older than the cut; and, once no file is left at all,
    the series made before it (files do not name their series, so a series is only known
    to be unused when nothing is)."""
    await conn.execute(
        "DELETE FROM applied_entries WHERE applied_at < to_timestamp(%s)", (entries_before_s,)
    )
    gone = await (
        await conn.execute(
            "DELETE FROM series s WHERE s.created_at < to_timestamp(%s) AND NOT EXISTS"
            " (SELECT 1 FROM segments) RETURNING id",
            (series_before_s,),
        )
    ).fetchall()
    return len(gone)


async def volume(conn: db.Connection) -> dict[str, tuple[int, int, int]]:
    """(files, rows, bytes) per kind/resolution: what the bench reports as bytes per point."""
    rows = await (
        await conn.execute(
            "SELECT kind, resolution, count(*) AS files, sum(rows) AS rows, sum(bytes) AS bytes"
            " FROM segments GROUP BY kind, resolution"
        )
    ).fetchall()
    return {
        f"{row['kind']}/{row['resolution']}": (
            int(row["files"]),
            int(row["rows"]),
            int(row["bytes"]),
        )
        for row in rows
    }
