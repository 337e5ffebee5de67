"""The Leaderboard server: `hourglass.leaderboard.v1.Leaderboard` over gRPC (with health and
reflection, so grpcurl and friends need no .proto files), the HTTP/JSON face for browsers and
curl (cases/leaderboard/http.py), and Prometheus metrics (collectors in metrics.py; the
`hourglass serve` process serves them)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio as redis
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.backoff import NoBackoff
from redis.retry import Retry

from hourglass.cases import Settings
from hourglass.cases.leaderboard import board as boards
from hourglass.cases.leaderboard import buckets, metrics, spec, store, validation
from hourglass.cases.leaderboard.cache import Cache
from hourglass.cases.leaderboard.http import HttpFace
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Leaderboard"]
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# PostgreSQL going away: the caller may retry (a batch with the same batch_id counts once).
UNAVAILABLE_ERRORS = store.UNAVAILABLE_ERRORS


def _stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


class Service(pb_grpc.LeaderboardServicer):
    def __init__(self, board: boards.Board) -> None:
        self.board = board

    async def RecordEvents(
        self, request: pb.RecordEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordEventsResponse:
        try:
            batch = validation.record(request, now=self.board.now(), horizon=self.board.horizon())
        except validation.Invalid as exc:
            metrics.events.labels("refused").inc(len(request.events))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            result = await self.board.record(batch)
        except boards.Conflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return pb.RecordEventsResponse(recorded=result.recorded, duplicate=result.duplicate)

    async def FetchLeaderboard(
        self, request: pb.FetchLeaderboardRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchLeaderboardResponse:
        try:
            window = validation.fetch(request, smallest=self.board.spec.smallest)
        except validation.Invalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            answer = await self.board.fetch(
                window.event_type, k=window.k, start=window.start, end=window.end
            )
        except UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return pb.FetchLeaderboardResponse(
            entries=[pb.Entry(key=key, count=count) for key, count in answer.entries],
            buckets=answer.buckets,
            start=_stamp(answer.start),
            end=_stamp(answer.end),
        )

    async def Rollup(
        self, request: pb.RollupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RollupResponse:
        try:
            created, marks = await self.board.rollup()
        except UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return pb.RollupResponse(
            buckets_created=created,
            rolled_until={buckets.spell(size): _stamp(until) for size, until in marks.items()},
        )

    async def EnforceRetention(
        self, request: pb.EnforceRetentionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnforceRetentionResponse:
        try:
            deleted, horizon = await self.board.enforce_retention()
        except UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return pb.EnforceRetentionResponse(buckets_deleted=deleted, horizon=_stamp(horizon))


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Measures every Leaderboard call, and answers a request that does not even parse (a
    string that is not UTF-8, bytes cut short) with INVALID_ARGUMENT, not grpcio's INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service, _, name = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE.full_name or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        parse = handler.request_deserializer
        undecodable = object()

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return undecodable

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                if request is undecodable:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"request: not a valid {SERVICE.methods_by_name[name].input_type.name}"
                        " (a string that is not UTF-8, or bytes cut short)",
                    )
                return await inner(request, context)
            finally:
                code = context.code()
                label = code.name if isinstance(code, grpc.StatusCode) else "OK"
                metrics.latency.labels(name, label).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )


@dataclass
class Running:
    """A started server: its ports (useful when asked for port 0) and how to stop it."""

    board: boards.Board
    grpc_server: grpc.aio.Server
    port: int
    http: HttpFace | None
    redis_client: redis.Redis

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    async def stop(self, grace: float | None = 5) -> None:
        await self.grpc_server.stop(grace)
        if self.http is not None:
            await asyncio.to_thread(self.http.stop)
        await self.board.pool.close()
        await self.redis_client.aclose()


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast when Redis is away (the query then answers from PostgreSQL)
    rather than retrying with a backoff while the caller waits."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 1),
    )


async def start(settings: Settings, *, clock: Clock | None = None) -> Running:
    """Connects and starts serving; returns at once.

    `settings` are what `hourglass serve` (or `hourglass dev --case`) made: the migrations are
    already applied into `settings.schema`, and `settings.database_url` sees only that schema.
    The process serves /metrics (the CLI's --metrics-listen); this module only registers its
    collectors (metrics.py) on the default registry."""
    parsed = spec.parse(settings.spec)
    pool = await store.open_pool(settings.database_url)
    client = redis_client(settings.redis_url)
    board = boards.Board(
        pool=pool,
        cache=Cache(client, prefix=f"hourglass:lb:{settings.schema}:"),
        spec=parsed,
        clock=clock or SystemClock(),
    )
    await board.prepare()
    server = grpc.aio.server(interceptors=[Guard()])
    pb_grpc.add_LeaderboardServicer_to_server(Service(board), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE.full_name, HEALTH_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.listen)
    await server.start()
    for name in ("", SERVICE.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    http = None
    if settings.http_listen:
        http = HttpFace(board, asyncio.get_running_loop(), settings.http_listen).start()
    log.info(
        "hourglass leaderboard %s serving gRPC on port %d%s (schema %s)",
        settings.name,
        port,
        f", HTTP on port {http.port}" if http else "",
        settings.schema,
        extra={"resource": settings.name, "grpc_port": port, "schema": settings.schema},
    )
    return Running(board, server, port, http, client)


async def serve(settings: Settings, stop: Any) -> None:
    """Serves until `stop` (an asyncio.Event) is set."""
    running = await start(settings)
    try:
        await stop.wait()
    finally:
        log.info("hourglass leaderboard %s stopping", settings.name)
        await running.stop()
