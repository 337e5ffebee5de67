"""Media (images, video) through a resumable upload into the object store.

The protocol is tus's, over gRPC: StartUpload says the size and type; PutChunk sends bytes at
the upload's current offset; after a lost connection GetUpload tells the offset to resume
from, so only what was not received is sent again. Each chunk is stored at once as an object
of its own (content-addressed, under `feed/<schema>/parts/`), and PostgreSQL appends it to the
upload's list only if the upload is still at that offset (one fenced UPDATE), so a chunk
acknowledged survives a server restart, and of two senders of one offset exactly one wins.
The chunk that reaches the size assembles the parts into the media's own object
(`feed/<schema>/media/`, addressed by its sha256), then deletes the parts. The trim job drops
uploads left unfinished past the spec's uploadExpiry, with their parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hourglass import artifacts
from hourglass.cases import Invalid
from hourglass.cases.feed import store
from hourglass.store import db

MAX_CHUNK = 1 << 20
TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "video/webm")


class NoObjectStore(Exception):
    """The server runs without an object store (--artifacts): no media."""


class NotFound(Exception):
    pass


class WrongOffset(Exception):
    def __init__(self, expected: int) -> None:
        super().__init__(f"offset: the upload is at {expected}; resume from there")
        self.expected = expected


def open_store(url: str, schema: str, kind: str) -> artifacts.ArtifactStore | None:
    """The resource's `kind` ("media" or "parts") folder in the object store `url`."""
    if not url:
        return None
    found = artifacts.open_store(url)
    if isinstance(found, artifacts.LocalArtifactStore):
        return artifacts.LocalArtifactStore(found.root / "feed" / schema / kind)
    if isinstance(found, artifacts.S3ArtifactStore):
        prefix = "/".join(p for p in (found.prefix.strip("/"), "feed", schema, kind) if p)
        return artifacts.S3ArtifactStore(
            found.bucket, prefix, endpoint_url=found.endpoint_url, region=found.region
        )
    raise ValueError(f"object store {url!r}: unknown kind")  # pragma: no cover


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


class Media:
    def __init__(
        self,
        pool: db.Pool,
        *,
        media: artifacts.ArtifactStore | None,
        parts: artifacts.ArtifactStore | None,
        max_bytes: int,
        expiry: int,
    ) -> None:
        self.pool = pool
        self.media = media
        self.parts = parts
        self.max_bytes = max_bytes
        self.expiry = expiry

    def _stores(self) -> tuple[artifacts.ArtifactStore, artifacts.ArtifactStore]:
        if self.media is None or self.parts is None:
            raise NoObjectStore("media need an object store: start the server with --artifacts")
        return self.media, self.parts

    def check_start(self, size: int, content_type: str) -> None:
        if not 1 <= size <= self.max_bytes:
            raise Invalid("size", f"must be between 1 and {self.max_bytes} bytes")
        if content_type not in TYPES:
            raise Invalid("content_type", f"must be one of {', '.join(TYPES)}")

    async def start(self, *, user: int, upload_id: int, size: int, content_type: str) -> None:
        self.check_start(size, content_type)
        self._stores()
        async with db.transaction(self.pool) as conn:
            await store.start_upload(
                conn, user=user, upload_id=upload_id, size=size, content_type=content_type,
                now=datetime.now(UTC),
            )  # fmt: skip

    async def get(self, *, user: int, upload_id: int) -> store.UploadRow:
        async with self.pool.connection() as conn:
            found = await store.upload(conn, user=user, upload_id=upload_id)
        if found is None:
            raise NotFound(f"upload: {upload_id} is not an upload of user {user}")
        return found

    async def put(self, *, user: int, upload_id: int, offset: int, data: bytes) -> store.UploadRow:
        media, parts = self._stores()
        if not 1 <= len(data) <= MAX_CHUNK:
            raise Invalid("data", f"must be 1 to {MAX_CHUNK} bytes")
        current = await self.get(user=user, upload_id=upload_id)
        if current.digest is not None:
            raise WrongOffset(current.size)
        if offset != current.received:
            raise WrongOffset(current.received)
        if offset + len(data) > current.size:
            raise Invalid("data", f"goes past the upload's size ({current.size} bytes)")
        part = await parts.put(_one(data), limit=len(data))
        async with db.transaction(self.pool) as conn:
            row = await store.append_part(
                conn, user=user, upload_id=upload_id, offset=offset, length=len(data),
                part=str(part.digest),
            )  # fmt: skip
        if row is None:  # another sender of this offset won
            raise WrongOffset((await self.get(user=user, upload_id=upload_id)).received)
        if row.received == row.size:
            row = await self._assemble(row, media, parts)
        return row

    async def _assemble(
        self, row: store.UploadRow, media: artifacts.ArtifactStore, parts: artifacts.ArtifactStore
    ) -> store.UploadRow:
        with tempfile.TemporaryDirectory(prefix="hourglass-feed-") as folder:
            paths = []
            for i, digest in enumerate(row.parts):
                path = Path(folder) / f"{i}"
                await parts.fetch(artifacts.parse_digest(digest), path)
                paths.append(path)

            async def chunks() -> AsyncIterator[bytes]:
                for path in paths:
                    yield await asyncio.to_thread(path.read_bytes)

            stored = await media.put(chunks(), limit=row.size)
        async with db.transaction(self.pool) as conn:
            await store.complete_upload(
                conn, user=row.user, upload_id=row.id, digest=str(stored.digest),
                now=datetime.now(UTC),
            )  # fmt: skip
            in_use = await store.parts_in_use(conn, row.parts)
        for digest in set(row.parts) - in_use:
            with contextlib.suppress(artifacts.ArtifactError, OSError):
                await parts.delete(artifacts.parse_digest(digest))
        return await self.get(user=row.user, upload_id=row.id)

    async def read(self, *, user: int, upload_id: int, offset: int, length: int) -> bytes:
        media, _ = self._stores()
        found = await self.get(user=user, upload_id=upload_id)
        if found.digest is None:
            raise NotFound(f"upload: {upload_id} is not complete")
        if not 0 <= offset <= found.size:
            raise Invalid("offset", f"must be between 0 and {found.size}")
        with tempfile.TemporaryDirectory(prefix="hourglass-feed-") as folder:
            path = Path(folder) / "media"
            await media.fetch(artifacts.parse_digest(found.digest), path)

            def cut() -> bytes:
                with path.open("rb") as file:
                    file.seek(offset)
                    return file.read(length)

            return await asyncio.to_thread(cut)

    async def complete(self, *, user: int, ids: list[int]) -> list[store.UploadRow]:
        """The complete uploads of `user` a post refers to, in order; Invalid otherwise."""
        async with self.pool.connection() as conn:
            found = {u.id: u for u in await store.uploads_of(conn, user=user, ids=ids)}
        out = []
        for i, upload_id in enumerate(ids):
            row = found.get(upload_id)
            if row is None:
                raise Invalid(f"media[{i}]", f"{upload_id} is not an upload of user {user}")
            if row.digest is None:
                raise Invalid(f"media[{i}]", f"upload {upload_id} is not complete")
            out.append(row)
        return out

    async def expire(self) -> int:
        before = datetime.now(UTC) - timedelta(seconds=self.expiry)
        async with db.transaction(self.pool) as conn:
            expired, left = await store.expire_uploads(conn, before=before)
            in_use = await store.parts_in_use(conn, left) if left else set()
        if self.parts is not None:
            for digest in set(left) - in_use:
                with contextlib.suppress(artifacts.ArtifactError, OSError):
                    await self.parts.delete(artifacts.parse_digest(digest))
        return expired
