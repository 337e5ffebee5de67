"""Visits, counted off the request path, batched, at least once (and applied once).

- A read server appends each visit to a list in memory (no I/O on the request path) and,
  every FLUSH_EVERY seconds, adds the list as ONE entry to a Redis stream on the platform's
  durable Redis (append-only file fsynced on every write). A read server killed outright
  loses at most the visits of its last FLUSH_EVERY; stopped with SIGTERM it flushes first.
- The write servers drain the stream through a consumer group: XREADGROUP a few entries,
  apply them to PostgreSQL in one transaction, XACK (and XDEL) after the commit. A drainer
  killed mid-batch leaves its entries pending; after CLAIM_AFTER another drainer (or the
  same one restarted) claims them with XAUTOCLAIM and applies them again.
- The apply is idempotent: the stream entry's id is recorded in the same transaction
  (applied_batches), so an entry applied but not acknowledged counts once when redelivered,
  for as long as the rollup keeps its id (FORGET_AFTER).

Referrers are kept as their host only, user agents as a class (classify), so the statistics
hold no personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from hourglass.cases.shortener import metrics, store
from hourglass.store import db

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.05
MAX_BUFFER = 200_000
READ_COUNT = 50  # stream entries per drained batch
CLAIM_AFTER = 30.0
FORGET_AFTER = 7 * 86400
GROUP = "drainers"
# Redis or PostgreSQL away: the batch stays pending and is read again.
DRAIN_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, *store.UNAVAILABLE_ERRORS)
_BOTS = (
    "bot",
    "crawl",
    "spider",
    "slurp",
    "curl",
    "wget",
    "python",
    "httpclient",
    "go-http",
    "java/",
    "preview",
)
AGENTS = ("desktop", "mobile", "tablet", "bot", "other", "none")


def classify(agent: str) -> str:
    """A user agent's class, nothing more (no browser, no version, no country)."""
    if not agent:
        return "none"
    text = agent.lower()
    if any(word in text for word in _BOTS):
        return "bot"
    if "ipad" in text or "tablet" in text or ("android" in text and "mobile" not in text):
        return "tablet"
    if "mobi" in text or "iphone" in text or "android" in text:
        return "mobile"
    if any(word in text for word in ("windows", "macintosh", "x11", "linux", "cros")):
        return "desktop"
    return "other"


def referrer_host(referrer: str) -> str:
    """The referrer's host ("direct" without a usable one)."""
    if not referrer:
        return "direct"
    try:
        host = urlsplit(referrer[:2048]).hostname
    except ValueError:
        return "other"
    return (host or "other")[:253]


def encode(visits: list[tuple[str, int, str, str]]) -> str:
    """(key, unix seconds, referrer header, user agent header) -> one stream entry's payload."""
    return "\n".join(
        f"{key}\t{at}\t{referrer_host(ref)}\t{classify(agent)}" for key, at, ref, agent in visits
    )


def decode(payload: str) -> list[tuple[str, int, str, str]]:
    out = []
    for line in payload.split("\n"):
        key, at, referrer, agent = line.split("\t")
        out.append((key, int(at), referrer, agent))
    return out


class Recorder:
    """The read server's side: visits in memory, flushed as one stream entry."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client = client
        self.stream = stream
        self.buffer: list[tuple[str, int, str, str]] = []

    def visit(self, key: str, at: int, referrer: str, agent: str) -> None:
        if len(self.buffer) < MAX_BUFFER:
            self.buffer.append((key, at, referrer[:2048], agent[:512]))
        else:
            metrics.visits_dropped.inc()

    async def flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        try:
            await self.client.xadd(self.stream, {"v": encode(batch)})
        except (RedisError, OSError) as exc:
            log.warning("visits: the stream is unavailable (%s); keeping %d", exc, len(batch))
            keep = MAX_BUFFER - len(self.buffer)
            metrics.visits_dropped.inc(max(0, len(batch) - keep))
            self.buffer[:0] = batch[:keep]
            return
        metrics.visits_queued.inc(len(batch))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            await self.flush()


class Drainer:
    """The write server's side: the stream -> PostgreSQL, at least once, applied once."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        pool: db.Pool,
        *,
        on_exhausted: Callable[[list[str]], Awaitable[None]] | None = None,
        claim_after: float = CLAIM_AFTER,
    ) -> None:
        self.client = client
        self.stream = stream
        self.pool = pool
        self.on_exhausted = on_exhausted
        self.claim_after = claim_after
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    async def prepare(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries another drainer read and never acknowledged, idle for claim_after."""
        answer = await self.client.xautoclaim(
            self.stream, GROUP, self.consumer, int(self.claim_after * 1000), "0-0", count=READ_COUNT
        )
        entries = [e for e in answer[1] if e[1]]  # deleted entries come back empty
        if entries:
            metrics.redelivered.inc(len(entries))
        return entries

    async def read(self, block_ms: int = 1000) -> list[tuple[bytes, dict[bytes, bytes]]]:
        answer: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=READ_COUNT, block=block_ms
        )
        return list(answer[0][1]) if answer else []

    async def apply(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        now = datetime.now(UTC)
        ids = [entry_id.decode() for entry_id, _ in entries]
        rows = []
        for (_entry_id, fields), text_id in zip(entries, ids, strict=True):
            for key, at, referrer, agent in decode(fields[b"v"].decode()):
                hour = datetime.fromtimestamp(at - at % 3600, UTC)
                rows.append((text_id, key, hour, referrer, agent, 1))
        async with db.transaction(self.pool) as conn:
            applied, exhausted = await store.apply_visits(conn, batches=ids, rows=rows, now=now)
        await self.client.xack(self.stream, GROUP, *ids)
        await self.client.xdel(self.stream, *ids)
        metrics.visits_applied.inc(applied)
        if exhausted and self.on_exhausted is not None:
            await self.on_exhausted(exhausted)
        return applied

    async def run(self, stop: asyncio.Event) -> None:
        await self.prepare()
        while not stop.is_set():
            try:
                entries = await self.claim() or await self.read()
                if entries:
                    await self.apply(entries)
            except DRAIN_ERRORS as exc:
                log.warning("visits: drain failed (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
