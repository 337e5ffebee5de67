"""The artifacts, artifact_owners and artifact_quotas tables.

The bytes of an upload live in the artifact store (hourglass.artifacts), once per digest;
`artifacts` records that they exist. Ownership is per namespace: `artifact_owners` says which
namespaces uploaded a digest, and only those may run it (the foreign key jobs_binary_owner
holds that in the schema) or are charged for its size. The maintenance loop first releases
ownerships that no job of their namespace uses, then deletes the artifacts no namespace owns
and no job refers to.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from hourglass.store.db import Connection

# The first key of the per-namespace advisory lock that serialises admitting uploads ("hgua").
_UPLOAD_LOCK = 0x68677561


async def lock_namespace(conn: Connection, namespace: str) -> None:
    """Serialises the quota checks of one namespace's uploads until the transaction ends, so
    two concurrent uploads cannot both fit in the same remaining bytes."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_UPLOAD_LOCK, namespace))


async def owns(conn: Connection, namespace: str, digest: str) -> bool:
    cursor = await conn.execute(
        "SELECT 1 FROM artifact_owners WHERE namespace = %s AND digest = %s", (namespace, digest)
    )
    return await cursor.fetchone() is not None


async def usage(conn: Connection, namespace: str) -> int:
    """Bytes of the artifacts the namespace owns: each counted in full, even when another
    namespace owns the same bytes, so that a quota says nothing about other namespaces."""
    cursor = await conn.execute(
        "SELECT coalesce(sum(a.size), 0) AS used FROM artifact_owners o"
        " JOIN artifacts a ON a.digest = o.digest WHERE o.namespace = %s",
        (namespace,),
    )
    row = await cursor.fetchone()
    return int(row["used"]) if row else 0


async def own(conn: Connection, *, namespace: str, digest: str, size: int, now: datetime) -> bool:
    """Records that `namespace` uploaded the artifact (and that it exists); returns whether
    the namespace did not own it before. A repeated upload renews the ownership's grace."""
    await conn.execute(
        "INSERT INTO artifacts (digest, size, created_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (digest) DO NOTHING",
        (digest, size, now),
    )
    cursor = await conn.execute(
        "INSERT INTO artifact_owners (namespace, digest, uploaded_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (namespace, digest) DO UPDATE SET uploaded_at = excluded.uploaded_at"
        " RETURNING xmax = 0 AS inserted",
        (namespace, digest, now),
    )
    row = await cursor.fetchone()
    return bool(row and row["inserted"])


async def disown(conn: Connection, *, namespace: str, digest: str) -> None:
    """Undoes `own` for an upload whose bytes could not be stored. A job that uses the
    artifact keeps the ownership (the foreign key refuses; the savepoint keeps the caller's
    transaction alive)."""
    try:
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM artifact_owners WHERE namespace = %s AND digest = %s",
                (namespace, digest),
            )
    except psycopg.errors.ForeignKeyViolation:
        pass


async def quota(conn: Connection, namespace: str) -> int | None:
    """The namespace's own quota in bytes; None when the API's default applies."""
    cursor = await conn.execute(
        "SELECT max_bytes FROM artifact_quotas WHERE namespace = %s", (namespace,)
    )
    row = await cursor.fetchone()
    return int(row["max_bytes"]) if row else None


async def set_quota(conn: Connection, namespace: str, max_bytes: int | None) -> None:
    """Sets the namespace's quota; None returns it to the API's default."""
    if max_bytes is None:
        await conn.execute("DELETE FROM artifact_quotas WHERE namespace = %s", (namespace,))
        return
    await conn.execute(
        "INSERT INTO artifact_quotas (namespace, max_bytes) VALUES (%s, %s)"
        " ON CONFLICT (namespace) DO UPDATE SET max_bytes = excluded.max_bytes",
        (namespace, max_bytes),
    )


async def list_quotas(conn: Connection) -> list[tuple[str, int]]:
    cursor = await conn.execute("SELECT namespace, max_bytes FROM artifact_quotas ORDER BY 1")
    return [(row["namespace"], int(row["max_bytes"])) for row in await cursor.fetchall()]


async def unused_ownerships(
    conn: Connection, *, uploaded_before: datetime, limit: int
) -> list[tuple[str, str]]:
    """(namespace, digest) of ownerships that no job of that namespace uses, last uploaded
    before `uploaded_before`: long enough ago that an upload about to be scheduled is not
    taken from under its client."""
    cursor = await conn.execute(
        """
        SELECT namespace, digest FROM artifact_owners o
        WHERE uploaded_at < %s AND NOT EXISTS (
            SELECT 1 FROM jobs j WHERE j.binary_digest = o.digest AND j.namespace = o.namespace)
        ORDER BY uploaded_at LIMIT %s
        """,
        (uploaded_before, limit),
    )
    return [(row["namespace"], row["digest"]) for row in await cursor.fetchall()]


async def release(
    conn: Connection, *, namespace: str, digest: str, uploaded_before: datetime
) -> bool:
    """Ends an unused ownership. A job scheduled with it meanwhile keeps it (the foreign key
    refuses the delete, inside a savepoint); an upload meanwhile renewed `uploaded_at`, which
    the delete re-checks on the locked row."""
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM artifact_owners o WHERE namespace = %s AND digest = %s"
                " AND uploaded_at < %s AND NOT EXISTS (SELECT 1 FROM jobs j"
                "  WHERE j.binary_digest = o.digest AND j.namespace = o.namespace)"
                " RETURNING digest",
                (namespace, digest, uploaded_before),
            )
            return await cursor.fetchone() is not None
    except psycopg.errors.ForeignKeyViolation:
        return False


async def unreferenced(conn: Connection, *, created_before: datetime, limit: int) -> list[str]:
    """Artifacts that no namespace owns and no job refers to, created before
    `created_before`."""
    cursor = await conn.execute(
        """
        SELECT digest FROM artifacts a
        WHERE created_at < %s
          AND NOT EXISTS (SELECT 1 FROM artifact_owners o WHERE o.digest = a.digest)
          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.binary_digest = a.digest)
        ORDER BY created_at LIMIT %s
        """,
        (created_before, limit),
    )
    return [row["digest"] for row in await cursor.fetchall()]


async def forget(conn: Connection, digest: str) -> bool:
    """Deletes the row unless a namespace owns it or a job refers to it; True when the bytes
    may now be deleted. The foreign keys refuse a delete that races an upload or a schedule;
    the savepoint keeps the caller's transaction alive."""
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM artifacts a WHERE digest = %s"
                " AND NOT EXISTS (SELECT 1 FROM artifact_owners o WHERE o.digest = a.digest)"
                " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.binary_digest = a.digest)"
                " RETURNING digest",
                (digest,),
            )
            return await cursor.fetchone() is not None
    except psycopg.errors.ForeignKeyViolation:
        return False
