"""The UrlShortener's servers: the write service (`hourglass.shortener.v1.Shortener` over
gRPC, with health and reflection, and the visit drainer) and the read service (HTTP,
http.py), run by role: `hourglass serve shortener --role write|read`, each its own
Deployment, scaled apart; `hourglass dev` runs both in one process (role "")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Settings, serving
from hourglass.cases.shortener import blobs, metrics, spec, store, validation, visits
from hourglass.cases.shortener.cache import Cache, Resolver
from hourglass.cases.shortener.http import HttpFace
from hourglass.cases.shortener.links import NoObjectStore, Shortener, Taken
from hourglass.cases.shortener.objects import CACHE_PASSWORD_ENV, cache_urls
from hourglass.cases.shortener.v1 import shortener_pb2 as pb
from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc
from hourglass.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Shortener"]
ROLES = ("", "read", "write")
UNAVAILABLE_ERRORS = store.UNAVAILABLE_ERRORS
# Refusals the faces answer with a status: bad input, or PostgreSQL away (retry).
REFUSED: tuple[type[Exception], ...] = (validation.Invalid, *UNAVAILABLE_ERRORS)


def _stamp(moment: datetime | None) -> Timestamp | None:
    return None if moment is None else Timestamp(seconds=int(moment.timestamp()))


class Service(pb_grpc.ShortenerServicer):
    def __init__(self, shortener: Shortener, own_hosts: tuple[str, ...]) -> None:
        self.shortener = shortener
        self.own_hosts = own_hosts

    def _now(self) -> int:
        return int(self.shortener.now().timestamp())

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        if isinstance(exc, validation.Invalid):
            metrics.refused.labels(exc.field.split("[")[0].split(".")[0]).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")

    async def Shorten(
        self, request: pb.ShortenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ShortenResponse:
        try:
            link = validation.link(
                request, self.shortener.spec, now=self._now(), own=self.own_hosts
            )
            key = await self.shortener.shorten(link)
        except Taken as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"alias: {exc} is taken")
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.ShortenResponse(
            key=key,
            short_url=self.shortener.short_url(key),
            delete_token=self.shortener.delete_token(key),
        )

    async def CreatePaste(
        self, request: pb.CreatePasteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreatePasteResponse:
        try:
            paste = validation.paste(request, self.shortener.spec, now=self._now())
            key, digest = await self.shortener.paste(paste)
        except NoObjectStore:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "pastes need an object store: start the server with --artifacts",
            )
        except REFUSED as exc:
            await self._refuse(context, exc)
        return pb.CreatePasteResponse(
            key=key,
            short_url=self.shortener.short_url(f"p/{key}"),
            size=len(paste.body),
            digest=digest,
            delete_token=self.shortener.delete_token(key),
        )

    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteResponse:
        try:
            key = validation.key(request.key)
            if not request.delete_token:
                raise validation.Invalid(
                    "delete_token", "is required: the one that made the key was answered it"
                )
            if not self.shortener.may_delete(key, request.delete_token):
                # Whether or not the key exists: a refusal tells nothing about other keys.
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "delete_token: is not the one answered to the call that made this key",
                )
            deleted = await self.shortener.delete(key)
        except REFUSED as exc:
            await self._refuse(context, exc)
        if deleted is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"key: {request.key!r} is unknown")
        return pb.DeleteResponse(deleted=bool(deleted))

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StatsResponse:
        try:
            found = await self.shortener.stats(validation.key(request.key))
        except REFUSED as exc:
            await self._refuse(context, exc)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"key: {request.key!r} is unknown")
        assert found is not None
        entry, counts = found

        def counted(items: list[tuple[str, int]]) -> list[pb.Count]:
            return [pb.Count(name=name, count=n) for name, n in items]

        return pb.StatsResponse(
            key=entry.key,
            kind=entry.kind,
            url=entry.url or "",
            created_at=_stamp(entry.created_at),
            expires_at=_stamp(entry.expires_at),
            max_visits=entry.max_visits or 0,
            total=entry.visits,
            days=counted(counts["day"]),
            referrers=counted(counts["referrer"]),
            agents=counted(counts["agent"]),
        )

    async def Purge(
        self, request: pb.PurgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PurgeResponse:
        try:
            keys_deleted, blobs_deleted = await self.shortener.purge()
        except UNAVAILABLE_ERRORS as exc:
            await self._refuse(context, exc)
        return pb.PurgeResponse(keys_deleted=keys_deleted, blobs_deleted=blobs_deleted)

    async def Rollup(
        self, request: pb.RollupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RollupResponse:
        try:
            rolled, forgotten = await self.shortener.rollup()
        except UNAVAILABLE_ERRORS as exc:
            await self._refuse(context, exc)
        return pb.RollupResponse(rows_rolled=rolled, batches_forgotten=forgotten)


@dataclass
class Running:
    """A started server: its ports (useful when asked for port 0) and how to stop it."""

    shortener: Shortener
    grpc_server: grpc.aio.Server | None
    port: int
    http: HttpFace | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    recorder: visits.Recorder | None = None
    closers: list[Any] = field(default_factory=list)

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    async def stop(self, grace: float | None = 5) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        await self.shortener.writes.close()
        if self.http is not None:
            await self.http.stop()
            filling = list(self.http.resolver.filling)  # cache fills after answers
            await asyncio.wait(filling, timeout=2) if filling else None
        self.stopping.set()
        await asyncio.wait(self.tasks, timeout=5) if self.tasks else None
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.recorder is not None:  # SIGTERM: the visits still in memory go out
            with contextlib.suppress(Exception):
                await self.recorder.flush()
        await self.shortener.pool.close()
        if self.shortener.reads is not None:
            await self.shortener.reads.close()
        for close in self.closers:
            await close()


async def start(
    settings: Settings,
    *,
    clock: Clock | None = None,
    cache: list[str] | None = None,
    claim_after: float = visits.CLAIM_AFTER,
) -> Running:
    """Connects and starts serving the settings' role; returns at once. `cache` overrides the
    cache shards' Redis URLs (default: the spec's cacheShards in a cluster, with the password
    in CACHE_PASSWORD_ENV; the platform Redis outside one)."""
    if settings.role not in ROLES:
        raise ValueError(f"--role: {settings.role!r} is not one of read, write (or empty: both)")
    parsed = spec.parse(settings.spec)
    password = os.environ.get(CACHE_PASSWORD_ENV, "")
    urls = (
        cache
        or cache_urls(settings.name, settings.namespace, parsed, password)
        or [settings.redis_url]
    )
    shards = {url: serving.redis_client(url) for url in urls}
    platform = serving.redis_client(settings.redis_url)
    prefix = f"hourglass:url:{settings.schema}:"
    # Connections idle a second are checked before a loan; a busy write path skips that
    # round trip (a group commit's batch waits on it).
    pool = await store.open_pool(settings.database_url, max_size=16, check_idle_after=1.0)
    shortener = Shortener(
        pool=pool,
        spec=parsed,
        clock=clock or SystemClock(),
        cache=Cache(shards, prefix=prefix, ttl=parsed.cache_ttl, negative_ttl=parsed.negative_ttl),
        blob_store=blobs.open_blobs(settings.artifacts, settings.schema),
    )
    if settings.role in ("", "read"):
        shortener.reads = await store.open_pool(
            settings.database_url, max_size=8, check_idle_after=math.inf
        )
    await shortener.prepare()
    assert shortener.permutation is not None
    running = Running(shortener, None, 0, None)
    running.closers += [shortener.cache.close, platform.aclose]
    stream = f"{prefix}visits"
    if settings.role in ("", "write"):
        own = validation.own_hosts(parsed, settings.http_listen)
        running.grpc_server, running.port = await serving.start_grpc(
            settings.listen,
            SERVICE,
            lambda server: pb_grpc.add_ShortenerServicer_to_server(Service(shortener, own), server),
            metrics.latency,
        )

        async def exhausted(gone: list[str]) -> None:
            await shortener.forget(gone)

        drainer = visits.Drainer(
            platform, stream, pool, on_exhausted=exhausted, claim_after=claim_after
        )
        running.tasks.append(asyncio.create_task(drainer.run(running.stopping), name="drainer"))
    if settings.role in ("", "read") and settings.http_listen:
        resolver = Resolver(
            shortener.cache,
            find=shortener.find,
            high_water=shortener.high_water,
            permutation=shortener.permutation,
        )
        recorder = visits.Recorder(platform, stream)
        running.recorder = recorder
        face = HttpFace(shortener, resolver, recorder, redirect=parsed.redirect)
        running.http = await face.start(settings.http_listen)
        running.tasks.append(asyncio.create_task(recorder.run(running.stopping), name="visits"))
    log.info(
        "hourglass shortener %s serving%s%s (schema %s, %d cache shard%s)",
        settings.name,
        f" gRPC on port {running.port}" if running.grpc_server else "",
        f" HTTP on port {running.http.port}" if running.http else "",
        settings.schema,
        len(shards),
        "" if len(shards) == 1 else "s",
        extra={"resource": settings.name, "schema": settings.schema, "role": settings.role},
    )
    return running


async def serve(settings: Settings, stop: Any) -> None:
    """Serves until `stop` (an asyncio.Event) is set."""
    running = await start(settings)
    try:
        await stop.wait()
    finally:
        log.info("hourglass shortener %s stopping", settings.name)
        await running.stop()
