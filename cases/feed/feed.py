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
from datetime import UTC, datetime, timedelta
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

    def __post_init__(self) -> None:
        for name in ("UNFOLLOW", "FINISH", "TRIM", "APPLY"):
            self.scripts[name] = self.client.register_script(getattr(timelines, name))

    def tl(self, user: int) -> str:
        return f"{self.prefix}tl:{user}"

    def ut(self, user: int) -> str:
        return f"{self.prefix}ut:{user}"

    def body(self, post_id: int) -> str:
        return f"{self.prefix}p:{post_id}"

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

    async def home(self, user: int, cursor: int | None, limit: int) -> tuple[list[pb.Post], str]:
        key = self.tl(user)
        for _attempt in range(3):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zscore(key, timelines.COMPLETE)
                pipe.zrangebylex(key, b"[\xfe", b"+")
                pipe.zrevrangebylex(key, timelines.below(cursor), timelines.BOTTOM, 0, limit * 2)
                pipe.expire(key, timelines.TTL)
                pipe.set(f"{self.prefix}act:{user}", b"1", nx=True, ex=ACTIVE_EVERY)
                complete, top, page, _, fresh = await pipe.execute()
            if fresh:
                async with self.pool.connection() as conn:
                    await store.touch_active(conn, user=user, now=datetime.now(UTC))
            if complete is not None:
                break
            await self._known({"user": user})
            await self.materialize(key, user=user, home=True, why="read")
        else:
            raise RedisError("the timeline could not be built")
        now_ms = time.time_ns() // 1_000_000
        hot, gone = timelines.markers(top, now_ms=now_ms)
        candidates = {m for m in page if len(m) == timelines.POST_BYTES}
        full = len(page) >= limit * 2
        for author in sorted(hot):
            merged = await self._author_page(author, cursor, limit)
            candidates.update(merged)
            full = full or len(merged) >= limit
            metrics.hot_merges.inc()
        pairs = sorted((timelines.unpost(m) for m in candidates), reverse=True)
        pairs = [(i, a) for i, a in pairs if a not in gone]
        posts = await self._bodies(pairs[:limit], drop_from=key)
        if len(posts) < limit < len(pairs):  # deleted ones dropped: fill from the spare
            posts += await self._bodies(pairs[limit:], drop_from=key)
        if len(posts) < limit and not full and await self._trimmed(key):
            # Older than Redis keeps: the rest of the page comes from PostgreSQL.
            before = posts[-1].id if posts else cursor
            async with self.pool.connection() as conn:
                older = await store.home_page(
                    conn, user=user, before=before, limit=limit - len(posts), threshold=None
                )
            posts += await self._bodies(older, drop_from=None)
        posts = posts[:limit]
        return posts, (str(posts[-1].id) if len(posts) == limit else "")

    async def _trimmed(self, key: str) -> bool:
        """Whether the timeline holds as many posts as it keeps (so older ones may exist)."""
        count = await self.client.zlexcount(key, b"(\x00\x00", b"(\xfe")
        return int(count) >= self.spec.timeline_size

    async def _author_page(self, author: int, cursor: int | None, limit: int) -> list[bytes]:
        key = self.ut(author)
        for _attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zscore(key, timelines.COMPLETE)
                pipe.zrevrangebylex(key, timelines.below(cursor), timelines.BOTTOM, 0, limit)
                complete, page = await pipe.execute()
            if complete is not None:
                return [m for m in page if len(m) == timelines.POST_BYTES]
            await self.materialize(key, user=author, home=False, why="author")
        return []

    async def _bodies(
        self, pairs: list[tuple[int, int]], *, drop_from: str | None
    ) -> list[pb.Post]:
        """The posts of (id, author) pairs, in order, without deleted ones."""
        if not pairs:
            return []
        cached = await self.client.mget([self.body(i) for i, _ in pairs])
        found: dict[int, pb.Post | None] = {}
        missing = []
        for (post_id, author), raw in zip(pairs, cached, strict=True):
            if raw is None:
                missing.append((author, post_id))
            elif raw == b"":
                found[post_id] = None
            else:
                found[post_id] = pb.Post.FromString(raw)  # type: ignore[arg-type]
        if missing:
            async with self.pool.connection() as conn:
                rows = await store.posts_by_key(conn, missing)
            async with self.client.pipeline(transaction=False) as pipe:
                for row in rows:
                    message = None if row.deleted else _message(row)
                    found[row.id] = message
                    pipe.set(
                        self.body(row.id),
                        message.SerializeToString() if message else b"",
                        ex=BODY_TTL,
                    )
                await pipe.execute()
        gone = [timelines.post(i, a) for i, a in pairs if found.get(i) is None]
        if gone and drop_from is not None:
            with _quiet():
                await self.client.zrem(drop_from, *gone)
        return [message for i, _ in pairs if (message := found.get(i)) is not None]

    async def user_posts(
        self, user: int, cursor: int | None, limit: int
    ) -> tuple[list[pb.Post], str]:
        await self._known({"user": user})
        async with self.pool.connection() as conn:
            rows = await store.user_posts(conn, author=user, before=cursor, limit=limit)
        posts = [_message(r) for r in rows]
        return posts, (str(posts[-1].id) if len(posts) == limit else "")

    # -- the ScheduledJobs' admin calls ------------------------------------------------------

    async def trim(self) -> tuple[int, int, int]:
        """Caps every home timeline and drops stale unfollow markers (SCAN, so Redis keeps
        serving), purges posts deleted over BODY_TTL ago, and expires abandoned uploads."""
        trimmed = 0
        now_ms = time.time_ns() // 1_000_000
        async for key in self.client.scan_iter(match=f"{self.prefix}tl:*", count=500):
            removed = await self.scripts["TRIM"](keys=[key], args=[self.spec.timeline_size])
            markers: Any = await self.client.zrangebylex(key, b"[\xfe", b"(\xff")
            stale = timelines.stale_markers(markers, now_ms=now_ms)
            if stale:
                await self.client.zrem(key, *stale)
            trimmed += 1 if removed or stale else 0
        async with db.transaction(self.pool) as conn:
            purged = await store.purge_deleted(
                conn, before=datetime.now(UTC) - timedelta(seconds=BODY_TTL)
            )
        expired = await self.media.expire()
        return trimmed, purged, expired

    async def prewarm(self) -> tuple[int, int]:
        """Builds the timelines of the users active in the last day that Redis lacks."""
        since = datetime.now(UTC) - timedelta(days=1)
        built = active = after = 0
        while True:
            async with self.pool.connection() as conn:
                users = await store.active_since(conn, since, after=after, limit=500)
            if not users:
                return built, active
            active += len(users)
            after = users[-1]
            async with self.client.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.zscore(self.tl(user), timelines.COMPLETE)
                present = await pipe.execute()
            for user, score in zip(users, present, strict=True):
                if score is None:
                    await self.materialize(self.tl(user), user=user, home=True, why="prewarm")
                    built += 1


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
