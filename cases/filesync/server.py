"""The FileSync server: `hourglass.filesync.v1.FileSync` over gRPC (with health and
reflection), the HTTP face for downloads and share links (http.py), and Prometheus metrics
(collectors in metrics.py; the `hourglass serve` process serves them). One process holds a
LISTEN connection, so a commit on any replica wakes the watchers on every replica."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Settings, serving
from hourglass.cases.filesync import blobs, collector, metrics, spec, store, validation
from hourglass.cases.filesync.files import Denied, Files, NoObjectStore, NotFound, Result
from hourglass.cases.filesync.http import HttpFace
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc
from hourglass.clock import Clock, SystemClock
from hourglass.store import db

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["FileSync"]
T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def change(v: store.Version) -> pb.Change:
    return pb.Change(
        path=v.path, version=v.version, cursor=v.cursor, deleted=v.deleted, size=v.size,
        digest=v.digest, chunks=v.chunks, device=v.device, user=v.user,
        created_at=_stamp(v.created_at),
    )  # fmt: skip


def _result(r: Result) -> pb.CommitVersionResponse:
    return pb.CommitVersionResponse(committed=r.committed, version=r.version, cursor=r.cursor)


def token_of(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


async def answer(context: Context, work: Callable[[], Awaitable[T]]) -> T:
    """Runs `work`, turning the service's refusals into gRPC status codes."""
    try:
        return await work()
    except validation.Invalid as exc:
        metrics.refused.labels(exc.field.split("[")[0].split(".")[0]).inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except Denied as exc:
        code = grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated else None
        await context.abort(code or grpc.StatusCode.PERMISSION_DENIED, str(exc))
    except NotFound as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except NoObjectStore as exc:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except store.UNAVAILABLE_ERRORS as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
    raise AssertionError("unreachable")


