"""A consistent-hash ring of cache shards, keyed by the short key (pure).

Each shard stands at VNODES points of a 64-bit ring (BLAKE2b of "<shard>#<i>"); a key belongs
to the first point at or after its own hash, wrapping around. Adding an (N+1)-th shard takes
over only the arcs in front of its own points, about 1/(N+1) of the keys, and every key that
moves, moves to the new shard; removing one moves only its keys. With 160 points per shard
the shares stay within a few percent of even. The shards are named by their Redis URL, so
every server that is given the same URLs, in any order, builds the same ring.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

VNODES = 160


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Ring:
    def __init__(self, shards: Iterable[str], *, vnodes: int = VNODES) -> None:
        names = sorted(set(shards))
        if not names:
            raise ValueError("a ring needs at least one shard")
        points = sorted((_hash(f"{name}#{i}"), name) for name in names for i in range(vnodes))
        self.shards = tuple(names)
        self._hashes = [point for point, _ in points]
        self._owners = [name for _, name in points]

    def shard(self, key: str) -> str:
        index = bisect.bisect_left(self._hashes, _hash(key))
        return self._owners[index % len(self._owners)]

    def __len__(self) -> int:
        return len(self.shards)
