"""The Feed's SQL, and nothing else. Every function takes the connection, so the caller
groups them into one transaction; the tables live in the resource's own schema (the
connection's search_path), so no name here is qualified. Every query names the user id its
table is partitioned by, so PostgreSQL reads one partition (schema.sql)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from hourglass.store import db

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)


async def open_pool(dsn: str, *, max_size: int = 16, check_idle_after: float = 0.0) -> db.Pool:
    """`check_idle_after`: see db.open_pool (0, the default: every loan checked)."""
    return await db.open_pool(dsn, max_size=max_size, check_idle_after=check_idle_after)


@dataclass(frozen=True, slots=True)
class PostRow:
    id: int
    author: int
    text: str
    media: list[dict[str, Any]]
    deleted: bool


async def create_user(conn: db.Connection, *, user_id: int, handle: str, now: datetime) -> int:
    """The new user's id, or the id that already holds `handle` (negated: taken)."""
    row = await (
        await conn.execute(
            "INSERT INTO handles (handle, user_id) VALUES (%s, %s)"
            " ON CONFLICT (handle) DO NOTHING RETURNING user_id",
            (handle, user_id),
        )
    ).fetchone()
    if row is None:
        return -1
    await conn.execute(
        "INSERT INTO users (id, handle, created_at, active_at) VALUES (%s, %s, %s, %s)",
        (user_id, handle, now, now),
    )
    return user_id


async def existing(conn: db.Connection, user_ids: Sequence[int]) -> set[int]:
    rows = await (
        await conn.execute("SELECT id FROM users WHERE id = ANY(%s::bigint[])", (list(user_ids),))
    ).fetchall()
    return {int(r["id"]) for r in rows}


async def follow(conn: db.Connection, *, follower: int, followee: int, now: datetime) -> int | None:
    """Adds the edge (both directions) and counts it; the followee's follower count after
    it, or None when the edge was there already."""
    added = await conn.execute(
        "INSERT INTO follows (follower, followee, created_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (follower, followee, now),
    )
    if added.rowcount == 0:
        return None
    await conn.execute(
        "INSERT INTO followers (followee, follower) VALUES (%s, %s)", (followee, follower)
    )
    await conn.execute("UPDATE users SET following = following + 1 WHERE id = %s", (follower,))
    row = await (
        await conn.execute(
            "UPDATE users SET followers = followers + 1 WHERE id = %s RETURNING followers",
            (followee,),
        )
    ).fetchone()
    assert row is not None
    return int(row["followers"])


async def unfollow(conn: db.Connection, *, follower: int, followee: int) -> int | None:
    """Removes the edge; the followee's follower count after it, or None if there was none."""
    gone = await conn.execute(
        "DELETE FROM follows WHERE follower = %s AND followee = %s", (follower, followee)
    )
    if gone.rowcount == 0:
        return None
    await conn.execute(
        "DELETE FROM followers WHERE followee = %s AND follower = %s", (followee, follower)
    )
    await conn.execute("UPDATE users SET following = following - 1 WHERE id = %s", (follower,))
    row = await (
        await conn.execute(
            "UPDATE users SET followers = followers - 1 WHERE id = %s RETURNING followers",
            (followee,),
        )
    ).fetchone()
    assert row is not None
    return int(row["followers"])


async def first_followers(
    conn: db.Connection, chunks: Sequence[tuple[int, int]], *, limit: int
) -> dict[tuple[int, int], list[int]]:
    """The next `limit` followers of many (author, after) at once, one index range each:
    one round trip for a whole batch of fan-out steps."""
    rows = await (
        await conn.execute(
            "SELECT q.author, q.after, f.follower"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS q (author, after)"
            " CROSS JOIN LATERAL (SELECT follower FROM followers WHERE followee = q.author"
            "  AND follower > q.after ORDER BY follower LIMIT %s) f"
            " ORDER BY q.author, q.after, f.follower",
            ([a for a, _ in chunks], [n for _, n in chunks], limit),
        )
    ).fetchall()
    out: dict[tuple[int, int], list[int]] = {chunk: [] for chunk in chunks}
    for r in rows:
        out[(int(r["author"]), int(r["after"]))].append(int(r["follower"]))
    return out


async def follower_counts(conn: db.Connection, authors: Sequence[int]) -> dict[int, int]:
    rows = await (
        await conn.execute(
            "SELECT id, followers FROM users WHERE id = ANY(%s::bigint[])", (list(authors),)
        )
    ).fetchall()
    return {int(r["id"]): int(r["followers"]) for r in rows}


async def followers_after(conn: db.Connection, *, author: int, after: int, limit: int) -> list[int]:
    """The next `limit` followers of `author` in id order, after `after` (a fan-out chunk)."""
    rows = await (
        await conn.execute(
            "SELECT follower FROM followers WHERE followee = %s AND follower > %s"
            " ORDER BY follower LIMIT %s",
            (author, after, limit),
        )
    ).fetchall()
    return [int(r["follower"]) for r in rows]


