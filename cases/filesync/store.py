"""The FileSync case's SQL, and nothing else. Every function takes the connection, so the
caller groups them into one transaction; the tables live in the resource's own schema (the
connection's search_path), so no name here is qualified."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from hourglass.store import db

# PostgreSQL going away or the pool waiting too long: the caller may retry.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)
# Two transactions that touch the same chunk rows in another order: one is rolled back whole.
RETRY_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
# NOTIFY channel of new changes; the payload is the workspace id.
CHANNEL = "filesync_changes"


async def open_pool(dsn: str, *, max_size: int = 16, check_idle_after: float = 0.0) -> db.Pool:
    """`check_idle_after=math.inf` saves a round trip per loan, for calls whose client retries
    a failed one on its own (HaveChunks, PutChunk); see db.open_pool."""
    return await db.open_pool(dsn, max_size=max_size, check_idle_after=check_idle_after)


@dataclass(frozen=True, slots=True)
class Member:
    workspace_id: int
    workspace: str
    user: str
    access: str


async def create_workspace(conn: db.Connection, name: str) -> int | None:
    """The new workspace's id; None when the name is taken."""
    row = await (
        await conn.execute(
            "INSERT INTO workspaces (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name,),
        )
    ).fetchone()
    return None if row is None else int(row["id"])


async def workspace_id(conn: db.Connection, name: str) -> int | None:
    row = await (
        await conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,))
    ).fetchone()
    return None if row is None else int(row["id"])


async def put_member(
    conn: db.Connection, *, workspace: int, user: str, access: str, token_hash: bytes
) -> None:
    """Adds the member, or gives an existing one this access and a new token."""
    await conn.execute(
        "INSERT INTO members (workspace_id, user_name, access, token_hash)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (workspace_id, user_name)"
        " DO UPDATE SET access = excluded.access, token_hash = excluded.token_hash",
        (workspace, user, access, token_hash),
    )


async def member(conn: db.Connection, token_hash: bytes) -> Member | None:
    row = await (
        await conn.execute(
            "SELECT m.workspace_id, w.name, m.user_name, m.access FROM members m"
            " JOIN workspaces w ON w.id = m.workspace_id WHERE m.token_hash = %s",
            (token_hash,),
        )
    ).fetchone()
    if row is None:
        return None
    return Member(row["workspace_id"], row["name"], row["user_name"], row["access"])


async def touch_chunks(
    conn: db.Connection, *, workspace: int, digests: Sequence[str], now: datetime
) -> set[str]:
    """Which of `digests` the workspace holds. Touching them restarts their grace, so a chunk
    a client was just told it need not send is not collected before that client commits."""
    rows = await (
        await conn.execute(
            "UPDATE chunks SET touched_at = %s WHERE workspace_id = %s AND digest = ANY(%s)"
            " RETURNING digest",
            (now, workspace, list(digests)),
        )
    ).fetchall()
    return {row["digest"] for row in rows}


async def record_chunks(
    conn: db.Connection, *, workspace: int, chunks: Sequence[tuple[str, int]], now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO chunks (workspace_id, digest, size, touched_at)"
        " SELECT %s, d, s, %s FROM unnest(%s::text[], %s::int[]) AS t(d, s)"
        " ON CONFLICT (workspace_id, digest) DO UPDATE SET touched_at = excluded.touched_at",
        (workspace, now, [d for d, _ in chunks], [s for _, s in chunks]),
    )


async def relax_durability(conn: db.Connection) -> None:
    """This transaction's commit does not wait for the WAL flush. Only for chunk rows: a row
    lost in a crash is a chunk the client is told to send again (HaveChunks) and whose bytes
    the sweep collects; a commit, which checks its chunks' rows, always waits for the flush."""
    await conn.execute("SET LOCAL synchronous_commit = off")


def lock_key(digest: str) -> int:
    """The advisory-lock key of a digest (its first 64 bits, signed)."""
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


