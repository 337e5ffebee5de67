"""Named locks with fencing tokens and a FIFO queue of waiters, on etcd (the public Locks API).

The recipe is etcd's own lock (clientv3/concurrency.Mutex): every contender, holder or
waiter, owns one key under the lock's prefix, `<prefix>mutex/<namespace>/<name>/<lease>`,
on a lease of its own. Keys are ordered by their create revision, which etcd hands out in
increasing order, so:

- the holder is the key with the smallest create revision, and a contender's place in line is
  its key's place in that order (first come, first served);
- the holder's create revision is its fencing token: every later acquisition of the name
  creates its key later, so its token is larger;
- a waiter watches only the key just before its own (its predecessor) for deletion. A
  release deletes one key, so it wakes one waiter: the next in line. A waiter that gives up
  wakes only its own successor, which finds its new predecessor and watches that. No herd.

A contender that dies loses its key with its lease, which wakes its successor the same way.

Namespaces and names are percent-encoded into the key, and a name may not contain "%", so
one lock's prefix is never the prefix of another lock's keys ("a" and "a/b" are separate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import aetcd
from aetcd import rpc

from hourglass import metrics
from hourglass.clock import Clock, SystemClock
from hourglass.locks import TRANSIENT_ERRORS, Etcd

log = logging.getLogger(__name__)

MAX_NAME = 253
MAX_HOLDER = 253
# etcd will not keep a lease shorter than about 1.5 s (its election timeout), whatever it is
# asked for; 2 s is the shortest TTL that means what it says.
MIN_TTL = 2
MAX_TTL = 3600
MAX_WAIT = 3600.0
# Waiters Describe lists; it counts them all.
DESCRIBE_LIMIT = 1000
NAME = re.compile(r"[A-Za-z0-9._:/-]+", re.ASCII)
# How long to wait before looking again after etcd failed mid-wait.
_RETRY = 0.2
# A released lease of at most this TTL is left to expire rather than revoked (see release).
LINGER = 60


class LeaseExpired(Exception):
    """A waiter's lease ran out before it got the lock (etcd unreachable for a whole TTL)."""


def check_name(name: str) -> str | None:
    """Why `name` is not a lock name, or None when it is one."""
    if not name:
        return "is required"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters"
    if not NAME.fullmatch(name):
        return "may hold only letters, digits and . _ - : /"
    return None


def check_ttl(seconds: float) -> str | None:
    """Why a lease TTL of `seconds` is refused, or None."""
    if not MIN_TTL <= seconds <= MAX_TTL:
        return f"must be from {MIN_TTL}s to {MAX_TTL}s"
    return None


def check_wait(seconds: float) -> str | None:
    if seconds < 0:
        return "must not be negative"
    if seconds > MAX_WAIT:
        return f"must be at most {MAX_WAIT:.0f}s"
    return None


def lease_seconds(seconds: float) -> int:
    """A TTL as etcd counts it: whole seconds, rounded up so a holder never gets less."""
    return math.ceil(seconds)


def lock_prefix(etcd_prefix: str, *, namespace: str, name: str) -> bytes:
    return f"{etcd_prefix}mutex/{quote(namespace, safe='')}/{quote(name, safe='')}/".encode()


def _range_end(prefix: bytes) -> bytes:
    """The end of etcd's range of all keys starting with `prefix` (which ends in "/")."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(frozen=True)
class Entry:
    """A holder or a waiter: its lease, its (future) token, who it said it is, since when."""

    lease: int
    token: int
    holder: str
    since: datetime | None


@dataclass(frozen=True)
class Acquired:
    lease: int
    token: int
    ttl: int


@dataclass(frozen=True)
class Busy:
    """Not acquired in time; `holder` held the lock when the wait ended."""

    holder: Entry | None


@dataclass(frozen=True)
class Queue:
    holder: Entry | None
    holder_ttl: int | None
    waiters: list[Entry]
    waiting: int


def _entry(kv: rpc.KeyValue) -> Entry:
    try:
        value = json.loads(kv.value)
        holder, since = str(value.get("holder", "")), datetime.fromisoformat(value["since"])
    except (ValueError, KeyError, TypeError, AttributeError):
        holder, since = "", None
    return Entry(lease=kv.lease, token=kv.create_revision, holder=holder, since=since)


def _ttl(kv: rpc.KeyValue) -> int | None:
    """The TTL the key's lease was granted with, as its value records it."""
    try:
        ttl = json.loads(kv.value).get("ttl")
    except (ValueError, AttributeError):
        return None
    return ttl if isinstance(ttl, int) else None


