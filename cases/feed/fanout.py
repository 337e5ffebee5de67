"""Fan-out on write: a post's id goes into its author's followers' home timelines,
asynchronously and at least once, and no author's fan-out waits behind another's.

- **Durable queue.** CreatePost commits the post, then adds a task to a Redis stream on the
  platform's durable Redis, then marks the post `queued`; a post left unqueued (Redis was
  away) is queued again by `sweep`. Every server consumes the streams through one consumer
  group: a task is acknowledged (XACK, XDEL) only after its timelines are written, and a
  consumer that dies leaves it pending, to be claimed by another after `claim_after`
  (XAUTOCLAIM). Writing a task twice changes nothing: a timeline is a set keyed by post id.
- **Two lanes, chunks, turns.** A task is done one chunk of followers (the spec's
  fanoutChunk, in follower-id order) at a time. The small lane does the first chunk of every
  post at once, so most posts (authors with at most one chunk of followers) are visible
  after one step, and a big author's first followers too. The rest of a big author's
  followers go to the big lane as a continuation ("after follower N"); each step there does
  one chunk and puts the next at the end of the stream, in one MULTI with the XACK of the
  step done. Big posts thus take turns, chunk by chunk, and never hold up the small lane,
  which its own consumer serves.
- **Hot authors** (more followers than the spec's hotThreshold) are not fanned out: their
  posts are merged in on read (feed.py). When an author crosses the threshold the same
  machinery walks their followers: "hot" adds the hot marker to each timeline, "cold" adds
  their recent posts and removes the marker. Deletes walk the followers to remove the id.
- Only timelines Redis holds are written; one it does not is built from PostgreSQL when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from hourglass.cases.feed import ids, metrics, store, timelines
from hourglass.store import db

log = logging.getLogger(__name__)

GROUP = "fanout"
CLAIM_AFTER = 30.0
SMALL_READ = 64  # tasks per small-lane step
BIG_READ = 4  # chunks per big-lane step: a few authors' turns at once
SWEEP_AFTER_MS = 5_000
KINDS = ("post", "delete", "hot", "cold")
ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, *store.UNAVAILABLE_ERRORS)


@dataclass(frozen=True, slots=True)
class Task:
    kind: str
    author: int
    post: int = 0
    after: int = 0  # the last follower done (0: from the first)

    def fields(self) -> dict[str, str]:
        return {"k": self.kind, "a": str(self.author), "p": str(self.post), "n": str(self.after)}

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> Task:
        return cls(
            kind=fields[b"k"].decode(),
            author=int(fields[b"a"]),
            post=int(fields[b"p"]),
            after=int(fields[b"n"]),
        )


Entry = tuple[bytes, dict[bytes, bytes]]


class Fanout:
    def __init__(
        self,
        client: redis.Redis,
        pool: db.Pool,
        *,
        prefix: str,
        chunk: int,
        threshold: int,
        cap: int,
        claim_after: float = CLAIM_AFTER,
    ) -> None:
        self.client = client
        self.pool = pool
        self.prefix = prefix
        self.chunk = chunk
        self.threshold = threshold
        self.cap = cap
        self.claim_after = claim_after
        self.streams = {"small": f"{prefix}fan:small", "big": f"{prefix}fan:big"}
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.apply_script = client.register_script(timelines.APPLY)
        self.last_sweep = 0.0
        # Posts whose task reached the stream, to mark `queued` in one UPDATE per loop turn.
        self.queued: list[tuple[int, int]] = []
        # Users who read their timeline (first time this hour), for users.active_at.
        self.active: set[int] = set()
        # Their timelines' keys, whose expiry is pushed back in the same turn.
        self.touched: list[str] = []

    def timeline(self, user: int) -> str:
        return f"{self.prefix}tl:{user}"

    async def prepare(self) -> None:
        for stream in self.streams.values():
            try:
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def enqueue(self, tasks: Sequence[Task]) -> None:
        """Adds tasks to the small lane, in one round trip (RedisError: not queued)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.xadd(self.streams["small"], task.fields())  # type: ignore[arg-type]
            await pipe.execute()

    async def sweep(self) -> int:
        """Queues the posts older than SWEEP_AFTER_MS whose fan-out never got queued."""
        before = ids.first_id_at(time.time_ns() // 1_000_000 - SWEEP_AFTER_MS)
        async with self.pool.connection() as conn:
            left = await store.unqueued(conn, before_id=before, limit=1000)
        if left:
            await self.enqueue([Task("post", author, post) for author, post in left])
            async with db.transaction(self.pool) as conn:
                await store.mark_queued(conn, left)
            log.warning("fan-out: queued %d posts that missed the stream", len(left))
        return len(left)

    async def flush_queued(self) -> None:
        """Marks the posts noted since the last flush as queued, in one statement. Lost with a
        crash, they are queued again by a sweep: a second fan-out changes nothing."""
        if not self.queued:
            return
        pairs, self.queued = self.queued, []
        try:
            async with db.transaction(self.pool) as conn:
                await store.mark_queued(conn, pairs)
        except store.UNAVAILABLE_ERRORS:
            self.queued[:0] = pairs
            raise

    async def flush_active(self) -> None:
        """Writes the active users noted since the last flush, in one statement (the prewarm
        job's list of who to build; a user lost in a crash is noted on their next read)."""
        if not self.active:
            return
        users, self.active = sorted(self.active), set()
        keys, self.touched = self.touched, []
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.expire(key, timelines.TTL)
            await pipe.execute()
        async with db.transaction(self.pool) as conn:
            await store.touch_active(conn, users=users, now=datetime.now(UTC))

    async def _members(self, task: Task) -> tuple[list[bytes], list[bytes]] | None:
        """What one step of `task` adds and removes; None when there is nothing to do."""
        if task.kind == "post":
            return [timelines.post(task.post, task.author)], []
        if task.kind == "delete":
            return [], [timelines.post(task.post, task.author)]
        if task.kind == "hot":
            return [timelines.hot(task.author)], []
        async with self.pool.connection() as conn:  # cold: the posts it had been merging
            recent = await store.recent_ids(conn, author=task.author, before=None, limit=self.cap)
        return [timelines.post(i, task.author) for i in recent], [timelines.hot(task.author)]

    async def steps(self, tasks: Sequence[Task], lane: str) -> list[Task | None]:
        """Does one chunk of each task, together: one query for the authors' follower
        counts, one for their next chunks of followers, one Redis round trip for every
        timeline write. Returns each task's continuation (None: it is done)."""
        async with self.pool.connection() as conn:
            counts = await store.follower_counts(conn, sorted({t.author for t in tasks}))
            live = [
                t
                for t in tasks
                if not (t.kind == "post" and counts.get(t.author, 0) > self.threshold)
            ]  # a hot author's post is merged on read, not fanned out
            chunks = await store.first_followers(
                conn, sorted({(t.author, t.after) for t in live}), limit=self.chunk
            )
        writes = []
        async with self.client.pipeline(transaction=False) as pipe:
            for task in live:
                followers = chunks[(task.author, task.after)]
                change = await self._members(task) if followers else None
                if change is None:
                    continue
                adds, removes = change
                keys = [self.timeline(f) for f in followers]
                args: list[bytes | int] = [self.cap, len(adds), *adds, *removes]
                await self.apply_script(keys=keys, args=args, client=pipe)
                writes.append((task, max(1, len(adds))))
            written = await pipe.execute() if writes else []
        now = time.time()
        for (task, per), count in zip(writes, written, strict=True):
            metrics.inserts.labels(lane).inc(int(count) * per)
            if task.kind == "post":
                metrics.lag.labels(lane).observe(max(0.0, now - ids.unix_ms(task.post) / 1000))
        out: list[Task | None] = []
        for task in tasks:
            followers = chunks.get((task.author, task.after), [])
            more = task in live and len(followers) == self.chunk
            out.append(Task(task.kind, task.author, task.post, followers[-1]) if more else None)
        return out

    async def _entries(self, lane: str, count: int, block_ms: int) -> list[Entry]:
        stream = self.streams[lane]
        claimed: Any = await self.client.xautoclaim(
            stream, GROUP, self.consumer, int(self.claim_after * 1000), "0-0", count=count
        )
        entries = [e for e in claimed[1] if e[1]]  # deleted entries come back empty
        if entries:
            metrics.redelivered.inc(len(entries))
            return entries
        answer: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=count, block=block_ms
        )
        return list(answer[0][1]) if answer else []

    async def _done(self, lane: str, entry_ids: list[bytes], more: list[Task]) -> None:
        """Acknowledges steps and queues their continuations, atomically (MULTI): a step done
        twice (its consumer died before this) queues the same continuation, whose writes
        change nothing the second time."""
        async with self.client.pipeline(transaction=True) as pipe:
            for continuation in more:
                pipe.xadd(self.streams["big"], continuation.fields())  # type: ignore[arg-type]
            pipe.xack(self.streams[lane], GROUP, *entry_ids)
            pipe.xdel(self.streams[lane], *entry_ids)
            await pipe.execute()

    async def run_once(self, lane: str, *, block_ms: int = 1000) -> int:
        """One read of `lane` and its steps; how many entries it did."""
        count = SMALL_READ if lane == "small" else BIG_READ
        entries = await self._entries(lane, count, block_ms)
        if entries:
            tasks = [Task.parse(fields) for _, fields in entries]
            known = [t for t in tasks if t.kind in KINDS]
            if len(known) < len(tasks):
                log.error("fan-out: dropping %d entries of unknown kinds", len(tasks) - len(known))
            more = await self.steps(known, lane) if known else []
            await self._done(lane, [e for e, _ in entries], [t for t in more if t is not None])
        metrics.backlog.labels(lane).set(await self.client.xlen(self.streams[lane]))
        return len(entries)

    async def run(self, lane: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if lane == "small":
                    await self.flush_queued()
                    await self.flush_active()
                    if time.monotonic() - self.last_sweep > SWEEP_AFTER_MS / 1000:
                        self.last_sweep = time.monotonic()
                        await self.sweep()
                await self.run_once(lane, block_ms=100 if lane == "small" else 1000)
            except ERRORS as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    with contextlib.suppress(*ERRORS):  # Redis lost the stream: start anew
                        await self.prepare()
                    continue
                log.warning("fan-out %s: step failed (%s); retrying", lane, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
