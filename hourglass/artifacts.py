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
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NewType, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import S3Config

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

Digest = NewType("Digest", str)
"""An artifact's name: "sha256:" and the 64 lowercase hex digits of its bytes' sha256."""

_ALGORITHM = "sha256"
_HEX = re.compile(r"[0-9a-f]{64}")
_MIB = 1024 * 1024
# The size of the pieces that a fetch writes and an S3 upload sends.
_CHUNK = 1 * _MIB


def parse_digest(text: str) -> Digest:
    """Return `text` as a `Digest`, or raise ValueError saying what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"a digest must be a string, got {type(text).__name__}")
    algorithm, colon, hex_part = text.partition(":")
    if not colon:
        raise ValueError(f"digest {text!r} has no algorithm: expected 'sha256:<64 hex digits>'")
    if algorithm != _ALGORITHM:
        raise ValueError(f"digest {text!r} uses algorithm {algorithm!r}: only 'sha256' is known")
    if len(hex_part) != 64:
        raise ValueError(
            f"digest {text!r} has {len(hex_part)} hex digits after 'sha256:': expected 64"
        )
    if not _HEX.fullmatch(hex_part):
        raise ValueError(f"digest {text!r} is not 64 lowercase hex digits after 'sha256:'")
    return Digest(text)


def _digest_of(hex_part: str) -> Digest:
    return Digest(f"{_ALGORITHM}:{hex_part}")


def _hex_of(digest: Digest) -> str:
    return parse_digest(digest).partition(":")[2]


def _mib(size: int) -> str:
    mib = size / _MIB
    return f"{mib:.2f}".rstrip("0").rstrip(".") if mib >= 0.01 else f"{mib:.2g}"


class ArtifactError(Exception):
    """Something went wrong storing or fetching an artifact."""


class ArtifactTooLarge(ArtifactError):
    """An upload went past its size limit; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"artifact is larger than the limit of {limit} bytes ({_mib(limit)} MiB)")
        self.limit = limit


class ArtifactNotFound(ArtifactError):
    """No artifact is stored under the digest."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"artifact {digest} is not stored")
        self.digest = digest


class ArtifactCorrupt(ArtifactError):
    """The stored bytes of an artifact no longer hash to its digest."""

    def __init__(self, expected: Digest, found: Digest) -> None:
        super().__init__(
            f"artifact {expected} is corrupt: expected digest {expected}, found {found}"
        )
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class Stored:
    """The result of a put: the artifact's name, its size, and whether this put stored it."""

    digest: Digest
    size: int
    created: bool  # False when the same bytes were already stored


Admit = Callable[[Stored], Awaitable[None]]
"""Called with a spooled upload before it is published; raising refuses it (nothing is kept)."""


@runtime_checkable
class ArtifactStore(Protocol):
    """A content-addressed store of artifacts, each named by the sha256 of its bytes."""

    async def put(
        self, chunks: AsyncIterable[bytes], *, limit: int, admit: Admit | None = None
    ) -> Stored:
        """Store the bytes of `chunks`, at most `limit` of them, under their digest.

        Raises ArtifactTooLarge (and stores nothing) past the limit. The same bytes twice
        are stored once: the second put returns `created=False`. `admit`, if given, is
        awaited once all bytes arrived and before they are published; what it raises
        propagates, and nothing is stored.
        """
        ...

    async def fetch(self, digest: Digest, destination: Path) -> None:
        """Write the artifact to `destination` atomically, verifying its sha256 on the way.

        Raises ArtifactNotFound, or ArtifactCorrupt (and leaves no file at `destination`)
        when the stored bytes do not hash to `digest`.
        """
        ...

    async def exists(self, digest: Digest) -> bool:
        """Whether an artifact is stored under `digest`."""
        ...

    async def delete(self, digest: Digest) -> None:
        """Remove the artifact; a missing one is not an error."""
        ...

    async def list(self) -> builtins.list[Digest]:
        """The digests of every stored artifact, sorted."""
        ...


# ---------------------------------------------------------------------------------------
# Writing files: hashing, size limits, atomic renames. Blocking calls go through a thread.


