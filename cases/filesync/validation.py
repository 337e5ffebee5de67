"""Every request field the FileSync server accepts, checked before anything is stored: an
`Invalid("<field>: <reason>")` for the first field that is wrong (gRPC INVALID_ARGUMENT,
HTTP 400 with {"error", "field"}). Pure: unit and property tests need no server."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hourglass.cases import Invalid
from hourglass.cases.filesync import paths

__all__ = ["Invalid"]

_WORKSPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
ACCESS = ("read", "write")
MAX_DIGESTS = 10_000
MAX_CHUNKS_PER_VERSION = 1_000_000
MAX_COMMITS = 1_000
# What one PutChunk may carry in all: under gRPC's 4 MiB message limit.
MAX_PUT_BYTES = 3 * 1024 * 1024 + 512 * 1024
MAX_LIMIT = 10_000


def workspace(value: str, field: str = "workspace") -> str:
    if not _WORKSPACE.fullmatch(value):
        raise Invalid(
            field, "must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit"
        )
    return value


def user(value: str, field: str = "user") -> str:
    if not _USER.fullmatch(value):
        raise Invalid(field, "must be 1 to 64 of A-Z, a-z, 0-9, ., _, @ and -")
    return value


def device(value: str, field: str = "device") -> str:
    """A device name; empty becomes "unknown" (it only labels conflict copies)."""
    if not value:
        return "unknown"
    if not _DEVICE.fullmatch(value):
        raise Invalid(field, "must be 1 to 64 of A-Z, a-z, 0-9, space, ., _ and -")
    return value


def access(value: str, field: str = "access") -> str:
    if value not in ACCESS:
        raise Invalid(field, f"must be one of {', '.join(ACCESS)}, not {value!r}")
    return value


def path(value: str, field: str = "path") -> str:
    try:
        return paths.check(value)
    except paths.BadPath as exc:
        raise Invalid(field, str(exc)) from None


def digest(value: str, field: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise Invalid(field, "must be 64 lowercase hex digits (a sha256)")
    return value


def digests(values: Sequence[str], field: str, *, most: int = MAX_DIGESTS) -> list[str]:
    if len(values) > most:
        raise Invalid(field, f"at most {most} at once, got {len(values)}")
    return [digest(value, f"{field}[{i}]") for i, value in enumerate(values)]


def version(value: int, field: str, *, zero: bool = True) -> int:
    if value < 0 or (value == 0 and not zero):
        raise Invalid(field, "must be a positive version number" + (" or 0" if zero else ""))
    return value


def cursor(value: int, field: str = "cursor") -> int:
    if value < 0:
        raise Invalid(field, "must be 0 or a cursor this service returned")
    return value


def limit(value: int, field: str = "limit") -> int:
    if value < 0 or value > MAX_LIMIT:
        raise Invalid(field, f"must be between 0 (the default, 1000) and {MAX_LIMIT}")
    return value or 1000


@dataclass(frozen=True, slots=True)
class ChunkIn:
    digest: str
    data: bytes


def chunks(
    items: Sequence[tuple[str, bytes]], *, max_chunk: int, field: str = "chunks"
) -> list[ChunkIn]:
    """Shape and size of each chunk; whether its bytes match its digest is checked as they
    are stored (the store hashes them once, on the way)."""
    if not items:
        raise Invalid(field, "at least one chunk")
    total = 0
    out = []
    for i, (name, data) in enumerate(items):
        digest(name, f"{field}[{i}].digest")
        if not data:
            raise Invalid(f"{field}[{i}].data", "must not be empty (an empty file has no chunks)")
        if len(data) > max_chunk:
            raise Invalid(
                f"{field}[{i}].data", f"{len(data)} bytes is more than the limit of {max_chunk}"
            )
        total += len(data)
        out.append(ChunkIn(name, data))
    if total > MAX_PUT_BYTES:
        raise Invalid(field, f"{total} bytes in one call; at most {MAX_PUT_BYTES}")
    return out


@dataclass(frozen=True, slots=True)
class CommitIn:
    path: str
    base: int
    chunks: list[str]
    digest: str
    device: str


def commit(
    *, path_: str, base: int, chunk_list: Sequence[str], file_digest: str, device_: str,
    prefix: str = "",
) -> CommitIn:  # fmt: skip
    if len(chunk_list) > MAX_CHUNKS_PER_VERSION:
        raise Invalid(f"{prefix}chunks", f"at most {MAX_CHUNKS_PER_VERSION} chunks")
    return CommitIn(
        path=path(path_, f"{prefix}path"),
        base=version(base, f"{prefix}base_version"),
        chunks=digests(chunk_list, f"{prefix}chunks", most=MAX_CHUNKS_PER_VERSION),
        digest=digest(file_digest, f"{prefix}digest"),
        device=device(device_, f"{prefix}device"),
    )


def expires_in(value: int, *, most: float, field: str = "expires_in") -> int:
    if value < 1 or value > most:
        raise Invalid(field, f"must be between 1 and {int(most)} seconds")
    return value
