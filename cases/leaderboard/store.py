"""The Leaderboard's SQL, and nothing else. Every function takes the connection, so the
caller groups them into one transaction; the tables live in the resource's own schema (the
connection's search_path), so no name here is qualified. The schema itself is made by
`hourglass serve` from schema.sql's numbered migrations (migrations/), as for every case."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg_pool import PoolTimeout

from hourglass.store import db

log = logging.getLogger(__name__)

# PostgreSQL going away or the pool waiting too long: the caller may retry.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout)
# First half of the advisory lock keys of this case ("lb"); the second is the schema's hash.
_LOCK_CLASS = 0x6C62


async def open_pool(dsn: str, *, max_size: int = 8) -> db.Pool:
    """`dsn` is the one `hourglass serve` gives the server: its search_path is the resource's
    schema alone, into which the migrations were already applied (hourglass.store.migrate)."""
    return await db.open_pool(dsn, max_size=max_size)


# -- event types -------------------------------------------------------------------------------


async def type_id(conn: db.Connection, name: str, *, create: bool) -> int | None:
    if create:
        await conn.execute(
            "INSERT INTO event_types (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,)
        )
    row = await (
        await conn.execute("SELECT id FROM event_types WHERE name = %s", (name,))
    ).fetchone()
    return None if row is None else int(row["id"])


# -- ingest ------------------------------------------------------------------------------------


async def share_lock(conn: db.Connection) -> None:
    """Held by every ingest transaction; the rollup takes it exclusively, so a rollup never
    reads the finer buckets while an ingest that decided "not rolled yet" is uncommitted."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared(%s, hashtext(current_schema()))", (_LOCK_CLASS,)
    )


async def exclusive_lock(conn: db.Connection) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_LOCK_CLASS,)
    )


async def claim_batch(
    conn: db.Connection, *, batch_id: str, digest: bytes, events: int, now: datetime
) -> bytes | None:
    """Records the batch id; None when it is new, else the digest it was first recorded with."""
    row = await (
        await conn.execute(
            "INSERT INTO batches (batch_id, digest, events, recorded_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
            (batch_id, digest, events, now),
        )
    ).fetchone()
    if row is not None:
        return None
    found = await (
        await conn.execute("SELECT digest FROM batches WHERE batch_id = %s", (batch_id,))
    ).fetchone()
    assert found is not None
    return bytes(found["digest"])


async def rolled_until(conn: db.Connection) -> dict[int, int]:
    rows = await (await conn.execute("SELECT size, rolled_until FROM rollups")).fetchall()
    return {int(r["size"]): int(r["rolled_until"]) for r in rows}


async def ensure_sizes(conn: db.Connection, sizes: Sequence[int]) -> None:
    """A rollup mark (at 0: nothing rolled) for each coarse size the spec names."""
    await conn.execute(
        "INSERT INTO rollups (size, rolled_until) SELECT unnest(%s::integer[]), 0"
        " ON CONFLICT (size) DO NOTHING",
        (list(sizes),),
    )


