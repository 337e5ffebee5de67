"""The UrlShortener's logic between the faces and the store: keys, links, pastes, purge.

A write server holds one leased block of ids at a time (keys.Block) and spends it in memory:
a key costs one row of a multi-row INSERT that concurrent calls share (group.py's group
commit), committed before any of them is answered. The block is leased under an asyncio
lock, so concurrent Shorten calls of one server never lease two blocks for nothing; ids
left in a block at exit are never used (the key space is 3.5 * 10**12).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from hourglass import artifacts
from hourglass.cases.shortener import blobs, keys, metrics, store, validation
from hourglass.cases.shortener.cache import Cache, Target
from hourglass.cases.shortener.group import GroupCommit
from hourglass.cases.shortener.spec import Spec
from hourglass.cases.shortener.visits import FORGET_AFTER
from hourglass.clock import Clock
from hourglass.store import db

log = logging.getLogger(__name__)

BLOCK = 1000  # ids per leased block
BLOB_GRACE = timedelta(hours=1)  # a blob row this young may belong to a paste being made


class Taken(Exception):
    """A custom alias that is already a key."""


class NoObjectStore(Exception):
    """Pastes need an object store, and none is configured."""


@dataclass
class Shortener:
    pool: db.Pool
    spec: Spec
    clock: Clock
    cache: Cache
    blob_store: artifacts.ArtifactStore | None = None
    permutation: keys.Permutation | None = None
    # The read path's pool, whose connections are lent unchecked (one round trip less per
    # cold redirect): `find` retries once on a connection that turns out broken.
    reads: db.Pool | None = None

    def __post_init__(self) -> None:
        self.block: keys.Block | None = None
        self.delete_secret = b""
        self.lease_lock = asyncio.Lock()
        self.writes: GroupCommit[store.New, bool] = GroupCommit(self._flush)

    async def prepare(self) -> None:
        async with db.transaction(self.pool) as conn:
            secret = await store.secret(conn, "keys", secrets.token_bytes(32))
            self.delete_secret = await store.secret(conn, "delete", secrets.token_bytes(32))
        self.permutation = keys.Permutation(secret)

    def delete_token(self, key: str) -> str:
        return keys.delete_token(self.delete_secret, key)

    def may_delete(self, key: str, token: str) -> bool:
        return keys.token_matches(self.delete_secret, key, token)

    def now(self) -> datetime:
        return self.clock.now()

    def short_url(self, key: str) -> str:
        return f"{self.spec.base_url}/{key}" if self.spec.base_url else ""

    async def next_key(self) -> str:
        assert self.permutation is not None, "prepare() first"
        if self.block is None or not self.block.left:
            async with self.lease_lock:
                if self.block is None or not self.block.left:
                    async with self.pool.connection() as conn:
                        number = await store.lease_block(conn)
                    metrics.blocks.inc()
                    self.block = keys.block_ids(number, BLOCK)
        return self.permutation.key_of(self.block.take())

    async def high_water(self) -> int:
        """Ids below this were leased at some time (by any server)."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT last_value, is_called FROM key_blocks")
            ).fetchone()
        assert row is not None
        return int(row["last_value"]) * BLOCK if row["is_called"] else 0

    async def find(self, key: str) -> store.Entry | None:
        pool = self.reads or self.pool
        try:
            async with pool.connection() as conn:
                return await store.find(conn, key)
        except psycopg.OperationalError:  # a connection PostgreSQL dropped (a restart)
            async with pool.connection() as conn:
                return await store.find(conn, key)

    async def _flush(self, rows: list[store.New]) -> Sequence[bool | Exception]:
        """One batch of new keys: one INSERT (its own transaction: the pool's connections
        autocommit), then the cache. True: stored; False: the key was taken (by a row
        before, or by an earlier row of this batch)."""
        metrics.batch_size.observe(len(rows))
        try:
            async with self.pool.connection() as conn:
                stored = await store.insert_many(conn, rows)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if len(rows) == 1:
                return [exc]
            # One row the database refuses must not fail the others: each on its own.
            return [result for row in rows for result in await self._flush([row])]
        seen: set[str] = set()
        answers: list[bool | Exception] = []
        for row in rows:
            answers.append(row.key in stored and row.key not in seen)
            seen.add(row.key)
        aliases = [(row.key, _target(row)) for row in rows if row.alias and row.key in stored]
        if aliases:
            await self._cache(aliases)
        return answers

    async def _cache(self, entries: list[tuple[str, Target]]) -> None:
        """Write-through of new aliases, replacing the negative entry left by whoever looked
        the alias up before it existed; best effort (a failure leaves at most negativeTtl of
        404 for a key nobody had before). A generated key needs none: until its block was
        leased the read path answered it 404 from the range alone, caching nothing, and after
        that only a lucky guess among the unused ids of a leased block could cache a
        negative for it (for negativeTtl at most)."""
        try:
            await self.cache.put_many(entries)
        except Exception as exc:  # the keys are stored: the answers must not fail
            metrics.cache_errors.inc()
            log.debug("cache put of %d keys failed: %s", len(entries), exc)

    @staticmethod
    def _at(seconds: int | None) -> datetime | None:
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

    async def shorten(self, link: validation.Link) -> str:
        key = link.alias or await self.next_key()
        stored = await self.writes.submit(
            store.New(
                key=key,
                kind="url",
                now=self.now(),
                url=link.url,
                alias=link.alias is not None,
                expires_at=self._at(link.expires_at),
                max_visits=link.max_visits,
            )
        )
        if not stored:
            raise Taken(key)
        metrics.created.labels("url").inc()
        return key

    async def paste(self, paste: validation.Paste) -> tuple[str, str]:
        if self.blob_store is None:
            raise NoObjectStore
        digest = artifacts.Digest("sha256:" + hashlib.sha256(paste.body).hexdigest())
        async with db.transaction(self.pool) as conn:  # the row first: the purge spares it
            await store.touch_blob(conn, digest=digest, size=len(paste.body), now=self.now())
        stored = await blobs.put(self.blob_store, paste.body)
        assert stored == digest
        key = await self.next_key()
        made = await self.writes.submit(
            store.New(
                key=key,
                kind="paste",
                now=self.now(),
                blob=digest,
                size=len(paste.body),
                binary=paste.binary,
                syntax=paste.syntax,
                expires_at=self._at(paste.expires_at),
            )
        )
        assert made, f"a generated key {key} was taken"
        metrics.created.labels("paste").inc()
        return key, digest

    async def delete(self, key: str) -> bool | None:
        async with db.transaction(self.pool) as conn:
            deleted = await store.mark_deleted(conn, key, self.now())
        if deleted is not None:
            await self.forget([key])
        return deleted

    async def forget(self, keys_: list[str]) -> None:
        for key in keys_:
            try:
                await self.cache.forget(key)
            except Exception:
                metrics.cache_errors.inc()

    async def stats(self, key: str) -> tuple[store.Entry, dict[str, list[tuple[str, int]]]] | None:
        async with self.pool.connection() as conn:
            entry = await store.find(conn, key)
            if entry is None:
                return None
            return entry, await store.breakdown(conn, key)

    async def purge(self) -> tuple[int, int]:
        now = self.now()
        before = now - timedelta(seconds=self.spec.purge_after)
        async with db.transaction(self.pool) as conn:
            gone, freed = await store.purge(conn, before=before, blobs_before=now - BLOB_GRACE)
        await self.forget(gone)
        deleted = 0
        if self.blob_store is not None:
            for digest in freed:
                await self.blob_store.delete(artifacts.parse_digest(digest))
                deleted += 1
            deleted += await self._sweep()
        metrics.purged.labels("key").inc(len(gone))
        metrics.purged.labels("blob").inc(deleted)
        return len(gone), deleted

    async def _sweep(self) -> int:
        """Objects without a blob row: left by a purge that stopped between its commit and
        the object's deletion. A paste writes its row before its object, so an object listed
        here whose row is missing is nobody's."""
        assert self.blob_store is not None
        listed = await self.blob_store.list()
        if not listed:
            return 0
        async with self.pool.connection() as conn:
            known = await store.known_blobs(conn, listed)
        orphans = [digest for digest in listed if digest not in known]
        for digest in orphans:
            await self.blob_store.delete(digest)
        return len(orphans)

    async def rollup(self) -> tuple[int, int]:
        now = self.now()
        hour = now.replace(minute=0, second=0, microsecond=0)
        async with db.transaction(self.pool) as conn:
            return await store.rollup(
                conn, hours_before=hour, forget_before=now - timedelta(seconds=FORGET_AFTER)
            )


def _target(row: store.New) -> Target:
    expires = None if row.expires_at is None else int(row.expires_at.timestamp())
    if row.kind == "url":
        assert row.url is not None
        return Target("url", row.url, expires)
    assert row.blob is not None
    return Target("paste", row.blob, expires, binary=bool(row.binary), syntax=row.syntax or "")
