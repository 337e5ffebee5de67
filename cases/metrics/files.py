"""The column files in the object store hourglass already has (hourglass.artifacts), laid out
by partition: `metrics/<schema>/<kind>/<resolution>/<hour>/<shard>/sha256/...`. A resource's
files never mix with another's, an hour of one series shard is one folder (one key prefix),
and the files outlive any pod. Files are content-addressed and immutable, so a server keeps
the ones it read in a bounded cache and never has to ask whether they changed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from hourglass import artifacts
from hourglass.cases.metrics import columns

CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Partition:
    kind: str  # points, rollups, logs
    resolution: int  # seconds: 0 for raw points and logs; 60, 300, 3600 for rollups
    hour: int  # unix ms of the hour's start
    shard: int

    def path(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H", time.gmtime(self.hour // 1000))
        return f"{self.kind}/{self.resolution}/{stamp}/{self.shard}"


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


class Files:
    def __init__(self, url: str, schema: str, *, cache_bytes: int = CACHE_BYTES) -> None:
        if not url:
            raise ValueError(
                "a MetricsPipeline needs an object store: --artifacts (env HOURGLASS_ARTIFACTS)"
            )
        self.root = artifacts.open_store(url)
        self.schema = schema
        self.stores: dict[str, artifacts.ArtifactStore] = {}
        self.cache: OrderedDict[str, bytes] = OrderedDict()
        self.readers: OrderedDict[str, columns.Reader] = OrderedDict()
        self.cached = 0
        self.cache_bytes = cache_bytes

    def store(self, partition: Partition) -> artifacts.ArtifactStore:
        where = f"metrics/{self.schema}/{partition.path()}"
        found = self.stores.get(where)
        if found is not None:
            return found
        root = self.root
        made: artifacts.ArtifactStore
        if isinstance(root, artifacts.LocalArtifactStore):
            made = artifacts.LocalArtifactStore(root.root / where)
        elif isinstance(root, artifacts.S3ArtifactStore):
            prefix = "/".join(p for p in (root.prefix.strip("/"), where) if p)
            made = artifacts.S3ArtifactStore(
                root.bucket, prefix, endpoint_url=root.endpoint_url, region=root.region
            )
        else:  # pragma: no cover
            raise ValueError(f"object store {root!r}: unknown kind")
        self.stores[where] = made
        return made

    async def put(self, partition: Partition, body: bytes) -> str:
        stored = await self.store(partition).put(_one(body), limit=len(body))
        digest = str(stored.digest)
        self._remember(digest, body)
        return digest

    async def get(self, partition: Partition, digest: str) -> bytes:
        """The file's bytes (ArtifactNotFound when it was deleted, e.g. just compacted)."""
        body = self.cache.get(digest)
        if body is not None:
            self.cache.move_to_end(digest)
            return body
        with tempfile.TemporaryDirectory(prefix="hourglass-metrics-") as folder:
            path = Path(folder) / "file"
            await self.store(partition).fetch(artifacts.parse_digest(digest), path)
            body = await asyncio.to_thread(path.read_bytes)
        self._remember(digest, body)
        return body

    async def reader(self, partition: Partition, digest: str) -> columns.Reader:
        """The file, footer parsed, kept while its bytes are (ArtifactNotFound if gone)."""
        found = self.readers.get(digest)
        if found is not None and digest in self.cache:
            self.readers.move_to_end(digest)
            self.cache.move_to_end(digest)
            return found
        body = await self.get(partition, digest)
        made = columns.Reader(body)
        self.readers[digest] = made
        while len(self.readers) > max(16, len(self.cache)):
            self.readers.popitem(last=False)
        return made

    async def delete(self, partition: Partition, digest: str) -> None:
        self.readers.pop(digest, None)
        if self.cache.pop(digest, None) is not None:
            self.cached = sum(len(b) for b in self.cache.values())
        await self.store(partition).delete(artifacts.parse_digest(digest))

    def _remember(self, digest: str, body: bytes) -> None:
        if len(body) > self.cache_bytes // 4 or digest in self.cache:
            return
        self.cache[digest] = body
        self.cached += len(body)
        while self.cached > self.cache_bytes:
            _, old = self.cache.popitem(last=False)
            self.cached -= len(old)
