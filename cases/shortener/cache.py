"""The read path: a key -> what it points to, through three layers, each filling the one
above it (read-through):

1. the process's own near cache, NEAR_TTL seconds (so a hot key costs no network at all; a
   deleted key may redirect for at most that long on a read server that had it);
2. Redis, `cacheTtl` for a known key and `negativeTtl` for an unknown one (negative caching),
   on the cache shard that the consistent-hash ring (ring.py) gives the key;
3. PostgreSQL, the truth, asked at most once at a time per key per process (concurrent misses
   wait for the one lookup).

Before 2 and 3, a generated-shape key whose id lies beyond every block ever leased (plus
LEASE_SLACK, for blocks leased since the range was last read) is unknown without asking
anyone (keys.py makes ids from keys): a scan of random keys costs neither Redis nor
PostgreSQL. Expiry is checked on every answer, from the cached expiry, so a
cached key turns 410 on the second it expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from hourglass.cases.shortener import keys, metrics
from hourglass.cases.shortener.ring import Ring
from hourglass.cases.shortener.store import Entry

log = logging.getLogger(__name__)

NEAR_TTL = 2.0
NEAR_MAX = 200_000
HIGH_WATER_EVERY = 1.0  # seconds between rereads of the leased range
# Ids this far past the leased range as last read still count as leased: the blocks that
# write servers lease between two rereads (a block every half second per server at 2,000
# links/s), so a key made a moment ago is looked up, not refused from a stale range. A
# random key falls in this slack once in 3.5 million: the scan guard keeps its point.
LEASE_SLACK = 1_000_000
_UNKNOWN = "-"


@dataclass(frozen=True, slots=True)
class Target:
    """What a live or gone key points to, as cached."""

    kind: str  # "url" or "paste"
    value: str  # the URL, or the paste's digest
    expires_at: int | None = None
    gone: bool = False  # deleted or out of visits
    binary: bool = False
    syntax: str = ""

    def expired(self, now: float) -> bool:
        return self.gone or (self.expires_at is not None and now >= self.expires_at)

    def encode(self) -> str:
        flags = ("g" if self.gone else "") + ("b" if self.binary else "")
        expires = "" if self.expires_at is None else str(self.expires_at)
        return "|".join((self.kind, expires, flags, self.syntax, self.value))

    @classmethod
    def decode(cls, text: str) -> Target:
        kind, expires, flags, syntax, value = text.split("|", 4)
        return cls(
            kind, value, int(expires) if expires else None, "g" in flags, "b" in flags, syntax
        )

    @classmethod
    def of(cls, entry: Entry) -> Target:
        expires = None if entry.expires_at is None else int(entry.expires_at.timestamp())
        value = entry.url if entry.kind == "url" else entry.blob
        assert value is not None
        return cls(
            entry.kind,
            value,
            expires,
            entry.deleted_at is not None,
            entry.binary,
            entry.syntax or "",
        )


class Cache:
    """Redis shards on a consistent-hash ring, by key. Errors are the caller's to ride out."""

    def __init__(
        self, clients: Mapping[str, redis.Redis], *, prefix: str, ttl: float, negative_ttl: float
    ) -> None:
        self.clients = dict(clients)
        self.ring = Ring(self.clients)
        self.prefix = prefix
        self.ttl = max(1, int(ttl))
        self.negative_ttl = max(1, int(negative_ttl))

    def client(self, key: str) -> redis.Redis:
        return self.clients[self.ring.shard(key)]

    async def get(self, key: str) -> Target | bool | None:
        """The cached target; False when cached as unknown; None on a miss."""
        raw = await self.client(key).get(self.prefix + key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return False if text == _UNKNOWN else Target.decode(text)

    async def put(self, key: str, target: Target | None) -> None:
        if target is None:
            await self.client(key).set(self.prefix + key, _UNKNOWN, ex=self.negative_ttl)
        else:
            await self.client(key).set(self.prefix + key, target.encode(), ex=self.ttl)

    async def put_many(self, entries: list[tuple[str, Target]]) -> None:
        """Known targets, one pipelined round trip per shard."""
        by_shard: dict[str, list[tuple[str, Target]]] = {}
        for key, target in entries:
            by_shard.setdefault(self.ring.shard(key), []).append((key, target))
        for shard, chosen in by_shard.items():
            async with self.clients[shard].pipeline(transaction=False) as pipe:
                for key, target in chosen:
                    pipe.set(self.prefix + key, target.encode(), ex=self.ttl)
                await pipe.execute()

    async def forget(self, key: str) -> None:
        await self.client(key).delete(self.prefix + key)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


class Resolver:
    """Key -> Target | None (unknown), through the layers above. `find` reads PostgreSQL;
    `high_water` says how many ids were ever leased."""

    def __init__(
        self,
        cache: Cache,
        *,
        find: Callable[[str], Awaitable[Entry | None]],
        high_water: Callable[[], Awaitable[int]],
        permutation: keys.Permutation,
        near_ttl: float = NEAR_TTL,
    ) -> None:
        self.cache = cache
        self.find = find
        self.high_water = high_water
        self.permutation = permutation
        self.near_ttl = near_ttl
        self.near: dict[str, tuple[float, Target | None]] = {}
        self.leased = 0
        self.leased_read = -HIGH_WATER_EVERY
        self.inflight: dict[str, asyncio.Future[Target | None]] = {}
        self.filling: set[asyncio.Task[None]] = set()

    def near_hit(self, key: str, now: float) -> tuple[bool, Target | None]:
        found = self.near.get(key)
        if found is not None and found[0] > now:
            return True, found[1]
        return False, None

    async def resolve(self, key: str) -> Target | None:
        now = time.monotonic()
        hit, target = self.near_hit(key, now)
        if hit:
            metrics.lookups.labels("near").inc()
            return target
        if keys.is_generated_shape(key) and not await self._leased(key, now):
            metrics.lookups.labels("range").inc()
            return None
        waiting = self.inflight.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[Target | None] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            target = await self._lookup(key)
            future.set_result(target)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone lookup's error is raised below, not logged
            raise
        finally:
            del self.inflight[key]
        if len(self.near) >= NEAR_MAX:
            self.near.clear()
        self.near[key] = (now + self.near_ttl, target)
        return target

    async def _leased(self, key: str, now: float) -> bool:
        ident = self.permutation.id_of(key)
        if ident < self.leased + LEASE_SLACK:
            return True
        if now - self.leased_read >= HIGH_WATER_EVERY:
            self.leased_read = now
            self.leased = await self.high_water()
        return ident < self.leased + LEASE_SLACK

    async def _lookup(self, key: str) -> Target | None:
        try:
            cached = await self.cache.get(key)
        except (RedisError, OSError) as exc:
            metrics.cache_errors.inc()
            log.debug("cache get %s failed: %s", key, exc)
            cached = None
        if cached is not None:
            metrics.lookups.labels("redis").inc()
            return cached if isinstance(cached, Target) else None
        metrics.lookups.labels("postgres").inc()
        entry = await self.find(key)
        target = None if entry is None else Target.of(entry)
        # Filled after the answer, not before: the redirect does not wait for Redis twice.
        task = asyncio.create_task(self._fill(key, target))
        self.filling.add(task)
        task.add_done_callback(self.filling.discard)
        return target

    async def _fill(self, key: str, target: Target | None) -> None:
        try:
            await self.cache.put(key, target)
        except (RedisError, OSError):
            metrics.cache_errors.inc()

    def drop(self, key: str) -> None:
        self.near.pop(key, None)
