"""Where uploaded binaries live: a content-addressed artifact store with two backends.

A job may run a binary that a user uploaded rather than a command that is already on the
worker. The bytes must outlive the request that brought them, reach whichever worker (a local
process or a Kubernetes pod) runs the attempt, and arrive there exactly as they were uploaded.
This module is the one place that stores and fetches those bytes:

- An artifact is named by the sha256 of its bytes (`Digest`, "sha256:<hex>"), so the same
  upload twice is stored once, a name can never point at different bytes, and a reader can
  check what it got. `fetch` always does: a stored artifact whose bytes no longer match its
  name raises `ArtifactCorrupt` and leaves nothing behind.
- `put` streams the upload to a temporary file while hashing it and enforces a size limit
  as it goes, so an upload is never held in memory and an oversized one stores nothing.
  Its `admit` hook sees the digest and size before the bytes are published, so a caller
  can refuse the upload (a quota) or record it first; a refused one leaves nothing behind.
- Two backends behind one `ArtifactStore` protocol: a folder (`LocalArtifactStore`, for
  `hourglass dev` and a single machine) and any S3-compatible bucket (`S3ArtifactStore`, for
  a cluster). `open_store` picks one from a URL, so the choice is configuration.

The S3 backend speaks through obstore (Rust's object_store): natively async, streaming in
both directions, and it reads the standard AWS environment variables for credentials.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from hourglass.artifact_bytes import (
    ALGORITHM,
    CHUNK,
    HEX,
    MIB,
    Admit,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTooLarge,
    Digest,
    Stored,
    VerifiedDestination,
    digest_of,
    hex_of,
    parse_digest,
    spool,
    write_verified,
)

if TYPE_CHECKING:
    from obstore.store import S3Config

# The names, errors and contract live in hourglass.artifact_bytes (shared with
# hourglass.artifact_urls); they are re-exported here, the module callers import.
__all__ = [
    "Admit",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactTooLarge",
    "Digest",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "Stored",
    "open_store",
    "parse_digest",
    "write_verified",
]

# ---------------------------------------------------------------------------------------
# A folder.


class LocalArtifactStore:
    """Artifacts in a folder: `root/sha256/<first 2 hex digits>/<64 hex digits>`.

    Uploads are spooled in `root/tmp` (the same file system, so the final rename is atomic)
    and every file appears under its name only once it is complete.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def path_of(self, digest: Digest) -> Path:
        """Where the artifact with `digest` is (or would be) stored."""
        hex_part = hex_of(digest)
        return self.root / ALGORITHM / hex_part[:2] / hex_part

    def _spool_dir(self) -> Path:
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def put(
        self, chunks: AsyncIterable[bytes], *, limit: int, admit: Admit | None = None
    ) -> Stored:
        spool_dir = await asyncio.to_thread(self._spool_dir)
        spooled, stored = await spool(chunks, spool_dir, limit)
        if admit is not None:
            try:
                await admit(stored)
            except BaseException:
                await asyncio.to_thread(spooled.unlink, missing_ok=True)
                raise
        created = await asyncio.to_thread(self._publish, spooled, self.path_of(stored.digest))
        return Stored(digest=stored.digest, size=stored.size, created=created)

    @staticmethod
    def _publish(spooled: Path, final: Path) -> bool:
        """Move the spooled file to its final name; False if that name was taken already."""
        try:
            os.chmod(spooled, 0o644)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                # A hard link creates the name only if it is free: two concurrent puts of the
                # same bytes cannot both report that they created it.
                os.link(spooled, final)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links
                if final.exists():
                    return False
                os.replace(spooled, final)
            return True
        finally:
            spooled.unlink(missing_ok=True)

    async def fetch(self, digest: Digest, destination: Path) -> None:
        source = self.path_of(digest)
        await asyncio.to_thread(self._copy_verified, source, digest, destination)

    @staticmethod
    def _copy_verified(source: Path, digest: Digest, destination: Path) -> None:
        try:
            reader = source.open("rb")
        except FileNotFoundError:
            raise ArtifactNotFound(digest) from None
        with reader:
            target = VerifiedDestination(destination, digest)
            try:
                while chunk := reader.read(CHUNK):
                    target.write(chunk)
            except BaseException:
                target.discard()
                raise
            target.commit()

    async def exists(self, digest: Digest) -> bool:
        return await asyncio.to_thread(self.path_of(digest).is_file)

    async def delete(self, digest: Digest) -> None:
        await asyncio.to_thread(self.path_of(digest).unlink, missing_ok=True)

    async def list(self) -> builtins.list[Digest]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> builtins.list[Digest]:
        digests: builtins.list[Digest] = []
        base = self.root / ALGORITHM
        if not base.is_dir():
            return digests
        for shard in base.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                name = entry.name
                if HEX.fullmatch(name) and name[:2] == shard.name and entry.is_file():
                    digests.append(digest_of(name))
        return sorted(digests)


# ---------------------------------------------------------------------------------------
# An S3-compatible bucket.


