"""The artifacts table: which uploaded binaries exist, so jobs can refer to them and the
maintenance loop can delete the ones no job refers to. The bytes live in the artifact store
(hourglass.artifacts)."""

from __future__ import annotations

from datetime import datetime

from hourglass.store.db import Connection


async def record(conn: Connection, *, digest: str, size: int, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO artifacts (digest, size, created_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (digest) DO NOTHING",
        (digest, size, now),
    )


async def unreferenced(conn: Connection, *, created_before: datetime, limit: int) -> list[str]:
    """Artifacts that no job refers to, old enough that an upload about to be scheduled is not
    taken from under its client."""
    cursor = await conn.execute(
        """
        SELECT digest FROM artifacts a
        WHERE created_at < %s AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.binary_digest = a.digest)
        ORDER BY created_at LIMIT %s
        """,
        (created_before, limit),
    )
    return [row["digest"] for row in await cursor.fetchall()]


async def forget(conn: Connection, digest: str) -> bool:
    """Deletes the row unless a job refers to it (the foreign key refuses; we check first so
    the caller's transaction survives). True when the bytes may now be deleted."""
    cursor = await conn.execute(
        "DELETE FROM artifacts a WHERE digest = %s"
        " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.binary_digest = a.digest)"
        " RETURNING digest",
        (digest,),
    )
    return await cursor.fetchone() is not None
