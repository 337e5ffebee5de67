"""The Feed's logic between PostgreSQL (the truth) and Redis (timelines, post bodies).

Reading a home timeline is two Redis round trips in the common case, the same as the bare
ZREVRANGE + MGET baseline the bench compares with: (1) the page of post ids below the cursor
and the markers above them (hot authors followed, recent unfollows), with the timeline's
expiry pushed back; (2) the posts' bodies (MGET), with the newest posts of the hot authors
followed when there are any. A timeline Redis does not hold (lost in a restart, evicted, or
never built) is rebuilt from PostgreSQL first; a page older than Redis keeps is read from
PostgreSQL. Deleted posts (a tombstone body) and the posts of authors just unfollowed are
dropped on read, whatever a late fan-out wrote.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError

from hourglass.cases.feed import ids, metrics, spec, store, timelines
from hourglass.cases.feed.fanout import Fanout, Task
from hourglass.cases.feed.media import Media
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.workerid import WorkerIds
from hourglass.store import db

log = logging.getLogger(__name__)

BODY_TTL = 2 * 86400
ACTIVE_EVERY = 3600  # a user's active_at is written at most this often
MAX_NOTED = 1_000_000  # readers remembered for that (then forgotten all at once)
SPARE = 10  # post ids read beyond the page, to fill in for deleted or unfollowed ones
MARKER_ROOM = 32  # members a first page reads beyond its posts, for sentinels and markers


class NotFound(Exception):
    pass


class Taken(Exception):
    pass


@dataclass
class Feed:
    pool: db.Pool
    client: redis.Redis
    prefix: str
    spec: spec.Spec
    workers: WorkerIds
    fanout: Fanout
    media: Media
    scripts: dict[str, Any] = field(default_factory=dict)
    noted: dict[int, float] = field(default_factory=dict)
    prefix_bytes: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self.prefix_bytes = self.prefix.encode()
        for name in ("UNFOLLOW", "FINISH", "TRIM", "APPLY"):
            self.scripts[name] = self.client.register_script(getattr(timelines, name))

    def tl(self, user: int) -> str:
        return f"{self.prefix}tl:{user}"

    def ut(self, user: int) -> str:
        return f"{self.prefix}ut:{user}"

    def body(self, post_id: int) -> bytes:
        # Bytes, not str: a read names 50 of them, and redis-py encodes each str it is given.
        return b"%sp:%d" % (self.prefix_bytes, post_id)

    # -- writes ------------------------------------------------------------------------------

    async def create_user(self, handle: str) -> int:
        user_id = await self.workers.next_id()
        async with db.transaction(self.pool) as conn:
            made = await store.create_user(
                conn, user_id=user_id, handle=handle, now=datetime.now(UTC)
            )
        if made < 0:
            raise Taken(f"handle: {handle!r} is taken")
        return user_id

    async def _known(self, pairs: dict[str, int]) -> None:
        async with self.pool.connection() as conn:
            found = await store.existing(conn, list(pairs.values()))
        for name, user in pairs.items():
            if user not in found:
                raise NotFound(f"{name}: no user {user}")

    async def follow(self, user: int, followee: int) -> bool:
        await self._known({"user": user, "followee": followee})
        async with db.transaction(self.pool) as conn:
            count = await store.follow(
                conn, follower=user, followee=followee, now=datetime.now(UTC)
            )
            recent = (
                await store.recent_ids(
                    conn, author=followee, before=None, limit=self.spec.timeline_size
                )
                if count is not None and count <= self.spec.hot_threshold
                else []
            )
        if count is None:
            return False
        with _quiet():
            # Their posts join this timeline now (or their marker, if hot), not only the
            # next ones; ZADD is idempotent, so a fan-out landing at the same time is harmless.
            hot = count > self.spec.hot_threshold
            adds = (
                [timelines.hot(followee)] if hot else [timelines.post(i, followee) for i in recent]
            )
            stale = await self.client.zrangebylex(
                self.tl(user), b"[" + timelines.UNFOLLOWED + _be(followee),
                b"[" + timelines.UNFOLLOWED + _be(followee) + b"\xff" * 8,
            )  # fmt: skip
            await self.scripts["APPLY"](
                keys=[self.tl(user)], args=[self.spec.timeline_size, len(adds), *adds, *stale]
            )
            if count == self.spec.hot_threshold + 1:  # just became hot: tell the others
                await self.fanout.enqueue([Task("hot", followee)])
        return True

    async def unfollow(self, user: int, followee: int) -> bool:
        await self._known({"user": user, "followee": followee})
        async with db.transaction(self.pool) as conn:
            count = await store.unfollow(conn, follower=user, followee=followee)
        if count is None:
            return False
        marker = timelines.unfollowed(followee, time.time_ns() // 1_000_000)
        try:
            await self.scripts["UNFOLLOW"](keys=[self.tl(user)], args=[_be(followee), marker])
        except RedisError:
            # The timeline cannot be edited: drop it, so that it is rebuilt without them.
            with _quiet():
                await self.client.delete(self.tl(user))
        if count == self.spec.hot_threshold:  # just became cold: fan its posts out again
            with _quiet():
                await self.fanout.enqueue([Task("cold", followee)])
        return True

    async def create_post(self, user: int, text: str, media_ids: list[int]) -> pb.Post:
        """One PostgreSQL statement (committed before the answer) and one Redis round trip:
        the body, the fan-out task, and the author's own list if Redis holds it."""
        uploads = await self.media.complete(user=user, ids=media_ids) if media_ids else []
        media = [
            {"upload": u.id, "digest": u.digest, "content_type": u.content_type, "size": u.size}
            for u in uploads
        ]
        post_id = await self.workers.next_id()
        async with db.transaction(self.pool) as conn:
            stored = await store.insert_post(
                conn, author=user, post_id=post_id, text=text, media=media
            )
        if not stored:
            raise NotFound(f"user: no user {user}")
        metrics.posts.inc()
        post = _message(store.PostRow(post_id, user, text, media, deleted=False))
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.body(post_id), post.SerializeToString(), ex=BODY_TTL)
                task = Task("post", user, post_id).fields()
                pipe.xadd(self.fanout.streams["small"], task)  # type: ignore[arg-type]
                await self.scripts["APPLY"](
                    keys=[self.ut(user)],
                    args=[self.spec.timeline_size, 1, timelines.post(post_id, user)],
                    client=pipe,
                )
                await pipe.execute()
        except RedisError as exc:
            log.warning("post %d: fan-out not queued yet (%s); the sweep will", post_id, exc)
            return post
        self.fanout.queued.append((user, post_id))
        return post

    async def delete_post(self, user: int, post_id: int) -> None:
        async with db.transaction(self.pool) as conn:
            deleted = await store.delete_post(
                conn, author=user, post_id=post_id, now=datetime.now(UTC)
            )
        if not deleted:
            raise NotFound(f"post: {post_id} is not a post of user {user}")
        # The tombstone hides it on every read at once; the fan-out then removes the id.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.body(post_id), b"", ex=BODY_TTL)
            pipe.zrem(self.ut(user), timelines.post(post_id, user))
            pipe.xadd(self.fanout.streams["small"], Task("delete", user, post_id).fields())  # type: ignore[arg-type]
            await pipe.execute()

    # -- reads -------------------------------------------------------------------------------

    async def materialize(self, key: str, *, user: int, home: bool, why: str) -> None:
        """Builds a timeline (home) or a hot author's post list from PostgreSQL. The
        BUILDING sentinel goes in first, so a fan-out landing meanwhile is kept."""
        await self.client.zadd(key, {timelines.BUILDING: 0})
        await self.client.expire(key, timelines.TTL)
        cap = self.spec.timeline_size
        async with self.pool.connection() as conn:
            if home:
                pairs = await store.home_page(
                    conn, user=user, before=None, limit=cap, threshold=self.spec.hot_threshold
                )
                hot = await store.hot_followees(conn, user=user, threshold=self.spec.hot_threshold)
            else:
                pairs = [
                    (i, user)
                    for i in await store.recent_ids(conn, author=user, before=None, limit=cap)
                ]
                hot = []
        members = [timelines.post(i, a) for i, a in pairs] + [timelines.hot(a) for a in hot]
        await self.scripts["FINISH"](keys=[key], args=[timelines.TTL, *members])
        if home:
            metrics.rebuilt.labels(why).inc()

    async def _read(self, key: str, cursor: int | None, count: int) -> tuple[timelines.Read, int]:
        """The timeline's state and up to `count` posts below `cursor`, and how many posts it
        holds (-1: unknown but fewer than `count`). The first page is ONE command: a
        ZREVRANGEBYLEX from the top passes the sentinels and markers on its way to the newest
        posts. A later page adds the markers' range and a ZCARD in the same round trip."""
        now_ms = time.time_ns() // 1_000_000
        if cursor is None:
            room = count + MARKER_ROOM
            members: Any = await self.client.zrevrangebylex(key, b"+", b"-", 0, room)
            read = timelines.split(members, now_ms=now_ms)
            if len(members) < room or len(read.posts) >= count:
                return read, len(read.posts) if len(members) < room else count
            # More markers than MARKER_ROOM (a user who follows many hot authors).
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrevrangebylex(key, b"+", timelines.TOP)
            pipe.zrevrangebylex(key, timelines.below(cursor), b"-", 0, count)
            pipe.zcard(key)
            above, page, card = await pipe.execute()
        read = timelines.split([*above, *page], now_ms=now_ms)
        return read, int(card) - len(above)

    async def home(self, user: int, cursor: int | None, limit: int) -> tuple[list[bytes], str]:
        """The page's posts, serialized (pb.Post), newest first, and the next cursor."""
        key = self.tl(user)
        spare = limit + SPARE
        for _attempt in range(3):
            read, held = await self._read(key, cursor, spare)
            if read.complete:
                break
            await self._known({"user": user})
            await self.materialize(key, user=user, home=True, why="read")
        else:
            raise RedisError("the timeline could not be built")
        self._note_active(user, key)
        candidates = set(read.posts)
        more = len(read.posts) >= spare  # Redis holds more below this page
        for author in sorted(read.hot):
            merged = await self._author_page(author, cursor, spare)
            candidates.update(merged)
            more = more or len(merged) >= spare
            metrics.hot_merges.inc()
        pairs = sorted((timelines.unpost(m) for m in candidates), reverse=True)
        pairs = [(i, a) for i, a in pairs if a not in read.gone]
        posts = await self._bodies(pairs[:limit], drop_from=key)
        if len(posts) < limit < len(pairs):  # deleted ones dropped: fill from the spare
            posts += await self._bodies(pairs[limit:], drop_from=key)
        if len(posts) < limit and not more and held >= self.spec.timeline_size:
            # Older than Redis keeps: the rest of the page comes from PostgreSQL.
            before = posts[-1][0] if posts else cursor
            async with self.pool.connection() as conn:
                older = await store.home_page(
                    conn, user=user, before=before, limit=limit - len(posts), threshold=None
                )
            posts += await self._bodies(older, drop_from=None)
        posts = posts[:limit]
        cursor_out = str(posts[-1][0]) if len(posts) == limit else ""
        return [raw for _, raw in posts], cursor_out

    def _note_active(self, user: int, key: str) -> None:
        """Notes a reader for users.active_at (the prewarm job's list) at most once an hour
        per server, written in batches by the fan-out loop, and pushes back the expiry of
        their timeline then: no write on the read path."""
        now = time.monotonic()
        if now - self.noted.get(user, -ACTIVE_EVERY) < ACTIVE_EVERY:
            return
        if len(self.noted) > MAX_NOTED:
            self.noted.clear()
        self.noted[user] = now
        self.fanout.active.add(user)
        self.fanout.touched.append(key)

    async def _author_page(self, author: int, cursor: int | None, limit: int) -> list[bytes]:
        key = self.ut(author)
        for _attempt in range(2):
            read, _ = await self._read(key, cursor, limit)
            if read.complete:
                return read.posts
            await self.materialize(key, user=author, home=False, why="author")
        return []

    async def _bodies(
        self, pairs: list[tuple[int, int]], *, drop_from: str | None
    ) -> list[tuple[int, bytes]]:
        """(id, serialized post) of (id, author) pairs, in order, without deleted ones; a
        body Redis lacks is read from PostgreSQL and put back."""
        if not pairs:
            return []
        cached: list[Any] = await self.client.mget([self.body(i) for i, _ in pairs])
        found: dict[int, bytes] = {}
        missing = []
        for (post_id, author), raw in zip(pairs, cached, strict=True):
            if raw is None:
                missing.append((author, post_id))
            else:
                found[post_id] = raw  # b"": a tombstone
        if missing:
            async with self.pool.connection() as conn:
                rows = await store.posts_by_key(conn, missing)
            async with self.client.pipeline(transaction=False) as pipe:
                for row in rows:
                    found[row.id] = b"" if row.deleted else _message(row).SerializeToString()
                    pipe.set(self.body(row.id), found[row.id], ex=BODY_TTL)
                await pipe.execute()
        gone = [timelines.post(i, a) for i, a in pairs if not found.get(i)]
        if gone and drop_from is not None:
            with _quiet():
                await self.client.zrem(drop_from, *gone)
        return [(i, raw) for i, _ in pairs if (raw := found.get(i))]

    async def user_posts(
        self, user: int, cursor: int | None, limit: int
    ) -> tuple[list[pb.Post], str]:
        await self._known({"user": user})
        async with self.pool.connection() as conn:
            rows = await store.user_posts(conn, author=user, before=cursor, limit=limit)
        posts = [_message(r) for r in rows]
        return posts, (str(posts[-1].id) if len(posts) == limit else "")


def _be(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def _message(row: store.PostRow) -> pb.Post:
    return pb.Post(
        id=row.id,
        author=row.author,
        text=row.text,
        media=[
            pb.Media(
                upload=m["upload"],
                digest=m["digest"],
                content_type=m["content_type"],
                size=m["size"],
            )
            for m in row.media
        ],
        created_at=Timestamp(
            seconds=ids.unix_ms(row.id) // 1000, nanos=ids.unix_ms(row.id) % 1000 * 1_000_000
        ),
    )


class _quiet:
    """Redis errors on a best-effort path: logged, not raised (the read path repairs)."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if isinstance(exc, RedisError | OSError):
            log.warning("feed: redis unavailable on a best-effort path (%s)", exc)
            return True
        return False
