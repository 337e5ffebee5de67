"""etcd: who holds which run right now, and who leads.

Each worker process keeps one lease alive with a heartbeat. Holding a run means owning the key
`<prefix>runs/<run id>` on that lease; the key's create revision is the run's fencing token,
and since etcd revisions only grow, a later holder always has a larger token. When a worker
dies or stalls past its TTL, etcd deletes its keys and the claimer sees the run as lost.

Many keys are created in one transaction (one round trip for a whole claim batch); all keys
of one transaction share its revision, which is still a correct token for each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aetcd
from aetcd import rpc, rtypes

from hourglass.domain import FencingToken, RunId
from hourglass.etcd_endpoints import Endpoints, is_read_only

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/hourglass/"
# Errors that mean "etcd is not reachable now": retry, never crash.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ClientError,
    ConnectionError,
    TimeoutError,
)


def _client_error(error: rpc.AioRpcError) -> aetcd.exceptions.ClientError:
    """The aetcd exception for a grpc error, as aetcd's own calls raise it."""
    code, details = error.code(), error.details() or str(error.code())
    if code == rpc.StatusCode.UNAVAILABLE:
        return aetcd.exceptions.ConnectionFailedError(details)
    if code == rpc.StatusCode.DEADLINE_EXCEEDED:
        return aetcd.exceptions.ConnectionTimeoutError(details)
    return aetcd.exceptions.ClientError(details)


class Etcd:
    """An etcd client scoped to one key prefix (one hourglass installation).

    `endpoints` is a comma-separated list of the cluster's members: every call goes to a live
    one, and fails over to the next when it dies (hourglass/etcd_endpoints.py says how, and
    which calls are repeated there)."""

    def __init__(self, endpoints: str, prefix: str = DEFAULT_PREFIX, timeout: float = 5) -> None:
        self.endpoints = Endpoints(endpoints, timeout=timeout)
        self.timeout = timeout
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    @property
    def client(self) -> aetcd.Client:
        """The aetcd client of the member in use now, without failover (benches, tests)."""
        return self.endpoints.client

    async def close(self) -> None:
        await self.endpoints.close()

    async def ping(self) -> None:
        """Raises unless etcd answers now (readiness probes)."""
        await self.client.status()

    def run_key(self, run_id: RunId) -> bytes:
        return f"{self.prefix}runs/{run_id}".encode()

    async def _txn(self, request: rpc.TxnRequest) -> rpc.TxnResponse:
        """One transaction. A read-only one is repeated on another member when its own dies;
        a write is not (it may have been applied), and its error is raised."""

        async def txn(client: aetcd.Client) -> rpc.TxnResponse:
            try:
                return await client.kvstub.Txn(request, timeout=self.timeout)
            except rpc.AioRpcError as exc:
                # The raw stub skips aetcd's error mapping: an etcd restart surfaced here as a
                # grpc AioRpcError that no retry took for transient, and the worker and the
                # claimer exited (tests/acceptance/test_faults.py::test_etcd_restart). Map it
                # the way aetcd maps the errors of its own calls.
                raise _client_error(exc) from exc

        return await self.endpoints.call(txn, repeatable=is_read_only(request))

    async def grant(self, ttl: int) -> int:
        """A new lease; returns its id. Repeated on another member after a failure: a grant
        whose reply was lost leaves a lease that holds nothing and expires by itself."""
        lease = await self.endpoints.call(lambda c: c.lease(ttl), repeatable=True)
        return int(lease.id)

    async def keep_alive(self, lease_id: int) -> int:
        """Refreshes a lease; returns its remaining TTL (0: it has expired and is gone)."""
        reply = await self.endpoints.call(lambda c: c.refresh_lease(lease_id), repeatable=True)
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease_id: int) -> None:
        await self.endpoints.call(lambda c: c.revoke_lease(lease_id), repeatable=True)

    async def lease_ttl(self, lease_id: int) -> int:
        """The seconds a lease has left (negative: it is gone)."""
        info = await self.endpoints.call(
            lambda c: c.get_lease_info(lease_id, keys=False), repeatable=True
        )
        return int(info.TTL)

    async def watch_deletes(self, key: bytes, *, start_revision: int) -> rtypes.Watch:
        """A watch of the deletions of `key` from `start_revision` on, on a live member. If
        that member dies, the watch raises a transient error: watch again, from the revision
        last seen, through this method (any member serves the same history)."""
        return await self.endpoints.call(
            lambda c: c.watch(key, start_revision=start_revision, kind=rtypes.EventKind.DELETE),
            repeatable=True,
        )

    async def hold_runs(
        self, run_ids: Iterable[RunId], *, lease_id: int, holder: str
    ) -> dict[RunId, FencingToken]:
        """Creates the keys of runs that nobody holds, on the lease, in one transaction where
        possible. Returns the token of each run now held; a run whose key still exists (its
        previous holder's lease has not run out) is left out."""
        ids = list(run_ids)
        if not ids:
            return {}
        request = rpc.TxnRequest(
            compare=[self._absent(run_id) for run_id in ids],
            success=[self._put(run_id, lease_id, holder) for run_id in ids],
        )
        response = await self._txn(request)
        if response.succeeded:
            token = FencingToken(response.header.revision)
            return dict.fromkeys(ids, token)
        # Some key exists: fall back to one transaction per run to find which are free.
        held: dict[RunId, FencingToken] = {}
        for run_id in ids:
            single = await self._txn(
                rpc.TxnRequest(
                    compare=[self._absent(run_id)],
                    success=[self._put(run_id, lease_id, holder)],
                )
            )
            if single.succeeded:
                held[run_id] = FencingToken(single.header.revision)
        return held

    async def release_runs(self, held: Mapping[RunId, FencingToken]) -> None:
        """Deletes run keys once their results are written, each only while it is the key
        its holder created (its create revision is the holder's token).

        A holder whose result was refused no longer owns the key: the run's next holder
        does. Deleting it unconditionally made the claimer take that healthy attempt back as
        lost, whose worker then did the same to the next one, until the run failed with every
        attempt "lost" (tests/acceptance/test_faults.py, the SIGSTOP scenario).

        All keys go in one transaction when every one of them is still its holder's (the
        usual case); when any is not, each is released on its own."""
        if not held:
            return
        together = await self._txn(
            rpc.TxnRequest(
                compare=[self._created_by(run_id, token) for run_id, token in held.items()],
                success=[self._delete(run_id) for run_id in held],
            )
        )
        if together.succeeded or len(held) == 1:
            return
        for run_id, token in held.items():
            await self._txn(
                rpc.TxnRequest(
                    compare=[self._created_by(run_id, token)], success=[self._delete(run_id)]
                )
            )

    async def release_runs_on_lease(self, run_ids: Iterable[RunId], *, lease_id: int) -> None:
        """Deletes the keys of these runs that sit on `lease_id`, and no other holder's: the
        clean-up after a claim that failed, which may or may not have created them."""
        for run_id in run_ids:
            await self._txn(
                rpc.TxnRequest(
                    compare=[self._on_lease(run_id, lease_id)], success=[self._delete(run_id)]
                )
            )

    async def held_runs(self) -> dict[str, FencingToken]:
        """Every run key that exists now: run id (as text) -> create revision."""
        prefix = f"{self.prefix}runs/"
        result = await self.endpoints.call(
            lambda c: c.get_prefix(prefix.encode(), keys_only=True), repeatable=True
        )
        return {
            kv.key.decode().removeprefix(prefix): FencingToken(kv.create_revision) for kv in result
        }

    async def campaign(self, name: str, *, lease_id: int, holder: str) -> bool:
        """Becomes leader of `name` unless someone else is: put-if-absent on the lease."""
        key = f"{self.prefix}leaders/{name}".encode()
        response = await self._txn(
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key,
                        target=rpc.Compare.CREATE,
                        result=rpc.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc.RequestOp(
                        request_put=rpc.PutRequest(key=key, value=holder.encode(), lease=lease_id)
                    )
                ],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
            )
        )
        if response.succeeded:
            return True
        kvs = response.responses[0].response_range.kvs
        # Already ours (a repeated campaign on the same lease) counts as leading.
        return bool(kvs) and kvs[0].lease == lease_id

    def _absent(self, run_id: RunId) -> rpc.Compare:
        return rpc.Compare(
            key=self.run_key(run_id),
            target=rpc.Compare.CREATE,
            result=rpc.Compare.EQUAL,
            create_revision=0,
        )

    def _created_by(self, run_id: RunId, token: FencingToken) -> rpc.Compare:
        """The run's key is the one its holder created: its create revision is the token."""
        return rpc.Compare(
            key=self.run_key(run_id),
            target=rpc.Compare.CREATE,
            result=rpc.Compare.EQUAL,
            create_revision=token,
        )

    def _on_lease(self, run_id: RunId, lease_id: int) -> rpc.Compare:
        return rpc.Compare(
            key=self.run_key(run_id),
            target=rpc.Compare.LEASE,
            result=rpc.Compare.EQUAL,
            lease=lease_id,
        )

    def _delete(self, run_id: RunId) -> rpc.RequestOp:
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self.run_key(run_id)))

    def _put(self, run_id: RunId, lease_id: int, holder: str) -> rpc.RequestOp:
        return rpc.RequestOp(
            request_put=rpc.PutRequest(
                key=self.run_key(run_id), value=holder.encode(), lease=lease_id
            )
        )


