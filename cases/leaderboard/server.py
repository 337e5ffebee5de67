"""The Leaderboard server: `hourglass.leaderboard.v1.Leaderboard` over gRPC (with health and
reflection, so grpcurl and friends need no .proto files), the HTTP/JSON face for browsers and
curl (cases/leaderboard/http.py), and Prometheus metrics (collectors in metrics.py; the
`hourglass serve` process serves them)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio as redis
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Settings, serving
from hourglass.cases.leaderboard import board as boards
from hourglass.cases.leaderboard import buckets, metrics, spec, store, validation
from hourglass.cases.leaderboard.cache import Cache
from hourglass.cases.leaderboard.http import HttpFace
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Leaderboard"]
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


# Kept under its old name: tests and the bench import it from here.
redis_client = serving.redis_client


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
    server, port = await serving.start_grpc(
        settings.listen,
        SERVICE,
        lambda grpc_server: pb_grpc.add_LeaderboardServicer_to_server(Service(board), grpc_server),
        metrics.latency,
    )
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