class Mutexes:
    """The locks of one hourglass installation (one etcd prefix).

    `wakeups` counts the times a waiter was woken because the key before it went away: with
    the recipe above, one per release while anyone waits (tests/integration/test_locks.py
    and bench/locks.py count them)."""

    def __init__(self, etcd: Etcd, *, clock: Clock | None = None) -> None:
        self.etcd = etcd
        self.clock = clock or SystemClock()
        self.wakeups = 0
        self._revoking: set[asyncio.Task[None]] = set()

    def _prefix(self, namespace: str, name: str) -> bytes:
        return lock_prefix(self.etcd.prefix, namespace=namespace, name=name)

    def _key(self, prefix: bytes, lease: int) -> bytes:
        return prefix + f"{lease:016x}".encode()

    async def acquire(
        self, *, namespace: str, name: str, ttl: int, wait: float, holder: str = ""
    ) -> Acquired | Busy:
        """Takes the lock, waiting in line up to `wait` seconds. Raises LeaseExpired when the
        waiter's own lease ran out while it waited, and etcd's transient errors as they are."""
        prefix = self._prefix(namespace, name)
        lease = await self.etcd.grant(ttl)
        key = self._key(prefix, lease)
        value = json.dumps({"holder": holder, "since": self.clock.now().isoformat(), "ttl": ttl})
        held = False
        try:
            # One round trip: create our key, and read the first key in line (the holder) and
            # the last two (ours, and the one just before it).
            created = await self.etcd._txn(
                rpc.TxnRequest(
                    success=[
                        rpc.RequestOp(
                            request_put=rpc.PutRequest(key=key, value=value.encode(), lease=lease)
                        ),
                        self._first(prefix, limit=1),
                        self._before(prefix, revision=0, limit=2),
                    ]
                )
            )
            token = created.header.revision
            first = created.responses[1].response_range.kvs[0]
            if first.create_revision == token:
                held = True
                return Acquired(lease=lease, token=token, ttl=ttl)
            if wait <= 0:
                return Busy(holder=_entry(first))
            predecessor = created.responses[2].response_range.kvs[1].key
            try:
                async with asyncio.timeout(wait), asyncio.TaskGroup() as group:
                    keeping = group.create_task(self._keep_alive(lease, ttl))
                    await self._wait_for_turn(
                        prefix, key=key, token=token, predecessor=predecessor, seen=token
                    )
                    keeping.cancel()
            except TimeoutError:
                return Busy(holder=await self._holder(prefix))
            except ExceptionGroup as group_error:
                raise group_error.exceptions[0] from None
            held = True
            return Acquired(lease=lease, token=token, ttl=ttl)
        finally:
            if not held:
                # Out of line: our key goes with the lease, which wakes only our successor.
                # Shielded: a cancelled call (the client went away) must still clean up.
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await asyncio.shield(self.etcd.revoke(lease))

    async def _wait_for_turn(
        self, prefix: bytes, *, key: bytes, token: int, predecessor: bytes, seen: int
    ) -> None:
        """Returns once no key before ours is left: watches only the one just before ours,
        and after each deletion looks for the new one just before ours (etcd's waitDeletes).
        After an etcd error it looks again rather than trusting the watch it had."""
        before: bytes | None = predecessor
        while True:
            try:
                if before is None:
                    found = await self.etcd._txn(
                        rpc.TxnRequest(
                            success=[
                                self._before(prefix, revision=token, limit=1),
                                rpc.RequestOp(request_range=rpc.RangeRequest(key=key)),
                            ]
                        )
                    )
                    if not found.responses[1].response_range.kvs:
                        raise LeaseExpired("the waiter's lease expired before it got the lock")
                    earlier = found.responses[0].response_range.kvs
                    if not earlier:
                        return
                    before, seen = earlier[0].key, found.header.revision
                await self._deleted(before, after=seen)
                self.wakeups += 1
                metrics.lock_wakeups.inc()
                before = None
            except TRANSIENT_ERRORS as exc:
                log.warning("lock wait: etcd failed (%s); looking again", exc)
                before = None
                await asyncio.sleep(_RETRY)

    async def _deleted(self, key: bytes, *, after: int) -> None:
        """Returns when `key` is deleted after revision `after` (at once if it already was:
        the watch starts from the revision we read it at, so no deletion slips by)."""
        watch = await self.etcd.watch_deletes(key, start_revision=after + 1)
        try:
            async for _ in watch:
                return
        finally:
            await watch.cancel()

    async def _keep_alive(self, lease: int, ttl: int) -> None:
        """Keeps a waiter's lease alive while it waits; the client only learns the lease once
        it holds the lock."""
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                remaining = await self.etcd.keep_alive(lease)
            except TRANSIENT_ERRORS as exc:
                log.warning("lock wait: lease %x keep-alive failed: %s", lease, exc)
                continue
            if remaining <= 0:
                raise LeaseExpired("the waiter's lease expired before it got the lock")

    async def keep_alive(self, *, namespace: str, name: str, lease: int) -> int | None:
        """Renews the lease of the lock's holder; returns the TTL from now, or None when this
        lease does not hold (or wait for) this lock in this namespace."""
        if not await self._exists(self._key(self._prefix(namespace, name), lease)):
            return None
        remaining = await self.etcd.keep_alive(lease)
        return remaining if remaining > 0 else None

    async def release(self, *, namespace: str, name: str, lease: int) -> bool:
        """Gives the lock up: deletes the key while it is still on `lease` (one etcd write,
        which wakes the next waiter), then revokes the lease off the caller's path. False when
        this lease does not hold the lock (it expired, or was released)."""
        key = self._key(self._prefix(namespace, name), lease)
        deleted = await self.etcd._txn(
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key, target=rpc.Compare.LEASE, result=rpc.Compare.EQUAL, lease=lease
                    )
                ],
                success=[
                    rpc.RequestOp(
                        request_delete_range=rpc.DeleteRangeRequest(key=key, prev_kv=True)
                    )
                ],
            )
        )
        if not deleted.succeeded:
            return False
        gone = deleted.responses[0].response_delete_range.prev_kvs
        ttl = _ttl(gone[0]) if gone else None
        metrics.lock_releases.inc()
        # The lease holds nothing now. Revoking it is one more raft write, which halved the
        # rounds per second of Acquire + Release (bench/locks.py); a lease that expires is
        # revoked by etcd with the same write, only later. So a short lease is left to
        # expire, like the bare etcd loop of the bench leaves its own, and only one that
        # would linger for long is revoked, off the caller's path.
        if ttl is None or ttl > LINGER:
            task = asyncio.create_task(self._revoke_quietly(lease))
            self._revoking.add(task)
            task.add_done_callback(self._revoking.discard)
        return True

    async def _revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(aetcd.exceptions.ClientError, *TRANSIENT_ERRORS):
            await self.etcd.revoke(lease)

    async def describe(self, *, namespace: str, name: str) -> Queue:
        prefix = self._prefix(namespace, name)
        found = await self.etcd._txn(
            rpc.TxnRequest(success=[self._first(prefix, limit=DESCRIBE_LIMIT + 1)])
        )
        listed = found.responses[0].response_range
        entries = [_entry(kv) for kv in listed.kvs]
        if not entries:
            return Queue(holder=None, holder_ttl=None, waiters=[], waiting=0)
        holder_ttl = None
        with contextlib.suppress(aetcd.exceptions.ClientError):
            holder_ttl = max(await self.etcd.lease_ttl(entries[0].lease), 0)
        return Queue(
            holder=entries[0],
            holder_ttl=holder_ttl,
            waiters=entries[1:],
            waiting=int(listed.count) - 1,
        )

    async def _holder(self, prefix: bytes) -> Entry | None:
        found = await self.etcd._txn(rpc.TxnRequest(success=[self._first(prefix, limit=1)]))
        kvs = found.responses[0].response_range.kvs
        return _entry(kvs[0]) if kvs else None

    async def _exists(self, key: bytes) -> bool:
        found = await self.etcd._txn(
            rpc.TxnRequest(
                success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key, keys_only=True))]
            )
        )
        return bool(found.responses[0].response_range.kvs)

    @staticmethod
    def _first(prefix: bytes, *, limit: int) -> rpc.RequestOp:
        """The first `limit` keys in line (oldest create revision first)."""
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(
                key=prefix,
                range_end=_range_end(prefix),
                sort_target=rpc.RangeRequest.CREATE,
                sort_order=rpc.RangeRequest.ASCEND,
                limit=limit,
            )
        )

    @staticmethod
    def _before(prefix: bytes, *, revision: int, limit: int) -> rpc.RequestOp:
        """The last `limit` keys in line created before `revision` (0: all of them), newest
        first."""
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(
                key=prefix,
                range_end=_range_end(prefix),
                sort_target=rpc.RangeRequest.CREATE,
                sort_order=rpc.RangeRequest.DESCEND,
                limit=limit,
                max_create_revision=revision - 1 if revision else 0,
                keys_only=True,
            )
        )