@dataclass
class Lease:
    """A lease kept alive by a heartbeat task. `lost` is set once it can no longer be trusted:
    etcd says it expired, or no heartbeat got through for a whole TTL."""

    etcd: Etcd
    ttl: int
    id: int = 0

    def __post_init__(self) -> None:
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Event loop time of the last heartbeat etcd answered (or of the grant).
        self._last_ok = 0.0

    def fresh(self) -> bool:
        """Whether the lease can be trusted right now: not lost, and confirmed within a TTL.
        A process that was stalled past its TTL sees False at once on waking, before its
        heartbeat has run and set `lost`."""
        elapsed = asyncio.get_running_loop().time() - self._last_ok
        return self.id != 0 and not self.lost.is_set() and elapsed < self.ttl

    async def start(self) -> None:
        self.id = await self.etcd.grant(self.ttl)
        self._last_ok = asyncio.get_running_loop().time()
        self.lost.clear()
        self._task = asyncio.create_task(self._heartbeat(), name=f"lease {self.id:x}")

    async def stop(self, *, revoke: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if revoke and not self.lost.is_set():
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.etcd.revoke(self.id)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                remaining = await self.etcd.keep_alive(self.id)
            except TRANSIENT_ERRORS as exc:
                log.warning("lease %x heartbeat failed: %s", self.id, exc)
                remaining = -1
            now = loop.time()
            if remaining > 0:
                last_ok = self._last_ok = now
            # A loop that was paused (SIGSTOP, a long GC) wakes up here with a stale clock:
            # the gap since the last good heartbeat tells the truth either way.
            if remaining == 0 or now - last_ok >= self.ttl:
                log.error("lease %x lost (ttl %ss)", self.id, self.ttl)
                self.lost.set()
                return
