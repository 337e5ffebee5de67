"""The client side of the FileSync API: one channel to the server with the member's token,
and the upload of a batch of files as the service wants it: ask which chunks are missing
(one HaveChunks for the whole batch), send only those, several calls in flight, small
chunks (small files, the tails of files) packed together, each failed call retried on its
own a few times before the batch gives up (it is retried whole on the next round:
HaveChunks then skips what arrived)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hourglass.cases.filesync.chunking import Cut
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc

PACK_BYTES = 3 * 1024 * 1024
# Chunks this small travel together (a first sync of many small files); larger ones alone.
PACK_BELOW = 64 * 1024
IN_FLIGHT = 8
RETRIES = 3
# Calls that a retry may fix: the server away, restarting or overloaded.
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)


@dataclass
class Upload:
    """One file of a batch: its path, the version it was made from, and its chunks."""

    path: str
    base: int
    cut: Cut
    data: bytes


class Remote:
    def __init__(
        self, server: str, workspace: str, token: str, *, device: str = "", rate: float = 0
    ) -> None:
        self.workspace = workspace
        self.device = device
        self.channel = grpc.aio.insecure_channel(
            server,
            options=[
                ("grpc.max_receive_message_length", 8 << 20),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self.stub = pb_grpc.FileSyncStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        # Upload bytes per second (0: no limit): a user's setting, as Dropbox has.
        self.rate = rate
        self._sent_at = time.monotonic()

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, method: str, request: Any, timeout: float = 60) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)

    async def missing(self, digests: Sequence[str]) -> list[str]:
        out: list[str] = []
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), 10_000):
            answer = await self.call(
                "HaveChunks",
                pb.HaveChunksRequest(
                    workspace=self.workspace, digests=unique[start : start + 10_000]
                ),
            )
            out += answer.missing
        return out

    async def send_missing(
        self, uploads: Sequence[Upload], on_sent: Callable[[int, int], None]
    ) -> None:
        """Sends the batch's chunks the server lacks; `on_sent(chunks, bytes)` after each
        call that stored some, so a client killed midway has counted what it sent."""
        where: dict[str, tuple[bytes, int, int]] = {}
        for upload in uploads:
            for piece in upload.cut.pieces:
                where.setdefault(piece.digest, (upload.data, piece.offset, piece.length))
        wanted = await self.missing(list(where))
        packs: list[list[pb.Chunk]] = []
        pack: list[pb.Chunk] = []
        size = 0
        for digest in wanted:
            data, offset, length = where[digest]
            if length >= PACK_BELOW:
                # Alone: the server checks a lone chunk's digest with the object store's own
                # hash as it stores it, where a pack is hashed once more before any is stored.
                packs.append([pb.Chunk(digest=digest, data=data[offset : offset + length])])
                continue
            if pack and size + length > PACK_BYTES:
                packs.append(pack)
                pack, size = [], 0
            pack.append(pb.Chunk(digest=digest, data=data[offset : offset + length]))
            size += length
        if pack:
            packs.append(pack)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def send(chunks: list[pb.Chunk]) -> None:
            async with gate:
                request = pb.PutChunkRequest(workspace=self.workspace, chunks=chunks)
                total = sum(len(c.data) for c in chunks)
                await self._throttle(total)
                for attempt in range(RETRIES + 1):
                    try:
                        await self.call("PutChunk", request, timeout=120)
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() not in RETRYABLE or attempt == RETRIES:
                            raise
                        await asyncio.sleep(0.2 * 2**attempt)
                on_sent(len(chunks), total)

        await _all([send(p) for p in packs])

    async def _throttle(self, size: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        self._sent_at = max(self._sent_at, now) + size / self.rate
        await asyncio.sleep(max(0.0, self._sent_at - now - size / self.rate))

    async def commit(self, uploads: Sequence[Upload]) -> list[pb.CommitVersionResponse]:
        results: list[pb.CommitVersionResponse] = []
        for start in range(0, len(uploads), 500):
            commits = [
                pb.CommitVersionRequest(
                    workspace=self.workspace, path=u.path, base_version=u.base,
                    chunks=[p.digest for p in u.cut.pieces], digest=u.cut.digest,
                    device=self.device,
                )
                for u in uploads[start : start + 500]
            ]  # fmt: skip
            if len(commits) == 1:
                results.append(await self.call("CommitVersion", commits[0]))
            else:
                answer = await self.call(
                    "CommitVersions", pb.CommitVersionsRequest(commits=commits)
                )
                results += answer.results
        return results

    async def delete(self, path: str, base: int) -> pb.CommitVersionResponse:
        answer: pb.CommitVersionResponse = await self.call(
            "Delete",
            pb.DeleteRequest(
                workspace=self.workspace, path=path, base_version=base, device=self.device
            ),
        )
        return answer

    async def changes(self, cursor: int) -> pb.ListChangesResponse:
        answer: pb.ListChangesResponse = await self.call(
            "ListChanges", pb.ListChangesRequest(workspace=self.workspace, cursor=cursor)
        )
        return answer

    def watch(self, cursor: int) -> AsyncIterator[pb.ListChangesResponse]:
        stream: AsyncIterator[pb.ListChangesResponse] = self.stub.WatchChanges(
            pb.ListChangesRequest(workspace=self.workspace, cursor=cursor),
            metadata=self.metadata,
        )
        return stream

    async def download(self, path: str, version: int, digest: str, target: Path) -> None:
        """Writes the version's bytes to `target` and checks their sha256 (ValueError if they
        do not match: the caller discards the file)."""
        hashed = hashlib.sha256()
        stream = self.stub.Download(
            pb.DownloadRequest(workspace=self.workspace, path=path, version=version),
            metadata=self.metadata,
            timeout=600,
        )
        with target.open("wb") as out:
            async for piece in stream:
                hashed.update(piece.data)
                out.write(piece.data)
            out.flush()
        if hashed.hexdigest() != digest:
            raise ValueError(f"{path} version {version}: downloaded bytes do not match")


async def _all(calls: list[Any]) -> None:
    """Runs the calls at once; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
