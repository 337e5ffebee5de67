"""Paste bodies in the object store hourglass already has (hourglass.artifacts): the same
content-addressed store, under a prefix of the resource's own (`shortener/<schema>/`), so two
resources never see each other's blobs and the purge of one never touches another's."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from hourglass import artifacts


def open_blobs(url: str, schema: str) -> artifacts.ArtifactStore | None:
    """The resource's blob store inside the object store `url` names; None without one
    (CreatePaste then answers FAILED_PRECONDITION)."""
    if not url:
        return None
    store = artifacts.open_store(url)
    if isinstance(store, artifacts.LocalArtifactStore):
        return artifacts.LocalArtifactStore(store.root / "shortener" / schema)
    if isinstance(store, artifacts.S3ArtifactStore):
        prefix = "/".join(p for p in (store.prefix.strip("/"), "shortener", schema) if p)
        return artifacts.S3ArtifactStore(
            store.bucket, prefix, endpoint_url=store.endpoint_url, region=store.region
        )
    raise ValueError(f"object store {url!r}: unknown kind")  # pragma: no cover


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def put(store: artifacts.ArtifactStore, body: bytes) -> artifacts.Digest:
    stored = await store.put(_one(body), limit=len(body))
    return stored.digest


async def read(store: artifacts.ArtifactStore, digest: str) -> bytes:
    """The blob's bytes, checked against its digest on the way (ArtifactNotFound if gone)."""
    with tempfile.TemporaryDirectory(prefix="hourglass-paste-") as folder:
        path = Path(folder) / "body"
        await store.fetch(artifacts.parse_digest(digest), path)
        return await asyncio.to_thread(path.read_bytes)