async def touch_buckets(
    conn: db.Connection, *, type_id: int, sizes: Sequence[int], starts: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """Creates the buckets (version 1) or bumps their version; (id, size, start, version) of
    each. Rows are locked in (size, start) order, so concurrent ingests cannot deadlock."""
    rows = await (
        await conn.execute(
            "INSERT INTO buckets (type_id, size, start, version)"
            " SELECT %s, s.size, s.start, 1"
            " FROM unnest(%s::integer[], %s::bigint[]) AS s (size, start)"
            " ORDER BY s.size, s.start"
            " ON CONFLICT (type_id, size, start) DO UPDATE SET version = buckets.version + 1"
            " RETURNING id, size, start, version",
            (type_id, list(sizes), list(starts)),
        )
    ).fetchall()
    return [(int(r["id"]), int(r["size"]), int(r["start"]), int(r["version"])) for r in rows]


async def add_counts(
    conn: db.Connection, *, bucket_ids: list[int], keys: list[str], counts: list[int]
) -> None:
    """Adds to each (bucket, key)'s count; the pairs must be distinct within one call."""
    await conn.execute(
        "INSERT INTO counts (bucket_id, key, count)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])"
        " ON CONFLICT (bucket_id, key) DO UPDATE SET count = counts.count + excluded.count",
        (bucket_ids, keys, counts),
    )


# -- queries -----------------------------------------------------------------------------------


async def find_buckets(
    conn: db.Connection, *, type_id: int, sizes: Sequence[int], starts: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """(id, size, start, version) of those of the given buckets that hold any count."""
    rows = await (
        await conn.execute(
            "SELECT b.id, b.size, b.start, b.version"
            " FROM unnest(%s::integer[], %s::bigint[]) AS w (size, start)"
            " JOIN buckets b ON b.type_id = %s AND b.size = w.size AND b.start = w.start",
            (list(sizes), list(starts), type_id),
        )
    ).fetchall()
    return [(int(r["id"]), int(r["size"]), int(r["start"]), int(r["version"])) for r in rows]


async def bucket_contents(
    conn: db.Connection, bucket_ids: Sequence[int]
) -> dict[int, tuple[int, int, int, list[tuple[str, int]]]]:
    """Per bucket id: (size, start, version, [(key, count)]), read in one statement, so the
    counts are those of that version."""
    rows = await (
        await conn.execute(
            "SELECT b.id, b.size, b.start, b.version, c.key, c.count FROM buckets b"
            " LEFT JOIN counts c ON c.bucket_id = b.id WHERE b.id = ANY(%s::bigint[])",
            (list(bucket_ids),),
        )
    ).fetchall()
    out: dict[int, tuple[int, int, int, list[tuple[str, int]]]] = {}
    for r in rows:
        entry = out.setdefault(
            int(r["id"]), (int(r["size"]), int(r["start"]), int(r["version"]), [])
        )
        if r["key"] is not None:
            entry[3].append((r["key"], int(r["count"])))
    return out


async def top(conn: db.Connection, *, bucket_ids: Sequence[int], k: int) -> list[tuple[str, int]]:
    """The exact top k over the buckets, straight from PostgreSQL: the answer when Redis
    cannot give one. Ties by key, bytewise (COLLATE "C"), as the Redis path orders them."""
    rows = await (
        await conn.execute(
            "SELECT key, sum(count)::bigint AS total FROM counts"
            " WHERE bucket_id = ANY(%s::bigint[])"
            ' GROUP BY key ORDER BY total DESC, key COLLATE "C" LIMIT %s',
            (list(bucket_ids), k),
        )
    ).fetchall()
    return [(r["key"], int(r["total"])) for r in rows]


# -- rollup and retention ----------------------------------------------------------------------


async def roll_up(
    conn: db.Connection, *, size: int, finer: int, since: int, until: int
) -> list[int]:
    """Builds every bucket of `size` starting in [since, until) by summing the `finer` buckets
    in it; returns the new buckets' ids. The caller holds the exclusive lock."""
    created = await (
        await conn.execute(
            "INSERT INTO buckets (type_id, size, start, version)"
            " SELECT DISTINCT type_id, %(size)s::integer, start - start %% %(size)s, 1"
            " FROM buckets WHERE size = %(finer)s AND start >= %(since)s AND start < %(until)s"
            " RETURNING id",
            {"size": size, "finer": finer, "since": since, "until": until},
        )
    ).fetchall()
    if created:
        await conn.execute(
            "INSERT INTO counts (bucket_id, key, count)"
            " SELECT coarse.id, c.key, sum(c.count)"
            " FROM buckets fine JOIN counts c ON c.bucket_id = fine.id"
            " JOIN buckets coarse ON coarse.type_id = fine.type_id AND coarse.size = %(size)s"
            "  AND coarse.start = fine.start - fine.start %% %(size)s"
            " WHERE fine.size = %(finer)s AND fine.start >= %(since)s AND fine.start < %(until)s"
            " GROUP BY coarse.id, c.key",
            {"size": size, "finer": finer, "since": since, "until": until},
        )
    await conn.execute(
        "UPDATE rollups SET rolled_until = %s WHERE size = %s AND rolled_until < %s",
        (until, size, until),
    )
    return [int(r["id"]) for r in created]


async def delete_before(
    conn: db.Connection, *, horizon: int, batches_before: datetime
) -> list[int]:
    """Deletes every bucket starting before the horizon, its counts, and the batch ids
    recorded before `batches_before`; returns the deleted buckets' ids."""
    gone = await (
        await conn.execute("DELETE FROM buckets WHERE start < %s RETURNING id", (horizon,))
    ).fetchall()
    ids = [int(r["id"]) for r in gone]
    if ids:
        await conn.execute("DELETE FROM counts WHERE bucket_id = ANY(%s::bigint[])", (ids,))
    await conn.execute("DELETE FROM batches WHERE recorded_at < %s", (batches_before,))
    return ids
