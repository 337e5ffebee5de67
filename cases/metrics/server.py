"""The MetricsPipeline's servers, by role: `hourglass serve metrics --role server|consumer`.

- server: gRPC `hourglass.metrics.v1.Metrics` (with health and reflection) and HTTP (the
  InfluxDB line protocol push, the Prometheus-compatible query API, /healthz), with the admin
  RPCs that the ScheduledJobs call;
- consumer: the stream processing (consumer.py), broker -> column files;
- "" (as `hourglass dev` runs it): both in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc

from hourglass.cases import Settings, serving
from hourglass.cases.metrics import metrics, spec, store, validation
from hourglass.cases.metrics.broker import Broker
from hourglass.cases.metrics.consumer import ERRORS, Consumer
from hourglass.cases.metrics.files import Files
from hourglass.cases.metrics.http import HttpFace
from hourglass.cases.metrics.pipeline import Backlogged, Pipeline
from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc
from hourglass.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Metrics"]
# Refusals the faces answer with a status: bad input, or a part away (retry).
REFUSED: tuple[type[Exception], ...] = (validation.Invalid, Backlogged, *ERRORS)
ROLES = ("", "server", "consumer")


def _labels(found: dict[str, str]) -> list[pb.Label]:
    return [pb.Label(name=k, value=v) for k, v in sorted(found.items())]


class Service(pb_grpc.MetricsServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        if isinstance(exc, validation.Invalid):
            metrics.refused.labels(exc.field.split("[")[0].split(".")[0]).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, Backlogged):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        log.warning("metrics: unavailable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"unavailable, retry: {exc}")

    async def SendMetrics(
        self, request: pb.SendMetricsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendMetricsResponse:
        try:
            accepted = await self.pipeline.send_request(request)
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.SendMetricsResponse(accepted=accepted)

    async def SendLogs(
        self, request: pb.SendLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendLogsResponse:
        streams = [
            ([(lb.name, lb.value) for lb in s.labels], s.timestamps_ns, s.lines)
            for s in request.streams
        ]
        try:
            accepted = await self.pipeline.send_logs(streams)
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.SendLogsResponse(accepted=accepted)

    async def FetchDataset(
        self, request: pb.FetchDatasetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchDatasetResponse:
        try:
            found, resolution = await self.pipeline.fetch(
                selector=request.selector,
                series_id=request.series_id,
                start=request.start_ms,
                end=request.end_ms,
                step=request.step_ms,
            )
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.FetchDatasetResponse(
            datasets=[
                pb.Dataset(
                    series_id=d.series_id,
                    labels=_labels(d.labels),
                    timestamps_ms=d.timestamps,
                    values=d.values,
                    min=d.min,
                    max=d.max,
                    count=d.count,
                )
                for d in found
            ],
            resolution_s=resolution,
        )

    async def FetchLogs(
        self, request: pb.FetchLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchLogsResponse:
        try:
            found = await self.pipeline.fetch_logs(
                selector=request.selector,
                start_ns=request.start_ns,
                end_ns=request.end_ns,
                limit=request.limit,
            )
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.FetchLogsResponse(
            streams=[
                pb.LogStream(labels=_labels(labels), timestamps_ns=stamps, lines=lines)
                for _, labels, stamps, lines in found
            ]
        )

    async def Compact(
        self, request: pb.CompactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CompactResponse:
        try:
            done = await self.pipeline.compact()
        except ERRORS as exc:
            await self._refuse(context, exc)
        return pb.CompactResponse(
            partitions=done.partitions,
            files_merged=done.files,
            duplicates_dropped=done.rows_dropped,
        )

    async def Downsample(
        self, request: pb.DownsampleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DownsampleResponse:
        try:
            written = await self.pipeline.downsample()
        except ERRORS as exc:
            await self._refuse(context, exc)
        return pb.DownsampleResponse(rollups_written=written)

    async def EnforceRetention(
        self, request: pb.EnforceRetentionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnforceRetentionResponse:
        try:
            deleted, forgotten = await self.pipeline.retention()
        except ERRORS as exc:
            await self._refuse(context, exc)
        return pb.EnforceRetentionResponse(files_deleted=deleted, series_forgotten=forgotten)


@dataclass
class Running:
    pipeline: Pipeline
    grpc_server: grpc.aio.Server | None
    port: int
    http: HttpFace | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    async def stop(self, grace: float | None = 5) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        if self.http is not None:
            await self.http.stop()
        self.stopping.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pipeline.pool.close()
        await self.pipeline.broker.client.aclose()


async def start(settings: Settings, *, clock: Clock | None = None) -> Running:
    """Connects and starts serving the settings' role; returns at once."""
    if settings.role not in ROLES:
        raise ValueError(f"--role: {settings.role!r} is not one of server, consumer (or empty)")
    parsed = spec.parse(settings.spec)
    files = Files(settings.artifacts, settings.schema)
    pool = await store.open_pool(settings.database_url, max_size=16)
    broker = Broker(
        serving.redis_client(settings.redis_url), settings.schema, claim_after=parsed.claim_after
    )
    writer = Consumer(broker=broker, pool=pool, files=files, shards=parsed.shards)
    pipeline = Pipeline(parsed, broker, pool, files, clock or SystemClock(), writer)
    running = Running(pipeline, None, 0, None)
    if settings.role in ("", "server"):
        running.grpc_server, running.port = await serving.start_grpc(
            settings.listen,
            SERVICE,
            lambda server: pb_grpc.add_MetricsServicer_to_server(Service(pipeline), server),
            metrics.latency,
        )
        if settings.http_listen:
            running.http = await HttpFace(pipeline).start(settings.http_listen)
    if settings.role in ("", "consumer"):
        running.tasks.append(
            asyncio.create_task(writer.run(running.stopping), name="metrics-consumer")
        )
    log.info(
        "hourglass metrics %s serving%s%s%s (schema %s)",
        settings.name,
        f" gRPC on port {running.port}" if running.grpc_server else "",
        f" HTTP on port {running.http.port}" if running.http else "",
        " consuming" if running.tasks else "",
        settings.schema,
        extra={"resource": settings.name, "schema": settings.schema, "role": settings.role},
    )
    return running


async def serve(settings: Settings, stop: Any) -> None:
    """Serves until `stop` (an asyncio.Event) is set."""
    running = await start(settings)
    try:
        await stop.wait()
    finally:
        log.info("hourglass metrics %s stopping", settings.name)
        await running.stop()
