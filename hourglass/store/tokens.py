"""The api_tokens table: bearer tokens, stored as sha256 hashes, each bound to a namespace."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from hourglass.store.db import Connection

PREFIX = "hg_"


@dataclass(frozen=True, slots=True)
class Token:
    id: uuid.UUID
    namespace: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None  # None: never


@dataclass(frozen=True, slots=True)
class Found:
    """What a presented token is: the API decides from it (and its own clock) whether the
    token still works, and says why not."""

    namespace: str
    revoked: bool
    expires_at: datetime | None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create(
    conn: Connection,
    *,
    namespace: str,
    name: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    """Makes a token; returns its id and the token itself, which is never stored."""
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO api_tokens (id, namespace, name, token_hash, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (token_id, namespace, name, digest(token), now, expires_at),
    )
    return token_id, token


async def find(conn: Connection, token: str) -> Found | None:
    """The token's namespace and standing; None for a token that was never made."""
    cursor = await conn.execute(
        "SELECT namespace, revoked_at, expires_at FROM api_tokens WHERE token_hash = %s",
        (digest(token),),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return Found(
        namespace=str(row["namespace"]),
        revoked=row["revoked_at"] is not None,
        expires_at=row["expires_at"],
    )


async def revoke(conn: Connection, token_id: uuid.UUID, *, now: datetime) -> bool:
    cursor = await conn.execute(
        "UPDATE api_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
        (now, token_id),
    )
    return cursor.rowcount > 0


async def list_all(conn: Connection) -> list[Token]:
    cursor = await conn.execute("SELECT * FROM api_tokens ORDER BY namespace, created_at")
    return [
        Token(
            id=row["id"],
            namespace=row["namespace"],
            name=row["name"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            expires_at=row["expires_at"],
        )
        for row in await cursor.fetchall()
    ]
