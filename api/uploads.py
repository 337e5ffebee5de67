"""UploadBinary: receiving a binary into the artifact store on behalf of one namespace.

The bytes are stored once per digest for everyone, but what an upload answers is about the
caller's namespace only: `created` is true when this namespace did not own the digest before,
whether or not another namespace stored the same bytes. A stream that sends nothing for
`idle_timeout` seconds ends, and an upload that would take the namespace past its artifact
quota is refused; either way nothing of it is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from hourglass import artifact_quota, artifacts
from hourglass.clock import Clock, SystemClock
from hourglass.store import artifacts as artifact_rows
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb

log = logging.getLogger(__name__)

# Largest binary UploadBinary accepts (RESOURCE_EXHAUSTED beyond it).
DEFAULT_MAX_BINARY = 256 * 1024 * 1024
# Seconds an upload stream may send nothing before it is ended.
DEFAULT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_binary: int = DEFAULT_MAX_BINARY
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # Bytes a namespace may own when the admin set no quota of its own.
    default_quota: int = artifact_quota.DEFAULT_MAX_ARTIFACT_BYTES

    def __post_init__(self) -> None:
        if self.max_binary < 0:
            raise ValueError(f"max_binary must be at least 0 bytes, got {self.max_binary}")
        if self.idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, got {self.idle_timeout}")
        if self.default_quota < 0:
            raise ValueError(f"default_quota must be at least 0 bytes, got {self.default_quota}")


class UploadIdle(Exception):
    """The client sent nothing for too long; nothing was stored."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the upload sent nothing for {seconds:g}s and was ended; nothing was stored."
            " Send the chunks without pausing (each message may carry up to 1 MiB)"
        )


class Uploads:
    def __init__(
        self,
        pool: db.Pool,
        store: artifacts.ArtifactStore,
        *,
        limits: UploadLimits,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.limits = limits
        self.clock = clock or SystemClock()

    async def receive(
        self, requests: AsyncIterable[pb.UploadBinaryRequest], *, namespace: str
    ) -> pb.UploadBinaryResponse:
        """Stores the upload for `namespace`. Raises UploadIdle, artifact_quota.QuotaExceeded
        or artifacts.ArtifactTooLarge, having kept nothing."""
        async with self.pool.connection() as conn:
            quota = await self._quota(conn, namespace)
            used = await artifact_rows.usage(conn, namespace)
        # A first, cheap bound while the bytes arrive, so a namespace at its quota cannot
        # fill the spool; `admit` decides exactly, under the namespace's lock.
        room = artifact_quota.remaining(quota=quota, used=used)
        created = False
        admitted: artifacts.Stored | None = None

        async def admit(stored: artifacts.Stored) -> None:
            nonlocal created, admitted
            async with db.transaction(self.pool) as conn:
                await artifact_rows.lock_namespace(conn, namespace)
                if not await artifact_rows.owns(conn, namespace, stored.digest):
                    artifact_quota.check(
                        namespace=namespace,
                        quota=await self._quota(conn, namespace),
                        used=await artifact_rows.usage(conn, namespace),
                        size=stored.size,
                    )
                created = await artifact_rows.own(
                    conn,
                    namespace=namespace,
                    digest=stored.digest,
                    size=stored.size,
                    now=self.clock.now(),
                )
            admitted = stored

        chunks = self._chunks(requests, namespace=namespace, room=room, quota=quota, used=used)
        try:
            stored = await self.store.put(chunks, limit=self.limits.max_binary, admit=admit)
        except BaseException:
            if admitted is not None and created:
                # Recorded, but the bytes never made it: take the record back.
                async with db.transaction(self.pool) as conn:
                    await artifact_rows.disown(conn, namespace=namespace, digest=admitted.digest)
            raise
        log.info(
            "binary %s uploaded by namespace %s (%d bytes, new to it: %s)",
            stored.digest,
            namespace,
            stored.size,
            created,
        )
        return pb.UploadBinaryResponse(digest=stored.digest, size=stored.size, created=created)

    async def _quota(self, conn: db.Connection, namespace: str) -> int:
        own = await artifact_rows.quota(conn, namespace)
        return self.limits.default_quota if own is None else own

    async def _chunks(
        self,
        requests: AsyncIterable[pb.UploadBinaryRequest],
        *,
        namespace: str,
        room: int,
        quota: int,
        used: int,
    ) -> AsyncIterator[bytes]:
        messages = aiter(requests)
        received = 0
        while True:
            try:
                async with asyncio.timeout(self.limits.idle_timeout):
                    message = await anext(messages)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UploadIdle(self.limits.idle_timeout) from None
            received += len(message.chunk)
            if received > room:
                raise artifact_quota.QuotaExceeded(namespace=namespace, quota=quota, used=used)
            yield message.chunk
