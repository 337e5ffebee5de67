"""The Feed server: `hourglass.feed.v1.Feed` over gRPC (with health and reflection), the
fan-out consumers of both lanes (fanout.py), the Snowflake worker id (workerid.py), and
Prometheus metrics (collectors in metrics.py; the `hourglass serve` process serves them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from hourglass import locks
from hourglass.cases import Settings, serving
from hourglass.cases.feed import admin, fanout, media, metrics, spec, store, validation
from hourglass.cases.feed.feed import Feed, NotFound, Taken
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from hourglass.cases.feed.workerid import NoWorkerId, WorkerIds

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Feed"]
T = TypeVar("T")
POOL_SIZE = 48
POOL_WAIT = 5.0
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Service(pb_grpc.FeedServicer):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    async def _call(self, context: Context, work: Callable[[], Awaitable[T]]) -> T:
        """Runs `work`, answering its refusals with the status they mean."""
        code, message = grpc.StatusCode.INTERNAL, ""
        try:
            return await work()
        except validation.Invalid as exc:
            metrics.refused.labels(exc.field.split("[")[0]).inc()
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except (NotFound, media.NotFound) as exc:
            code, message = grpc.StatusCode.NOT_FOUND, str(exc)
        except Taken as exc:
            code, message = grpc.StatusCode.ALREADY_EXISTS, str(exc)
        except media.WrongOffset as exc:
            code, message = grpc.StatusCode.FAILED_PRECONDITION, str(exc)
        except media.NoObjectStore as exc:
            code, message = grpc.StatusCode.FAILED_PRECONDITION, str(exc)
        except NoWorkerId as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
        except store.UNAVAILABLE_ERRORS as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}"
        except (RedisError, OSError) as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, f"redis unavailable: {exc}"
        await context.abort(code, message)
        raise AssertionError("unreachable")  # pragma: no cover

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> pb.User:
        async def work() -> pb.User:
            handle = validation.handle(request)
            return pb.User(id=await self.feed.create_user(handle), handle=handle)

        return await self._call(context, work)

    async def Follow(self, request: pb.FollowRequest, context: Context) -> pb.FollowResponse:
        async def work() -> pb.FollowResponse:
            user, followee = validation.follow(request)
            return pb.FollowResponse(changed=await self.feed.follow(user, followee))

        return await self._call(context, work)

    async def Unfollow(self, request: pb.FollowRequest, context: Context) -> pb.FollowResponse:
        async def work() -> pb.FollowResponse:
            user, followee = validation.follow(request)
            return pb.FollowResponse(changed=await self.feed.unfollow(user, followee))

        return await self._call(context, work)

    async def StartUpload(self, request: pb.StartUploadRequest, context: Context) -> pb.Upload:
        async def work() -> pb.Upload:
            user = validation.user_id(request.user)
            self.feed.media.check_start(request.size, request.content_type)
            await self.feed._known({"user": user})
            upload = await self.feed.workers.next_id()
            await self.feed.media.start(
                user=user, upload_id=upload, size=request.size, content_type=request.content_type
            )
            return pb.Upload(id=upload, size=request.size, content_type=request.content_type)

        return await self._call(context, work)

    async def PutChunk(self, request: pb.PutChunkRequest, context: Context) -> pb.Upload:
        async def work() -> pb.Upload:
            user, upload, offset, data = validation.chunk(request)
            return _upload(
                await self.feed.media.put(user=user, upload_id=upload, offset=offset, data=data)
            )

        return await self._call(context, work)

    async def GetUpload(self, request: pb.GetUploadRequest, context: Context) -> pb.Upload:
        async def work() -> pb.Upload:
            user = validation.user_id(request.user)
            upload = validation.upload_id(request.upload)
            return _upload(await self.feed.media.get(user=user, upload_id=upload))

        return await self._call(context, work)

    async def ReadMedia(self, request: pb.ReadMediaRequest, context: Context) -> pb.MediaChunk:
        async def work() -> pb.MediaChunk:
            user, upload, offset, length = validation.read(request)
            data = await self.feed.media.read(
                user=user, upload_id=upload, offset=offset, length=length
            )
            size = (await self.feed.media.get(user=user, upload_id=upload)).size
            return pb.MediaChunk(data=data, size=size)

        return await self._call(context, work)

    async def CreatePost(self, request: pb.CreatePostRequest, context: Context) -> pb.Post:
        async def work() -> pb.Post:
            user, text, media_ids = validation.post(request)
            return await self.feed.create_post(user, text, media_ids)

        return await self._call(context, work)

    async def DeletePost(
        self, request: pb.DeletePostRequest, context: Context
    ) -> pb.DeletePostResponse:
        async def work() -> pb.DeletePostResponse:
            user = validation.user_id(request.user)
            await self.feed.delete_post(user, validation.post_id(request.post))
            return pb.DeletePostResponse(deleted=True)

        return await self._call(context, work)

    async def GetHomeTimeline(self, request: pb.TimelineRequest, context: Context) -> pb.Timeline:
        async def work() -> pb.Timeline:
            page = validation.page(request)
            raw, cursor = await self.feed.home(page.user, page.cursor, page.limit)
            # The cached bodies are already pb.Post bytes: the reply is made of them in one
            # parse (field 1, length-delimited, each), not one message at a time.
            timeline = pb.Timeline.FromString(b"".join(_field_one(body) for body in raw))
            timeline.next_cursor = cursor
            return timeline

        return await self._call(context, work)

    async def GetUserPosts(self, request: pb.TimelineRequest, context: Context) -> pb.Timeline:
        async def work() -> pb.Timeline:
            page = validation.page(request)
            posts, cursor = await self.feed.user_posts(page.user, page.cursor, page.limit)
            return pb.Timeline(posts=posts, next_cursor=cursor)

        return await self._call(context, work)

    async def Trim(self, request: pb.TrimRequest, context: Context) -> pb.TrimResponse:
        async def work() -> pb.TrimResponse:
            trimmed, purged, expired = await admin.trim(self.feed)
            return pb.TrimResponse(
                timelines_trimmed=trimmed, posts_purged=purged, uploads_expired=expired
            )

        return await self._call(context, work)

    async def Prewarm(self, request: pb.PrewarmRequest, context: Context) -> pb.PrewarmResponse:
        async def work() -> pb.PrewarmResponse:
            built, active = await admin.prewarm(self.feed)
            return pb.PrewarmResponse(timelines_built=built, active_users=active)

        return await self._call(context, work)


def _field_one(body: bytes) -> bytes:
    """`body` as field 1 (length-delimited) of a message: b"\\n" + varint(len) + body."""
    size, head = len(body), bytearray(b"\n")
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + body


def _upload(row: store.UploadRow) -> pb.Upload:
    return pb.Upload(
        id=row.id,
        size=row.size,
        offset=row.received,
        complete=row.digest is not None,
        digest=row.digest or "",
        content_type=row.content_type,
    )


def redis_client(url: str) -> redis.Redis:
    """serving.redis_client's fail-fast client, on a pool that waits for a free connection
    (up to POOL_WAIT seconds) rather than failing: at a thousand reads a second, more calls
    are in flight than connections are worth opening."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT, socket_connect_timeout=1,
        socket_timeout=10, retry=Retry(NoBackoff(), 1),
    )  # fmt: skip
    return redis.Redis(connection_pool=pool)