async def insert_post(
    conn: db.Connection, *, author: int, post_id: int, text: str, media: list[dict[str, Any]]
) -> bool:
    """Stores the post if its author exists (one statement); False when they do not."""
    done = await conn.execute(
        "INSERT INTO posts (author, id, text, media)"
        " SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM users WHERE id = %s)",
        (author, post_id, text, json.dumps(media), author),
    )
    return done.rowcount == 1


async def mark_queued(conn: db.Connection, pairs: Sequence[tuple[int, int]]) -> None:
    """(author, post id) pairs whose fan-out is on the stream, in one statement."""
    await conn.execute(
        "UPDATE posts p SET queued = true FROM unnest(%s::bigint[], %s::bigint[]) AS q (a, i)"
        " WHERE p.author = q.a AND p.id = q.i",
        ([a for a, _ in pairs], [i for _, i in pairs]),
    )


async def unqueued(conn: db.Connection, *, before_id: int, limit: int) -> list[tuple[int, int]]:
    """Posts made before `before_id` whose fan-out never reached the stream."""
    rows = await (
        await conn.execute(
            "SELECT author, id FROM posts WHERE NOT queued AND id < %s ORDER BY id LIMIT %s",
            (before_id, limit),
        )
    ).fetchall()
    return [(int(r["author"]), int(r["id"])) for r in rows]


async def delete_post(conn: db.Connection, *, author: int, post_id: int, now: datetime) -> bool:
    """True when the author's post is deleted now (False: not theirs, or gone already)."""
    done = await conn.execute(
        "UPDATE posts SET deleted_at = %s WHERE author = %s AND id = %s AND deleted_at IS NULL",
        (now, author, post_id),
    )
    return done.rowcount == 1


def _post(row: dict[str, Any]) -> PostRow:
    media = row["media"]
    return PostRow(
        id=int(row["id"]),
        author=int(row["author"]),
        text=row["text"],
        media=list(media if isinstance(media, list) else json.loads(media)),
        deleted=row["deleted_at"] is not None,
    )


async def posts_by_key(conn: db.Connection, pairs: Sequence[tuple[int, int]]) -> list[PostRow]:
    """The posts (author, id) pairs name, deleted ones included (flagged)."""
    rows = await (
        await conn.execute(
            "SELECT p.author, p.id, p.text, p.media, p.deleted_at FROM posts p"
            " JOIN unnest(%s::bigint[], %s::bigint[]) AS q (a, i) ON p.author = q.a AND p.id = q.i",
            ([a for a, _ in pairs], [i for _, i in pairs]),
        )
    ).fetchall()
    return [_post(r) for r in rows]


async def user_posts(
    conn: db.Connection, *, author: int, before: int | None, limit: int
) -> list[PostRow]:
    rows = await (
        await conn.execute(
            "SELECT author, id, text, media, deleted_at FROM posts"
            " WHERE author = %s AND id < %s AND deleted_at IS NULL ORDER BY id DESC LIMIT %s",
            (author, before if before is not None else 2**63 - 1, limit),
        )
    ).fetchall()
    return [_post(r) for r in rows]


async def recent_ids(
    conn: db.Connection, *, author: int, before: int | None, limit: int
) -> list[int]:
    rows = await (
        await conn.execute(
            "SELECT id FROM posts WHERE author = %s AND id < %s AND deleted_at IS NULL"
            " ORDER BY id DESC LIMIT %s",
            (author, before if before is not None else 2**63 - 1, limit),
        )
    ).fetchall()
    return [int(r["id"]) for r in rows]


async def hot_followees(conn: db.Connection, *, user: int, threshold: int) -> list[int]:
    rows = await (
        await conn.execute(
            "SELECT f.followee FROM follows f JOIN users u ON u.id = f.followee"
            " WHERE f.follower = %s AND u.followers > %s",
            (user, threshold),
        )
    ).fetchall()
    return [int(r["followee"]) for r in rows]


async def home_page(
    conn: db.Connection, *, user: int, before: int | None, limit: int, threshold: int | None
) -> list[tuple[int, int]]:
    """(post id, author) of the newest `limit` posts below `before` of the users `user`
    follows, from PostgreSQL: the rebuild of a lost timeline (threshold: leave out hot
    authors, whose posts are merged on read), or an older page than Redis keeps (None: all
    followees). Each followee's newest posts come from its own partition's index."""
    rows = await (
        await conn.execute(
            "SELECT p.id, p.author FROM follows f JOIN users u ON u.id = f.followee"
            " CROSS JOIN LATERAL (SELECT id, author FROM posts WHERE author = f.followee"
            "  AND id < %(before)s AND deleted_at IS NULL ORDER BY id DESC LIMIT %(limit)s) p"
            " WHERE f.follower = %(user)s AND (%(t)s::bigint IS NULL OR u.followers <= %(t)s)"
            " ORDER BY p.id DESC LIMIT %(limit)s",
            {"user": user, "before": before if before is not None else 2**63 - 1,
             "limit": limit, "t": threshold},
        )
    ).fetchall()  # fmt: skip
    return [(int(r["id"]), int(r["author"])) for r in rows]