async def lock_digest(conn: db.Connection, digest: str, *, shared: bool) -> None:
    """Held until the transaction ends: shared by a put (from before the object is written
    until its row is committed), exclusive by the sweep (from its check that no row names
    the digest until the object is deleted)."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {function}(%s)", (lock_key(digest),))


async def lock_workspace(conn: db.Connection, workspace: int) -> int:
    """Locks the workspace row (commits to it queue here) and returns its last cursor."""
    row = await (
        await conn.execute(
            "SELECT last_cursor FROM workspaces WHERE id = %s FOR UPDATE", (workspace,)
        )
    ).fetchone()
    assert row is not None
    return int(row["last_cursor"])


async def heads(
    conn: db.Connection, *, workspace: int, paths: Sequence[str]
) -> dict[str, tuple[int, bool]]:
    """path -> (head version, deleted) for the paths that have versions."""
    rows = await (
        await conn.execute(
            "SELECT DISTINCT ON (path) path, version, deleted FROM versions"
            " WHERE workspace_id = %s AND path = ANY(%s) ORDER BY path, version DESC",
            (workspace, list(set(paths))),
        )
    ).fetchall()
    return {row["path"]: (int(row["version"]), bool(row["deleted"])) for row in rows}


async def reference(
    conn: db.Connection, *, workspace: int, digests: Sequence[str], now: datetime
) -> dict[str, int]:
    """Counts one more reference per occurrence of each digest; digest -> size of those that
    exist (the caller rolls back if any is missing). The UPDATE locks the rows, so the
    collector's DELETE of an unreferenced chunk waits for this transaction and then re-reads
    the row (refs > 0 now) and skips it."""
    counts = Counter(digests)
    rows = await (
        await conn.execute(
            "UPDATE chunks c SET refs = c.refs + t.n, touched_at = %s"
            " FROM unnest(%s::text[], %s::bigint[]) AS t(d, n)"
            " WHERE c.workspace_id = %s AND c.digest = t.d RETURNING c.digest, c.size",
            (now, list(counts), list(counts.values()), workspace),
        )
    ).fetchall()
    return {row["digest"]: int(row["size"]) for row in rows}


@dataclass(frozen=True, slots=True)
class Version:
    path: str
    version: int
    cursor: int
    deleted: bool
    size: int
    digest: str
    chunks: list[str]
    device: str
    user: str
    created_at: datetime


def _version(row: dict[str, Any]) -> Version:
    return Version(
        path=row["path"],
        version=int(row["version"]),
        cursor=int(row["cursor"]),
        deleted=bool(row["deleted"]),
        size=int(row["size"]),
        digest=row["digest"],
        chunks=list(row["chunks"]),
        device=row["device"],
        user=row["user_name"],
        created_at=row["created_at"],
    )


async def insert_versions(
    conn: db.Connection, *, workspace: int, versions: Sequence[Version], last_cursor: int
) -> None:
    """Inserts the versions and moves the workspace's cursor to `last_cursor`, then notifies
    the watchers (delivered when the transaction commits)."""
    await conn.cursor().executemany(
        "INSERT INTO versions (workspace_id, path, version, cursor, deleted, size, digest,"
        " chunks, device, user_name, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (workspace, v.path, v.version, v.cursor, v.deleted, v.size, v.digest, v.chunks,
             v.device, v.user, v.created_at)
            for v in versions
        ],
    )  # fmt: skip
    await conn.execute(
        "UPDATE workspaces SET last_cursor = %s WHERE id = %s", (last_cursor, workspace)
    )
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(workspace)))


async def changes(conn: db.Connection, *, workspace: int, cursor: int, limit: int) -> list[Version]:
    rows = await (
        await conn.execute(
            "SELECT path, version, cursor, deleted, size, digest, chunks, device, user_name,"
            " created_at"
            " FROM versions WHERE workspace_id = %s AND cursor > %s"
            " ORDER BY cursor LIMIT %s",
            (workspace, cursor, limit),
        )
    ).fetchall()
    return [_version(row) for row in rows]


async def versions_of(conn: db.Connection, *, workspace: int, path: str) -> list[Version]:
    rows = await (
        await conn.execute(
            "SELECT path, version, cursor, deleted, size, digest, chunks, device, user_name,"
            " created_at"
            " FROM versions WHERE workspace_id = %s AND path = %s"
            " ORDER BY version DESC",
            (workspace, path),
        )
    ).fetchall()
    return [_version(row) for row in rows]


async def version(conn: db.Connection, *, workspace: int, path: str, number: int) -> Version | None:
    """Version `number` of `path`, or its head when `number` is 0."""
    row = await (
        await conn.execute(
            "SELECT path, version, cursor, deleted, size, digest, chunks, device, user_name,"
            " created_at"
            " FROM versions WHERE workspace_id = %s AND path = %s"
            " AND (version = %s OR %s = 0) ORDER BY version DESC LIMIT 1",
            (workspace, path, number, number),
        )
    ).fetchone()
    return None if row is None else _version(row)


async def create_share(
    conn: db.Connection,
    *,
    token_hash: bytes,
    workspace: int,
    path: str,
    number: int,
    user: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO share_links (token_hash, workspace_id, path, version, created_by,"
        " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (token_hash, workspace, path, number, user, now, expires_at),
    )


async def share(conn: db.Connection, token_hash: bytes) -> dict[str, Any] | None:
    return await (
        await conn.execute(
            "SELECT workspace_id, path, version, expires_at FROM share_links WHERE token_hash = %s",
            (token_hash,),
        )
    ).fetchone()


async def expire_shares(conn: db.Connection, now: datetime) -> int:
    done = await conn.execute("DELETE FROM share_links WHERE expires_at <= %s", (now,))
    return done.rowcount


async def forget_unreferenced(conn: db.Connection, cutoff: datetime, limit: int) -> list[str]:
    """The mark: deletes chunk rows that no version refers to and nobody touched since
    `cutoff`; their digests. A row a commit is referencing right now is locked by that
    commit; this DELETE waits, re-reads it (refs > 0) and skips it."""
    rows = await (
        await conn.execute(
            "DELETE FROM chunks WHERE ctid IN (SELECT ctid FROM chunks"
            " WHERE refs = 0 AND touched_at < %s LIMIT %s) AND refs = 0 AND touched_at < %s"
            " RETURNING digest",
            (cutoff, limit, cutoff),
        )
    ).fetchall()
    return [row["digest"] for row in rows]


async def digest_held(conn: db.Connection, digest: str) -> bool:
    """Whether any workspace of the resource still holds a chunk with this digest."""
    row = await (
        await conn.execute("SELECT 1 FROM chunks WHERE digest = %s LIMIT 1", (digest,))
    ).fetchone()
    return row is not None


async def held_digests(conn: db.Connection) -> set[str]:
    rows = await (await conn.execute("SELECT DISTINCT digest FROM chunks")).fetchall()
    return {row["digest"] for row in rows}


async def enforce_retention(
    conn: db.Connection, *, keep: int, cutoff: datetime, now: datetime
) -> int:
    """Deletes old versions (never a head): those past the newest `keep` of their path, or
    created before `cutoff`; releases their chunk references in the same statement."""
    row = await (
        await conn.execute(
            """
            WITH ranked AS (
                SELECT workspace_id, path, version, created_at, row_number() OVER (
                    PARTITION BY workspace_id, path ORDER BY version DESC) AS rank
                FROM versions
            ), doomed AS (
                DELETE FROM versions v USING ranked r
                WHERE v.workspace_id = r.workspace_id AND v.path = r.path
                  AND v.version = r.version AND r.rank > 1
                  AND (r.rank > %(keep)s + 1 OR r.created_at < %(cutoff)s)
                RETURNING v.workspace_id, v.chunks
            ), counted AS (
                SELECT workspace_id, digest, count(*) AS n
                FROM doomed, unnest(doomed.chunks) AS digest GROUP BY workspace_id, digest
            ), released AS (
                UPDATE chunks c SET refs = c.refs - counted.n, touched_at = %(now)s
                FROM counted
                WHERE c.workspace_id = counted.workspace_id AND c.digest = counted.digest
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM doomed) AS deleted,
                   (SELECT count(*) FROM released) AS released
            """,
            {"keep": keep, "cutoff": cutoff, "now": now},
        )
    ).fetchone()
    assert row is not None
    return int(row["deleted"])