class S3ArtifactStore:
    """Artifacts in an S3-compatible bucket, under the keys `<prefix>sha256/<64 hex digits>`.

    Credentials come from the standard AWS environment variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), read when the store is created; so do the
    endpoint (AWS_ENDPOINT_URL) and region (AWS_REGION, AWS_DEFAULT_REGION) when they are not
    given here. An `http://` endpoint (a local MinIO, say) is allowed. Uploads are spooled in
    `spool_dir` (default: the system's temporary folder) and sent from there in parts, so
    a large artifact is never held in memory.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        spool_dir: Path | str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 artifact store needs a bucket name")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        config: S3Config = {}
        if endpoint_url is not None:
            config["endpoint"] = endpoint_url
        if region is not None:
            config["region"] = region
        # object_store refuses plain http unless told; a local MinIO speaks nothing else.
        allow_http = bool(endpoint and endpoint.startswith("http://"))
        self._store = S3Store(bucket, config=config, client_options={"allow_http": allow_http})

    def __repr__(self) -> str:
        return (
            f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, region={self.region!r})"
        )

    @property
    def client(self) -> S3Store:
        """The obstore client, for tools and tests that need the raw bucket."""
        return self._store

    def key_of(self, digest: Digest) -> str:
        """The object key of the artifact with `digest`."""
        return f"{self.prefix}{ALGORITHM}/{hex_of(digest)}"

    async def put(
        self, chunks: AsyncIterable[bytes], *, limit: int, admit: Admit | None = None
    ) -> Stored:
        spool_dir = self.spool_dir or Path(tempfile.gettempdir())
        spooled, stored = await spool(chunks, spool_dir, limit)
        try:
            if admit is not None:
                await admit(stored)
            if await self.exists(stored.digest):
                return Stored(digest=stored.digest, size=stored.size, created=False)
            # Overwriting is harmless (a key only ever holds its own bytes), and an
            # unconditional put may be sent in parts straight from the file.
            await obstore.put_async(
                self._store,
                self.key_of(stored.digest),
                spooled,
                chunk_size=5 * MIB,
                max_concurrency=4,
            )
            return stored
        finally:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)

    async def fetch(self, digest: Digest, destination: Path) -> None:
        key = self.key_of(digest)
        try:
            result = await obstore.get_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            raise ArtifactNotFound(digest) from None
        target = await asyncio.to_thread(VerifiedDestination, destination, digest)
        try:
            async for chunk in result.stream(min_chunk_size=CHUNK):
                await asyncio.to_thread(target.write, chunk)
        except BaseException:
            await asyncio.to_thread(target.discard)
            raise
        await asyncio.to_thread(target.commit)

    async def exists(self, digest: Digest) -> bool:
        try:
            await obstore.head_async(self._store, self.key_of(digest))
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    async def delete(self, digest: Digest) -> None:
        with contextlib.suppress(NotFoundError, FileNotFoundError):
            await obstore.delete_async(self._store, self.key_of(digest))

    async def list(self) -> builtins.list[Digest]:
        folder = f"{self.prefix}{ALGORITHM}/"
        digests: builtins.list[Digest] = []
        async for batch in obstore.list(self._store, prefix=folder):
            for meta in batch:
                name = meta["path"].removeprefix(folder)
                if HEX.fullmatch(name):
                    digests.append(digest_of(name))
        return sorted(digests)


# ---------------------------------------------------------------------------------------
# Choosing a store.

_ACCEPTED = (
    "'file:///absolute/path', a plain path, or 's3://bucket[/prefix][?endpoint=URL&region=NAME]'"
)


def open_store(url: str) -> ArtifactStore:
    """The store that `url` names.

    - `file:///absolute/path`, or a plain path: a `LocalArtifactStore` in that folder.
    - `s3://bucket/optional/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1`: an
      `S3ArtifactStore`; `endpoint` and `region` are optional (default: the AWS environment).

    Anything else raises ValueError naming the accepted forms.
    """
    if not url or not url.strip():
        raise ValueError(f"no artifact store given: expected {_ACCEPTED}")
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:  # no scheme (a one-letter one is a Windows drive)
        return LocalArtifactStore(Path(url))
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"artifact store {url!r} is not an absolute file URL: expected {_ACCEPTED}"
            )
        if parts.query or parts.fragment:
            raise ValueError(
                f"artifact store {url!r} has a query or fragment: expected {_ACCEPTED}"
            )
        return LocalArtifactStore(Path(unquote(parts.path)))
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"artifact store {url!r} names no bucket: expected {_ACCEPTED}")
        if parts.fragment:
            raise ValueError(f"artifact store {url!r} has a fragment: expected {_ACCEPTED}")
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(query) - {"endpoint", "region"})
        if unknown:
            raise ValueError(
                f"artifact store {url!r} has unknown parameters {', '.join(unknown)}: "
                f"expected {_ACCEPTED}"
            )
        options: dict[str, str] = {}
        for name, values in query.items():
            if len(values) != 1 or not values[0]:
                raise ValueError(f"artifact store {url!r}: {name} must be given once, not empty")
            options[name] = values[0]
        return S3ArtifactStore(
            unquote(parts.netloc),
            unquote(parts.path).strip("/"),
            endpoint_url=options.get("endpoint"),
            region=options.get("region"),
        )
    raise ValueError(
        f"artifact store {url!r} has unknown scheme {parts.scheme!r}: expected {_ACCEPTED}"
    )
