"""The UrlShortener's SQL, and nothing else. Every function takes the connection, so the
caller groups them into one transaction; the tables live in the resource's own schema (the
connection's search_path), so no name here is qualified. The schema itself is made by
`hourglass serve` from schema.sql's numbered migrations (migrations/), as for every case."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from hourglass.store import db

# PostgreSQL going away or the pool waiting too long: the caller may retry.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)


async def open_pool(dsn: str, *, max_size: int = 8, check_idle_after: float = 0.0) -> db.Pool:
    """`dsn` is the one `hourglass serve` gives the server: its search_path is the resource's
    schema alone, into which the migrations were already applied."""
    return await db.open_pool(dsn, max_size=max_size, check_idle_after=check_idle_after)


async def secret(conn: db.Connection, name: str, candidate: bytes) -> bytes:
    """The secret called `name`: `candidate` if this call made it, else the one made first."""
    await conn.execute(
        "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (name, candidate),
    )
    row = await (
        await conn.execute("SELECT value FROM secrets WHERE name = %s", (name,))
    ).fetchone()
    assert row is not None
    return bytes(row["value"])


async def lease_block(conn: db.Connection) -> int:
    row = await (await conn.execute("SELECT nextval('key_blocks') AS block")).fetchone()
    assert row is not None
    return int(row["block"])


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's row, as the read path and Stats need it."""

    key: str
    kind: str
    url: str | None
    blob: str | None
    size: int | None
    binary: bool
    syntax: str | None
    created_at: datetime
    expires_at: datetime | None
    max_visits: int | None
    visits: int
    deleted_at: datetime | None


_ENTRY = (
    "key, kind, url, blob, size, coalesce(binary_body, false) AS binary_body, syntax,"
    " created_at, expires_at, max_visits, visits, deleted_at"
)