class _HashingFile:
    """A new temporary file in `folder` that hashes what is written to it."""

    def __init__(self, folder: Path, prefix: str) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".part")
        self.path = Path(name)
        self.size = 0
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._file.write(chunk)
        self.size += len(chunk)

    def close(self) -> Digest:
        """Flush the file to disk, close it and return the digest of its bytes."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return _digest_of(self._hash.hexdigest())

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


async def _spool(chunks: AsyncIterable[bytes], folder: Path, limit: int) -> tuple[Path, Stored]:
    """Write `chunks` to a temporary file in `folder`; return it with its digest and size.

    Past `limit` bytes the file is removed and ArtifactTooLarge raised. `created` of the
    returned Stored is True; the caller decides.
    """
    if limit < 0:
        raise ValueError(f"limit must be at least 0 bytes, got {limit}")
    spool = await asyncio.to_thread(_HashingFile, folder, ".upload-")
    try:
        async for chunk in chunks:
            if spool.size + len(chunk) > limit:
                raise ArtifactTooLarge(limit)
            if chunk:
                await asyncio.to_thread(spool.write, bytes(chunk))
        digest = await asyncio.to_thread(spool.close)
    except BaseException:
        await asyncio.to_thread(spool.discard)
        raise
    return spool.path, Stored(digest=digest, size=spool.size, created=True)


class _VerifiedDestination:
    """A temporary file beside `destination` that becomes it only if its digest matches."""

    def __init__(self, destination: Path, expected: Digest) -> None:
        self.destination = destination
        self.expected = expected
        destination.parent.mkdir(parents=True, exist_ok=True)
        self._file = _HashingFile(destination.parent, f".{destination.name}.")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def commit(self) -> None:
        """Rename the file onto the destination, or remove it and raise ArtifactCorrupt."""
        try:
            found = self._file.close()
            if found != self.expected:
                raise ArtifactCorrupt(self.expected, found)
            os.chmod(self._file.path, 0o644)
            os.replace(self._file.path, self.destination)
        except BaseException:
            self._file.path.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        self._file.discard()


def write_verified(chunks: Iterable[bytes], digest: Digest, destination: Path) -> None:
    """Write `chunks` to `destination` atomically, only if they hash to `digest`: for readers
    that get the bytes some other way than from a store (a signed URL). Blocking.

    Raises ArtifactCorrupt, and leaves no file at `destination`, when they do not.
    """
    target = _VerifiedDestination(destination, digest)
    try:
        for chunk in chunks:
            target.write(chunk)
    except BaseException:
        target.discard()
        raise
    target.commit()


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
        hex_part = _hex_of(digest)
        return self.root / _ALGORITHM / hex_part[:2] / hex_part

    def _spool_dir(self) -> Path:
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def put(
        self, chunks: AsyncIterable[bytes], *, limit: int, admit: Admit | None = None
    ) -> Stored:
        spool_dir = await asyncio.to_thread(self._spool_dir)
        spooled, stored = await _spool(chunks, spool_dir, limit)
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
            target = _VerifiedDestination(destination, digest)
            try:
                while chunk := reader.read(_CHUNK):
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
        base = self.root / _ALGORITHM
        if not base.is_dir():
            return digests
        for shard in base.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                name = entry.name
                if _HEX.fullmatch(name) and name[:2] == shard.name and entry.is_file():
                    digests.append(_digest_of(name))
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
        return f"{self.prefix}{_ALGORITHM}/{_hex_of(digest)}"

    async def put(
        self, chunks: AsyncIterable[bytes], *, limit: int, admit: Admit | None = None
    ) -> Stored:
        spool_dir = self.spool_dir or Path(tempfile.gettempdir())
        spooled, stored = await _spool(chunks, spool_dir, limit)
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
                chunk_size=5 * _MIB,
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
        target = await asyncio.to_thread(_VerifiedDestination, destination, digest)
        try:
            async for chunk in result.stream(min_chunk_size=_CHUNK):
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
        folder = f"{self.prefix}{_ALGORITHM}/"
        digests: builtins.list[Digest] = []
        async for batch in obstore.list(self._store, prefix=folder):
            for meta in batch:
                name = meta["path"].removeprefix(folder)
                if _HEX.fullmatch(name):
                    digests.append(_digest_of(name))
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
