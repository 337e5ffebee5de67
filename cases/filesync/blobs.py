"""Chunk bytes in the object store hourglass already has (hourglass.artifacts): named by
their sha256, under a prefix of the resource's own (`filesync/<schema>/`), so two resources
never see each other's chunks and the collector of one never touches another's. Inside a
resource the bytes of a digest are stored once, whichever workspaces hold it."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from hourglass import artifacts


def open_blobs(url: str, schema: str) -> artifacts.ArtifactStore | None:
    """The resource's chunk store inside the object store `url` names; None without one
    (PutChunk and Download then answer FAILED_PRECONDITION)."""
    if not url:
        return None
    store = artifacts.open_store(url)
    if isinstance(store, artifacts.LocalArtifactStore):
        return artifacts.LocalArtifactStore(store.root / "filesync" / schema)
    if isinstance(store, artifacts.S3ArtifactStore):
        prefix = "/".join(p for p in (store.prefix.strip("/"), "filesync", schema) if p)
        return artifacts.S3ArtifactStore(
            store.bucket, prefix, endpoint_url=store.endpoint_url, region=store.region
        )
    raise ValueError(f"object store {url!r}: unknown kind")  # pragma: no cover


def name(digest: str) -> artifacts.Digest:
    return artifacts.Digest(f"sha256:{digest}")


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def put(store: artifacts.ArtifactStore, digest: str, body: bytes, *, verify: bool) -> bool:
    """Stores `body` under `digest`; True if the store did not hold it yet. With `verify`,
    the store's own hash of the bytes must be `digest` before they are published
    (ChunkMismatch otherwise, and nothing is written)."""

    async def admit(stored: artifacts.Stored) -> None:
        if stored.digest != name(digest):
            raise ChunkMismatch(stored.digest.partition(":")[2])

    stored = await store.put(_one(body), limit=len(body), admit=admit if verify else None)
    return stored.created


class ChunkMismatch(ValueError):
    """The bytes' sha256 is not the digest they were sent under."""


async def read(store: artifacts.ArtifactStore, digest: str) -> bytes:
    """The chunk's bytes, checked against its digest on the way (ArtifactNotFound if gone)."""
    if isinstance(store, artifacts.LocalArtifactStore):
        # The local store's files are immutable and named by their hash; read it in place
        # (and still check it), rather than copying it through a temporary file first.
        return await asyncio.to_thread(_read_local, store, digest)
    with tempfile.TemporaryDirectory(prefix="hourglass-chunk-") as folder:
        path = Path(folder) / "chunk"
        await store.fetch(name(digest), path)
        return await asyncio.to_thread(path.read_bytes)


def _read_local(store: artifacts.LocalArtifactStore, digest: str) -> bytes:
    import hashlib

    try:
        body = store.path_of(name(digest)).read_bytes()
    except FileNotFoundError:
        raise artifacts.ArtifactNotFound(name(digest)) from None
    found = hashlib.sha256(body).hexdigest()
    if found != digest:
        raise artifacts.ArtifactCorrupt(name(digest), name(found))
    return body