@dataclass
class Running:
    """A started server: its port (useful when asked for port 0) and how to stop it."""

    feed: Feed
    grpc_server: grpc.aio.Server
    port: int
    etcd: locks.Etcd
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self, grace: float | None = 5) -> None:
        await self.grpc_server.stop(grace)
        self.stopping.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.feed.workers.stop()
        await self.etcd.close()
        await self.feed.pool.close()
        await self.feed.client.aclose()


async def start(
    settings: Settings, *, claim_after: float = fanout.CLAIM_AFTER, consumers: bool = True
) -> Running:
    """Connects, starts serving and the fan-out consumers; returns at once.
    `consumers=False` serves without fan-out consumers (tests run their own).

    Only PostgreSQL must answer to start. The worker id is taken from etcd in the background
    (until then calls that make an id answer UNAVAILABLE), and the fan-out's consumer groups
    are made again by the consumers if Redis does not answer now: a server that waited for
    both before serving kept its callers waiting, or failed to start, whenever etcd or Redis
    was slow just after a restart (etcd electing its leader on a loaded machine)."""
    parsed = spec.parse(settings.spec)
    pool = await store.open_pool(settings.database_url)
    client = redis_client(settings.redis_url)
    prefix = f"hourglass:feed:{settings.schema}:"
    etcd = locks.Etcd(settings.etcd_endpoints)
    workers = WorkerIds(etcd, settings.schema)
    await workers.start(wait=False)
    fan = fanout.Fanout(
        client, pool, prefix=prefix, chunk=parsed.fanout_chunk, threshold=parsed.hot_threshold,
        cap=parsed.timeline_size, claim_after=claim_after,
    )  # fmt: skip
    try:
        await fan.prepare()
    except fanout.ERRORS as exc:
        log.warning("feed %s: fan-out streams not prepared yet (%s)", settings.name, exc)
    media_ = media.Media(
        pool,
        media=media.open_store(settings.artifacts, settings.schema, "media"),
        parts=media.open_store(settings.artifacts, settings.schema, "parts"),
        max_bytes=parsed.max_media_bytes,
        expiry=parsed.upload_expiry,
    )
    feed = Feed(pool=pool, client=client, prefix=prefix, spec=parsed, workers=workers,
                fanout=fan, media=media_)  # fmt: skip
    server, port = await serving.start_grpc(
        settings.listen,
        SERVICE,
        lambda grpc_server: pb_grpc.add_FeedServicer_to_server(Service(feed), grpc_server),
        metrics.latency,
    )
    running = Running(feed, server, port, etcd)
    if consumers:
        for lane in ("small", "big"):
            running.tasks.append(
                asyncio.create_task(fan.run(lane, running.stopping), name=f"fan-out {lane}")
            )
    log.info(
        "hourglass feed %s serving gRPC on port %d (schema %s)",
        settings.name, port, settings.schema,
        extra={"resource": settings.name, "grpc_port": port, "schema": settings.schema},
    )  # fmt: skip
    return running


async def serve(settings: Settings, stop: Any) -> None:
    """Serves until `stop` (an asyncio.Event) is set."""
    running = await start(settings)
    try:
        await stop.wait()
    finally:
        log.info("hourglass feed %s stopping", settings.name)
        await running.stop()
