"""What an artifact is, apart from where its bytes are kept: its name, the errors, the store's
contract, and the writing of a file that hashes its bytes as they arrive.

Both backends of hourglass.artifacts (a folder and an S3 bucket) share these, and so does
hourglass.artifact_urls, which fetches through a signed URL instead of a store. They live
below hourglass.artifacts so that module can hold the backends and choose between them
without an import cycle; it re-exports the public names here, so callers keep importing
from hourglass.artifacts.

- An artifact is named by the sha256 of its bytes (`Digest`, "sha256:<hex>").
- `spool` streams an upload to a temporary file while hashing it and enforces a size limit
  as it goes, so an upload is never held in memory and an oversized one stores nothing.
- `VerifiedDestination` and `write_verified` write a file beside its destination and rename
  it there only when its bytes hash to the expected digest.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NewType, Protocol, runtime_checkable

__all__ = [
    "ALGORITHM",
    "CHUNK",
    "HEX",
    "MIB",
    "Admit",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactTooLarge",
    "Digest",
    "Stored",
    "VerifiedDestination",
    "digest_of",
    "hex_of",
    "parse_digest",
    "spool",
    "write_verified",
]

Digest = NewType("Digest", str)
"""An artifact's name: "sha256:" and the 64 lowercase hex digits of its bytes' sha256."""

ALGORITHM = "sha256"
HEX = re.compile(r"[0-9a-f]{64}")
MIB = 1024 * 1024
# The size of the pieces that a fetch writes and an S3 upload sends.
CHUNK = 1 * MIB


def parse_digest(text: str) -> Digest:
    """Return `text` as a `Digest`, or raise ValueError saying what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"a digest must be a string, got {type(text).__name__}")
    algorithm, colon, hex_part = text.partition(":")
    if not colon:
        raise ValueError(f"digest {text!r} has no algorithm: expected 'sha256:<64 hex digits>'")
    if algorithm != ALGORITHM:
        raise ValueError(f"digest {text!r} uses algorithm {algorithm!r}: only 'sha256' is known")
    if len(hex_part) != 64:
        raise ValueError(
            f"digest {text!r} has {len(hex_part)} hex digits after 'sha256:': expected 64"
        )
    if not HEX.fullmatch(hex_part):
        raise ValueError(f"digest {text!r} is not 64 lowercase hex digits after 'sha256:'")
    return Digest(text)


def digest_of(hex_part: str) -> Digest:
    return Digest(f"{ALGORITHM}:{hex_part}")


def hex_of(digest: Digest) -> str:
    return parse_digest(digest).partition(":")[2]


def _mib(size: int) -> str:
    mib = size / MIB
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
        return digest_of(self._hash.hexdigest())

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


async def spool(chunks: AsyncIterable[bytes], folder: Path, limit: int) -> tuple[Path, Stored]:
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


class VerifiedDestination:
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
    target = VerifiedDestination(destination, digest)
    try:
        for chunk in chunks:
            target.write(chunk)
    except BaseException:
        target.discard()
        raise
    target.commit()
