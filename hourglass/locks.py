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
from aetcd import rpc

from hourglass.domain import FencingToken, RunId

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


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "host:port" or "http://host:port" -> (host, port)."""
    endpoint = endpoint.strip().removeprefix("http://")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r}: use HOST:PORT, e.g. 127.0.0.1:2379")
    return host, int(port)


class Etcd:
    """An etcd client scoped to one key prefix (one hourglass installation)."""

    def __init__(self, endpoints: str, prefix: str = DEFAULT_PREFIX, timeout: float = 5) -> None:
        # aetcd speaks to one endpoint; the first of a comma-separated list is used.
        host, port = parse_endpoint(endpoints.split(",")[0])
        self.client = aetcd.Client(host=host, port=port, timeout=timeout)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> None:
        """Raises unless etcd answers now (readiness probes)."""
        await self.client.status()

    def run_key(self, run_id: RunId) -> bytes:
        return f"{self.prefix}runs/{run_id}".encode()

    async def _txn(self, request: rpc.TxnRequest) -> rpc.TxnResponse:
        await self.client.connect()
        try:
            return await self.client.kvstub.Txn(request, timeout=self.client._timeout)
        except rpc.AioRpcError as exc:
            # The raw stub skips aetcd's error mapping: an etcd restart surfaced here as a
            # grpc AioRpcError that no retry took for transient, and the worker and the
            # claimer exited (tests/acceptance/test_faults.py::test_etcd_restart). Map it
            # the way aetcd maps the errors of its own calls.
            raise _client_error(exc) from exc

    async def grant(self, ttl: int) -> int:
        """A new lease; returns its id."""
        lease = await self.client.lease(ttl)
        return int(lease.id)

    async def keep_alive(self, lease_id: int) -> int:
        """Refreshes a lease; returns its remaining TTL (0: it has expired and is gone)."""
        reply = await self.client.refresh_lease(lease_id)
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease_id: int) -> None:
        await self.client.revoke_lease(lease_id)

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
        result = await self.client.get_prefix(prefix.encode(), keys_only=True)
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

    async def start(self) -> None:
        self.id = await self.etcd.grant(self.ttl)
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
                last_ok = now
            # A loop that was paused (SIGSTOP, a long GC) wakes up here with a stale clock:
            # the gap since the last good heartbeat tells the truth either way.
            if remaining == 0 or now - last_ok >= self.ttl:
                log.error("lease %x lost (ttl %ss)", self.id, self.ttl)
                self.lost.set()
                return