async def touch_active(conn: db.Connection, *, users: Sequence[int], now: datetime) -> None:
    """Marks users active now, in one statement (ids in order: one lock order)."""
    await conn.execute(
        "UPDATE users SET active_at = %s WHERE id = ANY(%s::bigint[])", (now, sorted(users))
    )


async def active_since(
    conn: db.Connection, since: datetime, *, after: int, limit: int
) -> list[int]:
    rows = await (
        await conn.execute(
            "SELECT id FROM users WHERE active_at >= %s AND id > %s ORDER BY id LIMIT %s",
            (since, after, limit),
        )
    ).fetchall()
    return [int(r["id"]) for r in rows]


async def purge_deleted(conn: db.Connection, *, before: datetime) -> int:
    """Removes posts deleted before `before` for good (their tombstones outlived every
    cached copy)."""
    done = await conn.execute(
        "DELETE FROM posts WHERE deleted_at IS NOT NULL AND deleted_at < %s", (before,)
    )
    return done.rowcount


# -- uploads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadRow:
    user: int
    id: int
    size: int
    received: int
    content_type: str
    parts: list[str]
    digest: str | None


def _upload(row: dict[str, Any]) -> UploadRow:
    return UploadRow(
        user=int(row["user_id"]),
        id=int(row["id"]),
        size=int(row["size"]),
        received=int(row["received"]),
        content_type=row["content_type"],
        parts=list(row["parts"]),
        digest=row["digest"],
    )


_UPLOAD = "user_id, id, size, received, content_type, parts, digest"


async def start_upload(
    conn: db.Connection, *, user: int, upload_id: int, size: int, content_type: str, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO uploads (user_id, id, size, content_type, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (user, upload_id, size, content_type, now),
    )


async def upload(conn: db.Connection, *, user: int, upload_id: int) -> UploadRow | None:
    row = await (
        await conn.execute(
            f"SELECT {_UPLOAD} FROM uploads WHERE user_id = %s AND id = %s",  # noqa: S608
            (user, upload_id),
        )
    ).fetchone()
    return None if row is None else _upload(row)


async def append_part(
    conn: db.Connection, *, user: int, upload_id: int, offset: int, length: int, part: str
) -> UploadRow | None:
    """Appends a stored chunk if the upload is still at `offset` (a fenced write: of two
    senders of the same offset, one wins); None when it is not."""
    row = await (
        await conn.execute(
            "UPDATE uploads SET received = received + %s, parts = parts || %s::text"  # noqa: S608
            " WHERE user_id = %s AND id = %s AND received = %s AND completed_at IS NULL"
            f" RETURNING {_UPLOAD}",
            (length, part, user, upload_id, offset),
        )
    ).fetchone()
    return None if row is None else _upload(row)


async def complete_upload(
    conn: db.Connection, *, user: int, upload_id: int, digest: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE uploads SET digest = %s, completed_at = %s WHERE user_id = %s AND id = %s",
        (digest, now, user, upload_id),
    )


async def uploads_of(conn: db.Connection, *, user: int, ids: Sequence[int]) -> list[UploadRow]:
    rows = await (
        await conn.execute(
            f"SELECT {_UPLOAD} FROM uploads WHERE user_id = %s"  # noqa: S608
            " AND id = ANY(%s::bigint[])",
            (user, list(ids)),
        )
    ).fetchall()
    return [_upload(r) for r in rows]


async def expire_uploads(conn: db.Connection, *, before: datetime) -> tuple[int, list[str]]:
    """Drops unfinished uploads started before `before`: (how many, the parts they left)."""
    rows = await (
        await conn.execute(
            "DELETE FROM uploads WHERE completed_at IS NULL AND created_at < %s RETURNING parts",
            (before,),
        )
    ).fetchall()
    return len(rows), [part for r in rows for part in r["parts"]]


async def parts_in_use(conn: db.Connection, parts: Sequence[str]) -> set[str]:
    rows = await (
        await conn.execute(
            "SELECT DISTINCT unnest(parts) AS part FROM uploads WHERE completed_at IS NULL"
            " AND parts && %s::text[]",
            (list(parts),),
        )
    ).fetchall()
    return {r["part"] for r in rows}
