"""A server's Snowflake worker id, leased from etcd, and the id reservation (ids.py).

- **Lease.** Each server holds one etcd lease (hourglass.locks.Lease, kept alive by a
  heartbeat) and puts `<prefix>leaders/feed/<schema>/worker/<n>` on it if absent
  (Etcd.campaign: put-if-absent), trying the free numbers in turn. Two live servers never
  hold the same n; a server that dies loses it when its lease runs out.
- **Reservation.** `<prefix>feed/<schema>/ceiling/<n>` (no lease: it outlives servers)
  holds the highest millisecond the holders of n may use. The server writes a new ceiling
  every RENEW_EVERY seconds and issues ids only below the one written, so the next holder of
  n starts above every id issued before, even with a clock that stepped back.
- **Loss.** When the lease is lost the generator stops at once (CreatePost answers
  UNAVAILABLE), and the server takes a new lease and a worker id again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable

from hourglass import locks
from hourglass.cases.feed import ids

log = logging.getLogger(__name__)

LEASE_TTL = 10
RENEW_EVERY = 0.5


class NoWorkerId(Exception):
    """Every worker id is held, or etcd is unreachable: no ids can be issued."""


class WorkerIds:
    """Holds a worker id for one server and keeps `generator` usable."""

    def __init__(
        self,
        etcd: locks.Etcd,
        schema: str,
        *,
        clock_ms: Callable[[], int] | None = None,
        ttl: int = LEASE_TTL,
    ) -> None:
        self.etcd = etcd
        self.schema = schema
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.ttl = ttl
        self.lease: locks.Lease | None = None
        self.generator: ids.Snowflake | None = None
        self.holder = f"{socket.gethostname()}-{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def _name(self, worker: int) -> str:
        return f"feed/{self.schema}/worker/{worker}"

    def _ceiling_key(self, worker: int) -> bytes:
        return f"{self.etcd.prefix}feed/{self.schema}/ceiling/{worker}".encode()

    async def acquire(self) -> ids.Snowflake:
        """A fresh lease and a free worker id; the generator starts above its ceiling."""
        lease = locks.Lease(self.etcd, self.ttl)
        await lease.start()
        try:
            return await self._take(lease)
        except BaseException:
            # Not left to run out: its heartbeat would keep it (and a worker id) alive.
            with contextlib.suppress(*locks.TRANSIENT_ERRORS):
                await lease.stop()
            raise

    async def _take(self, lease: locks.Lease) -> ids.Snowflake:
        taken = await self.etcd.client.get_prefix(
            f"{self.etcd.prefix}leaders/feed/{self.schema}/worker/".encode(), keys_only=True
        )
        held = {int(kv.key.decode().rsplit("/", 1)[1]) for kv in taken}
        start = random.randrange(ids.MAX_WORKER + 1)
        for step in range(ids.MAX_WORKER + 1):
            worker = (start + step) % (ids.MAX_WORKER + 1)
            if worker in held:
                continue
            if await self.etcd.campaign(self._name(worker), lease_id=lease.id, holder=self.holder):
                break
        else:
            raise NoWorkerId(f"all {ids.MAX_WORKER + 1} worker ids of {self.schema} are held")
        stored = await self.etcd.client.get(self._ceiling_key(worker))
        floor = int(stored.value) if stored is not None and stored.value else 0
        generator = ids.Snowflake(worker, floor=floor)
        await self._renew(generator)
        self.lease, self.generator = lease, generator
        log.info("feed %s: worker id %d (above %d)", self.schema, worker, floor)
        return generator

    async def _renew(self, generator: ids.Snowflake) -> None:
        ceiling = generator.reserve(self.clock_ms())
        await self.etcd.client.put(self._ceiling_key(generator.worker), str(ceiling).encode())
        generator.extend(ceiling)

    async def start(self, *, wait: bool = True) -> None:
        """Takes a worker id and keeps it. With wait=False it returns at once and the id is
        taken in the background, retried a second apart while etcd does not answer: the
        server serves reads meanwhile, and a call that needs an id waits for it (next_id).
        A server that took its id before serving failed to start, or kept its callers
        waiting, whenever etcd was slow to answer, as it is just after a restart while it
        elects its leader on a loaded machine."""
        if wait:
            await self.acquire()
            self._ready.set()
        self._task = asyncio.create_task(self._keep(), name="feed worker id")

    async def _keep(self) -> None:
        while True:
            if not self._ready.is_set():
                await self._acquire_until_held()
            await self._hold()

    async def _acquire_until_held(self) -> None:
        while True:
            try:
                await self.acquire()
                self._ready.set()
                return
            except (*locks.TRANSIENT_ERRORS, NoWorkerId) as exc:  # type: ignore[misc]
                log.warning("feed %s: no worker id yet (%s)", self.schema, exc)
                await asyncio.sleep(1)

    async def _hold(self) -> None:
        """Moves the ceiling up until the lease is lost; then stops issuing ids."""
        lease, generator = self.lease, self.generator
        assert lease is not None and generator is not None
        lost = asyncio.create_task(lease.lost.wait())
        try:
            while not lease.lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), RENEW_EVERY)
                if lease.lost.is_set():
                    break
                try:
                    await self._renew(generator)
                except locks.TRANSIENT_ERRORS as exc:
                    log.warning("feed %s: ceiling not renewed (%s)", self.schema, exc)
        finally:
            lost.cancel()
        generator.revoke()
        self._ready.clear()
        log.error("feed %s: worker id %d lost; taking a new one", self.schema, generator.worker)

    async def next_id(self, *, timeout: float = 5.0) -> int:
        """A new id; waits out a clock behind the last id, or a reservation not yet extended,
        up to `timeout` seconds (NoWorkerId then)."""
        deadline = time.monotonic() + timeout
        while True:
            generator = self.generator
            if generator is not None and self._ready.is_set():
                try:
                    return generator.next_id(self.clock_ms())
                except ids.Wait as wait:
                    pause = wait.ms / 1000
            else:
                pause = 0.05
            if time.monotonic() + pause > deadline:
                raise NoWorkerId("no post id could be issued in time (worker id or clock)")
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.generator is not None:
            with contextlib.suppress(*locks.TRANSIENT_ERRORS):
                await self._renew(self.generator)  # the last ids are below what it writes
            self.generator.revoke()
        if self.lease is not None:
            await self.lease.stop()