class Service(pb_grpc.FileSyncServicer):
    def __init__(self, files: Files) -> None:
        self.files = files

    async def _member(self, context: Context, workspace: str, need: str) -> store.Member:
        validation.workspace(workspace)
        return await self.files.authenticate(token_of(context), workspace, need)

    async def CreateWorkspace(
        self, request: pb.CreateWorkspaceRequest, context: Context
    ) -> pb.CreateWorkspaceResponse:
        async def work() -> pb.CreateWorkspaceResponse:
            name = validation.workspace(request.workspace)
            token = await self.files.create_workspace(name, validation.user(request.user))
            return pb.CreateWorkspaceResponse(token=token)

        return await answer(context, work)

    async def AddMember(
        self, request: pb.AddMemberRequest, context: Context
    ) -> pb.AddMemberResponse:
        async def work() -> pb.AddMemberResponse:
            user = validation.user(request.user)
            access = validation.access(request.access)
            owner = await self._member(context, request.workspace, "owner")
            return pb.AddMemberResponse(token=await self.files.add_member(owner, user, access))

        return await answer(context, work)

    async def HaveChunks(
        self, request: pb.HaveChunksRequest, context: Context
    ) -> pb.HaveChunksResponse:
        async def work() -> pb.HaveChunksResponse:
            digests = validation.digests(request.digests, "digests")
            member = await self._member(context, request.workspace, "write")
            return pb.HaveChunksResponse(missing=await self.files.have_chunks(member, digests))

        return await answer(context, work)

    async def PutChunk(self, request: pb.PutChunkRequest, context: Context) -> pb.PutChunkResponse:
        async def work() -> pb.PutChunkResponse:
            chunks = validation.chunks(
                [(c.digest, c.data) for c in request.chunks],
                max_chunk=self.files.spec.max_chunk_bytes,
            )
            member = await self._member(context, request.workspace, "write")
            return pb.PutChunkResponse(stored=await self.files.put_chunks(member, chunks))

        return await answer(context, work)

    async def CommitVersion(
        self, request: pb.CommitVersionRequest, context: Context
    ) -> pb.CommitVersionResponse:
        async def work() -> pb.CommitVersionResponse:
            item = _commit_in(request)
            member = await self._member(context, request.workspace, "write")
            return _result((await self.files.commit(member, [item]))[0])

        return await answer(context, work)

    async def CommitVersions(
        self, request: pb.CommitVersionsRequest, context: Context
    ) -> pb.CommitVersionsResponse:
        async def work() -> pb.CommitVersionsResponse:
            if not request.commits or len(request.commits) > validation.MAX_COMMITS:
                raise validation.Invalid("commits", f"1 to {validation.MAX_COMMITS} commits")
            workspace = request.commits[0].workspace
            items = []
            for i, commit in enumerate(request.commits):
                if commit.workspace != workspace:
                    raise validation.Invalid(f"commits[{i}].workspace", "one workspace per call")
                items.append(_commit_in(commit, prefix=f"commits[{i}]."))
            member = await self._member(context, workspace, "write")
            results = await self.files.commit(member, items)
            return pb.CommitVersionsResponse(results=[_result(r) for r in results])

        return await answer(context, work)

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.CommitVersionResponse:
        async def work() -> pb.CommitVersionResponse:
            path = validation.path(request.path)
            base = validation.version(request.base_version, "base_version")
            device = validation.device(request.device)
            member = await self._member(context, request.workspace, "write")
            return _result(await self.files.delete(member, path, base, device))

        return await answer(context, work)

    async def Restore(
        self, request: pb.RestoreRequest, context: Context
    ) -> pb.CommitVersionResponse:
        async def work() -> pb.CommitVersionResponse:
            path = validation.path(request.path)
            number = validation.version(request.version, "version", zero=False)
            device = validation.device(request.device)
            member = await self._member(context, request.workspace, "write")
            return _result(await self.files.restore(member, path, number, device))

        return await answer(context, work)

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> pb.ListChangesResponse:
        async def work() -> pb.ListChangesResponse:
            cursor = validation.cursor(request.cursor)
            limit = validation.limit(request.limit)
            member = await self._member(context, request.workspace, "read")
            found, cursor, more = await self.files.changes(member, cursor, limit)
            return pb.ListChangesResponse(
                changes=[change(v) for v in found], cursor=cursor, more=more
            )

        return await answer(context, work)

    async def WatchChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> AsyncIterator[pb.ListChangesResponse]:
        async def opened() -> tuple[store.Member, int, int]:
            cursor = validation.cursor(request.cursor)
            limit = validation.limit(request.limit)
            return await self._member(context, request.workspace, "read"), cursor, limit

        member, cursor, limit = await answer(context, opened)
        metrics.watchers.inc()
        with contextlib.suppress(*store.UNAVAILABLE_ERRORS):
            async for found, after, more in self.files.watch(member, cursor, limit):
                yield pb.ListChangesResponse(
                    changes=[change(v) for v in found], cursor=after, more=more
                )
        await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")

    async def Download(
        self, request: pb.DownloadRequest, context: Context
    ) -> AsyncIterator[pb.DownloadResponse]:
        async def opened() -> store.Version:
            path = validation.path(request.path)
            number = validation.version(request.version, "version")
            member = await self._member(context, request.workspace, "read")
            found = await self.files.head(member, path, number)
            if found is None or found.deleted:
                raise NotFound(f"path: {path!r} has no version {number or 'now'}")
            self.files._store()
            return found

        version = await answer(context, opened)
        async for data in self.files.download(version):
            yield pb.DownloadResponse(data=data)

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Context
    ) -> pb.ListVersionsResponse:
        async def work() -> pb.ListVersionsResponse:
            path = validation.path(request.path)
            member = await self._member(context, request.workspace, "read")
            found = await self.files.versions(member, path)
            if not found:
                raise NotFound(f"path: {path!r} has no versions")
            return pb.ListVersionsResponse(versions=[change(v) for v in found])

        return await answer(context, work)

    async def CreateShareLink(
        self, request: pb.CreateShareLinkRequest, context: Context
    ) -> pb.CreateShareLinkResponse:
        async def work() -> pb.CreateShareLinkResponse:
            path = validation.path(request.path)
            number = validation.version(request.version, "version")
            ttl = validation.expires_in(request.expires_in, most=self.files.spec.share_max_ttl)
            member = await self._member(context, request.workspace, "read")
            token, expires_at = await self.files.share(member, path, number, ttl)
            base = self.files.spec.base_url
            return pb.CreateShareLinkResponse(
                path=f"/s/{token}",
                url=f"{base}/s/{token}" if base else "",
                expires_at=_stamp(expires_at),
            )

        return await answer(context, work)

    async def CollectGarbage(
        self, request: pb.CollectGarbageRequest, context: Context
    ) -> pb.CollectGarbageResponse:
        async def work() -> pb.CollectGarbageResponse:
            done = await collector.collect(self.files)
            return pb.CollectGarbageResponse(
                chunks_forgotten=done.forgotten, objects_deleted=done.deleted
            )

        return await answer(context, work)

    async def EnforceRetention(
        self, request: pb.EnforceRetentionRequest, context: Context
    ) -> pb.EnforceRetentionResponse:
        async def work() -> pb.EnforceRetentionResponse:
            deleted = await self.files.enforce_retention()
            metrics.retained.inc(deleted)
            return pb.EnforceRetentionResponse(versions_deleted=deleted)

        return await answer(context, work)

    async def ExpireShareLinks(
        self, request: pb.ExpireShareLinksRequest, context: Context
    ) -> pb.ExpireShareLinksResponse:
        async def work() -> pb.ExpireShareLinksResponse:
            return pb.ExpireShareLinksResponse(links_deleted=await self.files.expire_shares())

        return await answer(context, work)