def _entry(row: dict[str, Any]) -> Entry:
    return Entry(
        key=row["key"],
        kind=row["kind"],
        url=row["url"],
        blob=row["blob"],
        size=row["size"],
        binary=bool(row["binary_body"]),
        syntax=row["syntax"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        max_visits=row["max_visits"],
        visits=int(row["visits"]),
        deleted_at=row["deleted_at"],
    )


@dataclass(frozen=True, slots=True)
class New:
    """A key to store: a link (url) or a paste (blob, size, binary, syntax)."""

    key: str
    kind: str
    now: datetime
    url: str | None = None
    blob: str | None = None
    size: int | None = None
    binary: bool | None = None
    syntax: str | None = None
    alias: bool = False
    expires_at: datetime | None = None
    max_visits: int | None = None


_NEW_COLUMNS = (
    "key", "url", "kind", "blob", "size", "binary", "syntax", "alias", "now", "expires_at",
    "max_visits",
)  # fmt: skip


async def insert_many(conn: db.Connection, rows: Sequence[New]) -> set[str]:
    """Stores new keys in ONE statement (one transaction on an autocommit connection); returns
    the keys it stored. A key already taken is not stored, nor is the second of two rows with
    the same key. Rows go in key order, so that two concurrent batches with the same aliases
    lock them in the same order (no deadlock)."""
    ordered = sorted(rows, key=lambda row: row.key)
    columns = [[getattr(row, name) for row in ordered] for name in _NEW_COLUMNS]
    stored = await (
        await conn.execute(
            "INSERT INTO links (key, url, kind, blob, size, binary_body, syntax, alias,"
            " created_at, expires_at, max_visits)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
            " %s::boolean[], %s::text[], %s::boolean[], %s::timestamptz[], %s::timestamptz[],"
            " %s::bigint[])"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            columns,
        )
    ).fetchall()
    return {r["key"] for r in stored}


async def find(conn: db.Connection, key: str) -> Entry | None:
    row = await (
        await conn.execute(f"SELECT {_ENTRY} FROM links WHERE key = %s", (key,))  # noqa: S608
    ).fetchone()
    return None if row is None else _entry(row)


async def mark_deleted(conn: db.Connection, key: str, now: datetime) -> bool | None:
    """True: deleted now; False: it already was; None: no such key."""
    row = await (
        await conn.execute(
            "UPDATE links SET deleted_at = coalesce(deleted_at, %s) WHERE key = %s"
            " RETURNING deleted_at = %s AS now_deleted",
            (now, key, now),
        )
    ).fetchone()
    return None if row is None else bool(row["now_deleted"])


async def touch_blob(conn: db.Connection, *, digest: str, size: int, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO blobs (digest, size, touched_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at",
        (digest, size, now),
    )


async def apply_visits(
    conn: db.Connection,
    *,
    batches: Sequence[str],
    rows: Sequence[tuple[str, str, datetime, str, str, int]],
    now: datetime,
) -> tuple[int, list[str]]:
    """Applies the visits of the stream entries `batches` that were not applied before, in
    the caller's transaction. `rows` are (entry id, key, hour, referrer, agent, count).
    Returns (visits applied, keys that reached their max_visits now)."""
    fresh_rows = await (
        await conn.execute(
            "INSERT INTO applied_batches (entry_id, applied_at) SELECT unnest(%s::text[]), %s"
            " ON CONFLICT (entry_id) DO NOTHING RETURNING entry_id",
            (list(batches), now),
        )
    ).fetchall()
    fresh = {r["entry_id"] for r in fresh_rows}
    totals: dict[tuple[str, datetime, str, str], int] = {}
    per_key: dict[str, int] = {}
    for entry_id, key, hour, referrer, agent, count in rows:
        if entry_id in fresh:
            group = (key, hour, referrer, agent)
            totals[group] = totals.get(group, 0) + count
            per_key[key] = per_key.get(key, 0) + count
    if not totals:
        return 0, []
    ordered = sorted(totals.items())  # one lock order for concurrent drainers
    await conn.execute(
        "INSERT INTO hourly_visits (key, hour, referrer, agent, count)"
        " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[],"
        " %s::bigint[])"
        " ON CONFLICT (key, hour, referrer, agent)"
        " DO UPDATE SET count = hourly_visits.count + excluded.count",
        (
            [g[0] for g, _ in ordered],
            [g[1] for g, _ in ordered],
            [g[2] for g, _ in ordered],
            [g[3] for g, _ in ordered],
            [n for _, n in ordered],
        ),
    )
    keys = sorted(per_key)
    counted = await (
        await conn.execute(
            "UPDATE links SET visits = links.visits + d.n,"
            " deleted_at = CASE WHEN links.max_visits <= links.visits + d.n"
            "  THEN coalesce(links.deleted_at, %s) ELSE links.deleted_at END"
            " FROM unnest(%s::text[], %s::bigint[]) AS d (key, n)"
            " WHERE links.key = d.key RETURNING links.key, links.visits, links.max_visits",
            (now, keys, [per_key[k] for k in keys]),
        )
    ).fetchall()
    # Exhausted by this batch: the limit lies within what it added.
    exhausted = [
        r["key"]
        for r in counted
        if r["max_visits"] is not None
        and r["visits"] - per_key[r["key"]] < r["max_visits"] <= r["visits"]
    ]
    return sum(per_key.values()), exhausted


async def breakdown(conn: db.Connection, key: str) -> dict[str, list[tuple[str, int]]]:
    """Visit counts of `key` by day, referrer and agent: daily rows and not yet rolled hours."""
    rows = await (
        await conn.execute(
            "WITH v AS (SELECT day, referrer, agent, count FROM daily_visits WHERE key = %(k)s"
            " UNION ALL SELECT (hour AT TIME ZONE 'UTC')::date, referrer, agent, count"
            " FROM hourly_visits WHERE key = %(k)s)"
            " SELECT 'day' AS what, to_char(day, 'YYYY-MM-DD') AS name, sum(count) AS n"
            " FROM v GROUP BY day"
            " UNION ALL SELECT 'referrer', referrer, sum(count) FROM v GROUP BY referrer"
            " UNION ALL SELECT 'agent', agent, sum(count) FROM v GROUP BY agent",
            {"k": key},
        )
    ).fetchall()
    out: dict[str, list[tuple[str, int]]] = {"day": [], "referrer": [], "agent": []}
    for r in rows:
        out[r["what"]].append((r["name"], int(r["n"])))
    out["day"].sort()
    out["referrer"].sort(key=lambda item: (-item[1], item[0]))
    out["agent"].sort(key=lambda item: (-item[1], item[0]))
    return out


async def purge(
    conn: db.Connection, *, before: datetime, blobs_before: datetime
) -> tuple[list[str], list[str]]:
    """Deletes the keys expired, exhausted or deleted before `before` with their visit
    counts, and the blobs no key uses that were last touched before `blobs_before`.
    Returns (keys deleted, digests whose objects the caller deletes after the commit)."""
    gone = await (
        await conn.execute(
            "DELETE FROM links WHERE deleted_at < %(b)s OR expires_at < %(b)s RETURNING key",
            {"b": before},
        )
    ).fetchall()
    keys = [r["key"] for r in gone]
    if keys:
        for table in ("hourly_visits", "daily_visits"):
            await conn.execute(
                f"DELETE FROM {table} WHERE key = ANY(%s::text[])",  # noqa: S608
                (keys,),
            )
    freed = await (
        await conn.execute(
            "DELETE FROM blobs b WHERE touched_at < %s"
            " AND NOT EXISTS (SELECT 1 FROM links l WHERE l.blob = b.digest) RETURNING digest",
            (blobs_before,),
        )
    ).fetchall()
    return keys, [r["digest"] for r in freed]


async def known_blobs(conn: db.Connection, digests: Sequence[str]) -> set[str]:
    rows = await (
        await conn.execute(
            "SELECT digest FROM blobs WHERE digest = ANY(%s::text[])", (list(digests),)
        )
    ).fetchall()
    return {r["digest"] for r in rows}


async def rollup(
    conn: db.Connection, *, hours_before: datetime, forget_before: datetime
) -> tuple[int, int]:
    """Moves the hourly counts of hours before `hours_before` into daily ones, in one
    statement, and forgets the applied batch ids older than `forget_before`."""
    moved = await (
        await conn.execute(
            "WITH moved AS (DELETE FROM hourly_visits WHERE hour < %s RETURNING *),"
            " ins AS (INSERT INTO daily_visits (key, day, referrer, agent, count)"
            "  SELECT key, (hour AT TIME ZONE 'UTC')::date, referrer, agent, sum(count)"
            "  FROM moved GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
            "  ON CONFLICT (key, day, referrer, agent)"
            "  DO UPDATE SET count = daily_visits.count + excluded.count)"
            " SELECT count(*) AS n FROM moved",
            (hours_before,),
        )
    ).fetchone()
    forgotten = await conn.execute(
        "DELETE FROM applied_batches WHERE applied_at < %s", (forget_before,)
    )
    return int(moved["n"]) if moved else 0, forgotten.rowcount
