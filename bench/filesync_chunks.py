"""FileSync's chunking figures, measured in the bench's own process (no server needed):
FastCDC's throughput on one core beside sha256's (the hash every chunk needs anyway), and
the dedup ratio of a corpus of edited files, beside the same corpus cut into fixed 1 MiB
blocks and cut with restic's chunk sizes (min 512 KiB, average 1 MiB, max 8 MiB)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator

import pyfastcdc

from hourglass.cases.filesync import chunking

MB = 1_000_000


def chunking_speed(size: int) -> tuple[float, float]:
    """(FastCDC MB/s, sha256 MB/s) over `size` random bytes, one core, best of 3."""
    data = random.Random(3).randbytes(size)

    def best(work: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            work()
            times.append(time.perf_counter() - began)
        return size / min(times) / MB

    cut = best(lambda: sum(1 for _ in chunking.cut(data)))
    sha = best(lambda: hashlib.sha256(data).digest())
    return cut, sha


def _fixed(data: bytes, block: int) -> Iterator[bytes]:
    for start in range(0, len(data), block):
        yield data[start : start + block]


def _restic_like(data: bytes) -> Iterator[bytes]:
    cutter = pyfastcdc.FastCDC(512 * 1024, min_size=512 * 1024, max_size=8 * 1024 * 1024)
    for chunk in cutter.cut_buf(data):
        yield data[chunk.offset : chunk.offset + chunk.length]


def _ours(data: bytes) -> Iterator[bytes]:
    for offset, length in chunking.cut(data):
        yield data[offset : offset + length]


def corpus(files: int, size: int, generations: int) -> Iterator[bytes]:
    """Every version of `files` files of `size` bytes, each generation a few small edits
    (an insert, a delete, an overwrite) at random places: documents being worked on."""
    rng = random.Random(11)
    for _ in range(files):
        data = bytearray(rng.randbytes(size))
        yield bytes(data)
        for _ in range(generations):
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randrange(1, 200))
            at = rng.randrange(len(data) - 200)
            del data[at : at + rng.randrange(1, 200)]
            at = rng.randrange(len(data) - 100)
            data[at : at + 50] = rng.randbytes(50)
            yield bytes(data)


def dedup_ratios(files: int, size: int, generations: int) -> dict[str, float]:
    """Logical bytes / unique stored bytes, for our chunker and the two baselines."""
    out: dict[str, float] = {}
    for name, cutter in (
        ("fastcdc", _ours),
        ("fixed-1MiB", lambda d: _fixed(d, 1 << 20)),
        ("restic-sizes", _restic_like),
    ):
        logical = 0
        seen: dict[bytes, int] = {}
        for version in corpus(files, size, generations):
            logical += len(version)
            for piece in cutter(version):
                seen.setdefault(hashlib.sha256(piece).digest(), len(piece))
        out[name] = logical / sum(seen.values())
    return out


def insert_one_byte(data: bytes) -> tuple[bytes, float, float]:
    """The file with one byte inserted in its middle, and the share of its bytes in new
    chunks with our chunker and with fixed 4 MiB blocks (Dropbox's block size)."""
    edited = data[: len(data) // 2] + b"\x00" + data[len(data) // 2 :]

    def share(cut: Callable[[bytes], Iterator[bytes]]) -> float:
        before = {hashlib.sha256(p).digest() for p in cut(data)}
        new = sum(len(p) for p in cut(edited) if hashlib.sha256(p).digest() not in before)
        return new / len(edited)

    return edited, share(_ours), share(lambda d: _fixed(d, 4 << 20))