def _commit_in(request: pb.CommitVersionRequest, prefix: str = "") -> validation.CommitIn:
    return validation.commit(
        path_=request.path, base=request.base_version, chunk_list=request.chunks,
        file_digest=request.digest, device_=request.device, prefix=prefix,
    )  # fmt: skip


@dataclass
class Running:
    """A started server: its ports (useful when asked for port 0) and how to stop it."""

    files: Files
    grpc_server: grpc.aio.Server
    port: int
    http: HttpFace | None
    wakeups: db.Wakeups

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    async def stop(self, grace: float | None = 5) -> None:
        await self.grpc_server.stop(grace)
        if self.http is not None:
            await self.http.stop()
        await self.wakeups.stop()
        await self.files.pool.close()
        if self.files.chunk_pool is not None:
            await self.files.chunk_pool.close()


async def start(settings: Settings, *, clock: Clock | None = None) -> Running:
    """Connects and starts serving; returns at once. The migrations are already applied into
    `settings.schema`, and `settings.database_url` sees only that schema."""
    parsed = spec.parse(settings.spec)
    pool = await store.open_pool(settings.database_url)
    files = Files(
        pool=pool,
        spec=parsed,
        clock=clock or SystemClock(),
        blob_store=blobs.open_blobs(settings.artifacts, settings.schema),
        chunk_pool=await store.open_pool(settings.database_url, check_idle_after=math.inf),
    )
    wakeups = db.Wakeups(settings.database_url, store.CHANNEL, on_payload=files.notified)
    await wakeups.start()
    server, port = await serving.start_grpc(
        settings.listen,
        SERVICE,
        lambda grpc_server: pb_grpc.add_FileSyncServicer_to_server(Service(files), grpc_server),
        metrics.latency,
    )
    http = None
    if settings.http_listen:
        http = await HttpFace(files).start(settings.http_listen)
    log.info(
        "hourglass filesync %s serving gRPC on port %d%s (schema %s)",
        settings.name,
        port,
        f", HTTP on port {http.port}" if http else "",
        settings.schema,
        extra={"resource": settings.name, "grpc_port": port, "schema": settings.schema},
    )
    return Running(files, server, port, http, wakeups)


async def serve(settings: Settings, stop: Any) -> None:
    """Serves until `stop` (an asyncio.Event) is set."""
    running = await start(settings)
    try:
        await stop.wait()
    finally:
        log.info("hourglass filesync %s stopping", settings.name)
        await running.stop()
