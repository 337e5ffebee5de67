"""The FileSync service end to end, on a real PostgreSQL and a local object store, with the
server in-process, called over gRPC and HTTP: workspaces and tokens, chunks, optimistic
commits, changes and the watch stream, downloads, versions, share links, bad input, and the
garbage collector racing commits."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.cases.filesync import CASE, chunking
from hourglass.cases.filesync import server as fs_server
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc
from hourglass.cli import serve


class Live:
    def __init__(self, running: fs_server.Running, schema: str, database_url: str) -> None:
        self.running = running
        self.schema = schema
        self.database_url = database_url
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = pb_grpc.FileSyncStub(self.channel)

    async def workspace(self, name: str = "", user: str = "ann") -> tuple[str, Any]:
        name = name or f"w{uuid.uuid4().hex[:8]}"
        made = await self.stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=name, user=user))
        return name, (("authorization", f"Bearer {made.token}"),)

    async def upload(self, ws: str, auth: Any, data: bytes) -> list[str]:
        pieces = chunking.pieces(data)
        missing = await self.stub.HaveChunks(
            pb.HaveChunksRequest(workspace=ws, digests=[p.digest for p in pieces]), metadata=auth
        )
        for p in pieces:
            if p.digest in missing.missing:
                chunk = pb.Chunk(digest=p.digest, data=data[p.offset : p.offset + p.length])
                await self.stub.PutChunk(
                    pb.PutChunkRequest(workspace=ws, chunks=[chunk]), metadata=auth
                )
        return [p.digest for p in pieces]

    async def commit(
        self, ws: str, auth: Any, path: str, data: bytes, base: int
    ) -> pb.CommitVersionResponse:
        chunks = await self.upload(ws, auth, data)
        return await self.stub.CommitVersion(
            pb.CommitVersionRequest(
                workspace=ws, path=path, base_version=base, chunks=chunks,
                digest=hashlib.sha256(data).hexdigest(), device="test",
            ),
            metadata=auth,
        )  # fmt: skip

    async def download(self, ws: str, auth: Any, path: str, version: int = 0) -> bytes:
        stream = self.stub.Download(
            pb.DownloadRequest(workspace=ws, path=path, version=version), metadata=auth
        )
        return b"".join([piece.data async for piece in stream])

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.running.http_port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    async def aget(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.to_thread(self.get, path, **headers)

    def count(self, table: str) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {self.schema}.{table}").fetchone()
            assert row is not None
            return int(row[0])

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(grace=None)


async def start(database_url: str, folder: Path, spec: dict[str, Any]) -> Live:
    chosen = serve.settings(
        CASE, name=f"t{uuid.uuid4().hex[:8]}", namespace="", database_url=database_url,
        redis_url="", etcd_endpoints="", listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        metrics_listen=None, spec=spec, artifacts=str(folder / "objects"),
    )  # fmt: skip
    await serve.migrate_case(CASE, database_url=database_url, schema=chosen.schema)
    return Live(await fs_server.start(chosen), chosen.schema, database_url)


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    server = await start(database_url, tmp_path, {"maxChunkBytes": chunking.LARGEST})
    yield server
    await server.stop()


async def refused(call: Any, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return str(caught.value.details())


async def test_upload_commit_download_versions_restore_delete_and_share(live: Live) -> None:
    ws, auth = await live.workspace()
    data = os.urandom(3 * 1024 * 1024 + 17)
    first = await live.commit(ws, auth, "docs/report.bin", data, 0)
    assert (first.committed, first.version) == (True, 1)
    assert await live.download(ws, auth, "docs/report.bin") == data
    # One byte inserted re-sends only the chunks around it.
    edited = data[:1_000_000] + b"!" + data[1_000_000:]
    pieces = chunking.pieces(edited)
    missing = await live.stub.HaveChunks(
        pb.HaveChunksRequest(workspace=ws, digests=[p.digest for p in pieces]), metadata=auth
    )
    assert 1 <= len(missing.missing) <= 2 < len(pieces)
    second = await live.commit(ws, auth, "docs/report.bin", edited, 1)
    assert (second.committed, second.version) == (True, 2)
    # A stale base is a conflict: nothing is overwritten, and the head is told.
    stale = await live.commit(ws, auth, "docs/report.bin", b"lost?", 1)
    assert (stale.committed, stale.version) == (False, 2)
    assert await live.download(ws, auth, "docs/report.bin") == edited
    assert await live.download(ws, auth, "docs/report.bin", 1) == data
    # HTTP download with the token; without it, 401.
    token = auth[0][1].split()[1]
    status, headers, body = await live.aget(
        f"/files/{ws}/docs/report.bin", Authorization=f"Bearer {token}"
    )
    assert (status, body) == (200, edited)
    assert headers["Content-Disposition"].startswith("attachment")
    assert (await live.aget(f"/files/{ws}/docs/report.bin"))[0] == 401
    # Restore makes version 1 the head again, as version 3; delete is version 4, kept.
    restored = await live.stub.Restore(
        pb.RestoreRequest(workspace=ws, path="docs/report.bin", version=1), metadata=auth
    )
    assert restored.version == 3 and await live.download(ws, auth, "docs/report.bin") == data
    deleted = await live.stub.Delete(
        pb.DeleteRequest(workspace=ws, path="docs/report.bin", base_version=3), metadata=auth
    )
    assert (deleted.committed, deleted.version) == (True, 4)
    await refused(live.download(ws, auth, "docs/report.bin"), grpc.StatusCode.NOT_FOUND)
    versions = await live.stub.ListVersions(
        pb.ListVersionsRequest(workspace=ws, path="docs/report.bin"), metadata=auth
    )
    assert [(v.version, v.deleted) for v in versions.versions] == [
        (4, True), (3, False), (2, False), (1, False)
    ]  # fmt: skip
    # Changes in cursor order, from any cursor.
    changes = await live.stub.ListChanges(pb.ListChangesRequest(workspace=ws), metadata=auth)
    assert [c.version for c in changes.changes] == [1, 2, 3, 4]
    later = await live.stub.ListChanges(
        pb.ListChangesRequest(workspace=ws, cursor=changes.changes[1].cursor), metadata=auth
    )
    assert [c.version for c in later.changes] == [3, 4]
    # Share links: served without a token, 410 once expired, 404 unknown.
    await live.commit(ws, auth, "shared.txt", b"hello world", 0)
    link = await live.stub.CreateShareLink(
        pb.CreateShareLinkRequest(workspace=ws, path="shared.txt", expires_in=3600), metadata=auth
    )
    assert (await live.aget(link.path))[0:3:2] == (200, b"hello world")
    short = await live.stub.CreateShareLink(
        pb.CreateShareLinkRequest(workspace=ws, path="shared.txt", expires_in=1), metadata=auth
    )
    deadline = asyncio.get_running_loop().time() + 30
    while (await live.aget(short.path))[0] != 410:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    expired = await live.stub.ExpireShareLinks(pb.ExpireShareLinksRequest())
    assert expired.links_deleted == 1
    assert (await live.aget(short.path))[0] == 404 and (await live.aget(link.path))[0] == 200
    assert json.loads((await live.aget("/s/" + "x" * 20))[2])["field"] == "token"


async def test_members_read_or_write_and_tokens_stay_in_their_workspace(live: Live) -> None:
    ws, owner = await live.workspace()
    other, stranger = await live.workspace()
    await live.commit(ws, owner, "a.txt", b"a", 0)
    reader = await live.stub.AddMember(
        pb.AddMemberRequest(workspace=ws, user="bob", access="read"), metadata=owner
    )
    as_reader = (("authorization", f"Bearer {reader.token}"),)
    assert await live.download(ws, as_reader, "a.txt") == b"a"
    await refused(live.commit(ws, as_reader, "b.txt", b"b", 0), grpc.StatusCode.PERMISSION_DENIED)
    await refused(live.download(ws, stranger, "a.txt"), grpc.StatusCode.PERMISSION_DENIED)
    await refused(
        live.stub.AddMember(
            pb.AddMemberRequest(workspace=ws, user="eve", access="write"), metadata=as_reader
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(live.download(ws, (), "a.txt"), grpc.StatusCode.UNAUTHENTICATED)
    taken = await refused(live.workspace(ws))
    assert taken.startswith("workspace:")
    assert other != ws


async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(live: Live) -> None:
    ws, auth = await live.workspace()
    await live.commit(ws, auth, "ok.txt", b"fine", 0)
    before = (live.count("versions"), live.count("chunks"), await _objects(live))
    good = hashlib.sha256(b"bytes").hexdigest()
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "a\x00b", "a//b", "./a", "a\\b",
                ".hourglass-sync/state.db", ""):  # fmt: skip
        details = await refused(
            live.stub.CommitVersion(
                pb.CommitVersionRequest(workspace=ws, path=bad, digest=good), metadata=auth
            )
        )
        assert details.startswith("path:"), (bad, details)
    # Bytes that do not match their digest, alone or in a batch.
    details = await refused(
        live.stub.PutChunk(
            pb.PutChunkRequest(workspace=ws, chunks=[pb.Chunk(digest=good, data=b"other")]),
            metadata=auth,
        )
    )
    assert details.startswith("chunks[0].data:")
    right = pb.Chunk(digest=hashlib.sha256(b"right").hexdigest(), data=b"right")
    details = await refused(
        live.stub.PutChunk(
            pb.PutChunkRequest(workspace=ws, chunks=[right, pb.Chunk(digest=good, data=b"x")]),
            metadata=auth,
        )
    )
    assert details.startswith("chunks[1].data:")
    # An oversized chunk.
    big = os.urandom(chunking.LARGEST + 1)
    details = await refused(
        live.stub.PutChunk(
            pb.PutChunkRequest(
                workspace=ws, chunks=[pb.Chunk(digest=hashlib.sha256(big).hexdigest(), data=big)]
            ),
            metadata=auth,
        )
    )
    assert details.startswith("chunks[0].data:") and "limit" in details
    # A commit naming a chunk the workspace does not hold (even one another workspace has).
    other, other_auth = await live.workspace()
    held = (await live.upload(other, other_auth, b"theirs"))[0]
    for chunks in ([good], [held]):
        details = await refused(
            live.stub.CommitVersion(
                pb.CommitVersionRequest(workspace=ws, path="new.txt", chunks=chunks, digest=good),
                metadata=auth,
            )
        )
        assert details.startswith("chunks[0]:") and "unknown chunk" in details
    after = (live.count("versions"), live.count("chunks") - 1, await _objects(live) - 1)
    assert after == before


async def _objects(live: Live) -> int:
    store = live.running.files.blob_store
    assert store is not None
    return len(await store.list())


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.one_of(
        st.builds(lambda a, b: f"{a}/../{b}", st.text(min_size=1, max_size=5), st.text(max_size=5)),
        st.builds(lambda a: "/" + a, st.text(max_size=10)),
        st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=5), st.text(max_size=5)),
        st.builds(lambda a: a + "/", st.text(min_size=1, max_size=10)),
    )
)
async def test_property_unsafe_paths_are_refused_naming_path(live_once: Live, path: str) -> None:
    live, ws, auth = live_once  # type: ignore[misc]
    details = await refused(
        live.stub.CommitVersion(
            pb.CommitVersionRequest(workspace=ws, path=path, digest="0" * 64), metadata=auth
        )
    )
    assert details.startswith("path:")


@pytest.fixture
async def live_once(live: Live) -> tuple[Live, str, Any]:
    ws, auth = await live.workspace()
    return live, ws, auth  # type: ignore[return-value]


async def test_watch_changes_streams_commits_as_they_land(live: Live) -> None:
    ws, auth = await live.workspace()
    stream = live.stub.WatchChanges(pb.ListChangesRequest(workspace=ws), metadata=auth)
    await live.commit(ws, auth, "one.txt", b"1", 0)
    seen: list[str] = []
    async for batch in stream:
        seen += [c.path for c in batch.changes]
        if "one.txt" in seen and "two.txt" not in seen:
            await live.commit(ws, auth, "two.txt", b"2", 0)
        if "two.txt" in seen:
            break
    stream.cancel()
    assert seen == ["one.txt", "two.txt"]


async def test_gc_racing_commits_loses_no_chunk_a_version_refers_to(
    database_url: str, tmp_path: Path
) -> None:
    """Commits (each one retried after an "unknown chunk" refusal, as the client does),
    retention and sweeps at once, with no grace: at the end every version's bytes download,
    and the store holds no chunk that nothing refers to."""
    live = await start(database_url, tmp_path, {"gcGrace": "0s", "keepVersions": 2})
    try:
        ws, auth = await live.workspace()
        rng = random.Random(7)
        shared = os.urandom(300_000)  # a chunk many versions share
        stop = asyncio.Event()
        # The sweeper races every commit but lets one commit try between two sweeps: on a
        # loaded machine a sweeper that never waits starves writers (grace 0 is a stress
        # setting; liveness is what gcGrace gives), and this test is about safety.
        attempted = asyncio.Event()
        sweeps = 0

        async def sweeper() -> None:
            nonlocal sweeps
            while not stop.is_set():
                await live.stub.CollectGarbage(pb.CollectGarbageRequest())
                await live.stub.EnforceRetention(pb.EnforceRetentionRequest())
                sweeps += 1
                attempted.clear()
                stopped = asyncio.ensure_future(stop.wait())
                tried = asyncio.ensure_future(attempted.wait())
                await asyncio.wait({stopped, tried}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                tried.cancel()

        async def writer(n: int) -> None:
            base = 0
            for i in range(12):
                data = shared + rng.randbytes(rng.randrange(1, 200_000)) + bytes([n, i])
                for _ in range(50):
                    try:
                        done = await live.commit(ws, auth, f"f{n}.bin", data, base)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert "unknown chunk" in (exc.details() or ""), exc.details()
                    finally:
                        attempted.set()
                else:
                    raise AssertionError("never committed")
                assert done.committed
                base = done.version

        task = asyncio.create_task(sweeper())
        await asyncio.gather(*(writer(n) for n in range(4)))
        stop.set()
        await task
        assert sweeps >= 2
        await live.stub.EnforceRetention(pb.EnforceRetentionRequest())
        await live.stub.CollectGarbage(pb.CollectGarbageRequest())
        referenced: set[str] = set()
        for n in range(4):
            versions = await live.stub.ListVersions(
                pb.ListVersionsRequest(workspace=ws, path=f"f{n}.bin"), metadata=auth
            )
            assert [v.version for v in versions.versions] == [12, 11, 10]
            for v in versions.versions:
                body = await live.download(ws, auth, f"f{n}.bin", v.version)
                assert hashlib.sha256(body).hexdigest() == v.digest
                referenced.update(v.chunks)
        store = live.running.files.blob_store
        assert store is not None
        assert {d.partition(":")[2] for d in await store.list()} == referenced
    finally:
        await live.stop()


async def test_the_client_never_writes_through_a_symlinked_folder(
    live: Live, tmp_path: Path
) -> None:
    """A member commits "docs/x.txt"; on a device where docs/ is a symlink to a folder
    outside the synced one, the client leaves that folder alone and syncs the rest."""
    from hourglass.cases.filesync.client import Syncer
    from hourglass.cases.filesync.remote import Remote

    ws, auth = await live.workspace()
    await live.commit(ws, auth, "docs/x.txt", b"remote", 0)
    await live.commit(ws, auth, "top.txt", b"fine", 0)
    outside, folder = tmp_path / "outside", tmp_path / "synced"
    outside.mkdir()
    folder.mkdir()
    (folder / "docs").symlink_to(outside)
    remote = Remote(f"127.0.0.1:{live.running.port}", ws, auth[0][1].split()[1], device="pc")
    try:
        syncer = Syncer(folder, remote, device="pc")
        await syncer.round()
        syncer.state.close()
    finally:
        await remote.close()
    assert list(outside.iterdir()) == []
    assert (folder / "top.txt").read_bytes() == b"fine"
