"""etcd through any live member of a cluster: every endpoint of a comma-separated list is used.

aetcd (our etcd client) speaks to one HOST:PORT, and gRPC's own multi-address targets
(`ipv4:a:p,b:p`) take IP literals only, while a Kubernetes StatefulSet's members are DNS names
(`hourglass-etcd-0.hourglass-etcd:2379`) whose addresses change when a pod is replaced. So
`Endpoints` keeps one aetcd client per endpoint and pins one of them, the way etcd's own Go
client (clientv3) does:

- **Connect to any live member.** Before a call, the pinned endpoint's channel must be
  connected (`connect_timeout`). If it is not, nothing was sent, so the call goes on to the
  next endpoint in list order (wrapping around), which becomes the pinned one.
- **Fail over on connection loss.** A call that was sent and then failed with UNAVAILABLE or
  DEADLINE_EXCEEDED (the member died, stalled, or lost its leader) moves the pin to the next
  endpoint. A *repeatable* call (a read, a lease keep-alive, grant or revoke, a watch) is
  retried there at once. Any other call (a write transaction) may have been applied before
  its reply was lost, so it is never repeated behind the caller's back: its error is raised,
  and the caller, which already treats it as transient, decides (clientv3's nonRepeatable
  policy).
- **The same cluster behind every member.** Leases, revisions and watches are cluster state,
  replicated by raft: a lease granted through member A is kept alive through member B, a key's
  create revision (our fencing token) is the same read through any member and keeps growing
  across leader changes, and a watch started again on B from the revision last seen on A
  misses no event. A new etcd leader also renews every lease by its full TTL, so an election
  never shortens one.
- **Only dead endpoints:** `EtcdUnavailable`, whose message names every endpoint and why it
  failed. It is a `ConnectionFailedError`, transient like any other etcd outage.

The pin only moves on failure: once a member is dead, every call goes to the next one and
stays there, even after the first comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aetcd
import grpc
from aetcd import rpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# The failures of one endpoint, after which another may answer.
ENDPOINT_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
)
# gRPC channel options of every endpoint's client.
CHANNEL_OPTIONS = {
    # A member that comes back is connected again within 2 s (gRPC's default backoff grows to
    # 120 s, which would keep a restarted single-member etcd out of reach for minutes).
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    # While a call is open (a watch can be open for long), ping the member so that a hung one
    # is noticed in 15 s rather than never. etcd refuses pings closer than 5 s apart
    # (--grpc-keepalive-min-time) and, by default, pings without an open call.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
}


# aetcd ships no type hints, so mypy sees its exceptions as Any.
class EtcdUnavailable(aetcd.exceptions.ConnectionFailedError):  # type: ignore[misc]
    """No endpoint of the list answered: transient, like any etcd outage."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "host:port" or "http://host:port" -> (host, port)."""
    endpoint = endpoint.strip().removeprefix("http://")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r}: use HOST:PORT, e.g. 127.0.0.1:2379")
    return host, int(port)


def parse_endpoints(endpoints: str) -> list[str]:
    """A comma-separated list of endpoints -> "host:port" each, in order, without repeats.
    Raises ValueError naming the bad one."""
    parsed: list[str] = []
    for endpoint in endpoints.split(","):
        if not endpoint.strip():
            continue
        host, port = parse_endpoint(endpoint)
        address = f"{host}:{port}"
        if address not in parsed:
            parsed.append(address)
    if not parsed:
        raise ValueError("etcd endpoints: none given; use HOST:PORT[,HOST:PORT...]")
    return parsed


def is_read_only(request: rpc.TxnRequest) -> bool:
    """Whether a transaction only reads (every operation of both branches is a range), so
    that sending it twice is the same as sending it once."""
    return all(op.HasField("request_range") for op in (*request.success, *request.failure))


class Endpoints:
    """One aetcd client per endpoint, created when first needed; calls go to the pinned one
    and fail over as the module says."""

    def __init__(self, endpoints: str, *, timeout: float, connect_timeout: float = 1.0) -> None:
        self.addresses = parse_endpoints(endpoints)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._clients: dict[str, aetcd.Client] = {}
        self._pinned = 0

    @property
    def current(self) -> str:
        """The endpoint calls go to now."""
        return self.addresses[self._pinned]

    @property
    def client(self) -> aetcd.Client:
        """The pinned endpoint's aetcd client, for calls that need no failover (benches,
        tests)."""
        return self._client(self.current)

    def _client(self, address: str) -> aetcd.Client:
        client = self._clients.get(address)
        if client is None:
            host, port = parse_endpoint(address)
            client = aetcd.Client(
                host=host, port=port, timeout=self.timeout, options=dict(CHANNEL_OPTIONS)
            )
            self._clients[address] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def call(
        self, operation: Callable[[aetcd.Client], Awaitable[T]], *, repeatable: bool
    ) -> T:
        """`operation` on a live member: the pinned one, or the next that answers."""
        failures: list[str] = []
        count = len(self.addresses)
        start = self._pinned
        for step in range(count):
            index = (start + step) % count
            address = self.addresses[index]
            client = self._client(address)
            try:
                await self._connected(client)
            except ENDPOINT_ERRORS as exc:
                failures.append(f"{address} ({exc})")
                continue  # nothing was sent: the call may go to any other member
            self._pin(index, failures)
            try:
                return await operation(client)
            except ENDPOINT_ERRORS as exc:
                failures.append(f"{address} ({exc})")
                self._pin((index + 1) % count, failures)
                if not repeatable:
                    raise
        raise EtcdUnavailable(
            f"no etcd endpoint answered ({len(failures)} tried): " + "; ".join(failures)
        )

    def _pin(self, index: int, failures: list[str]) -> None:
        if index != self._pinned:
            log.warning(
                "etcd: now using %s (after %s)",
                self.addresses[index],
                "; ".join(failures) or "an error",
            )
            self._pinned = index

    async def _connected(self, client: aetcd.Client) -> None:
        """Returns once the client's channel is connected; raises ConnectionFailedError when
        the member refuses, or ConnectionTimeoutError when it does not answer in time."""
        await client.connect()  # builds the channel; connects nothing yet
        channel: grpc.aio.Channel = client.channel
        state = channel.get_state(try_to_connect=True)
        if state == grpc.ChannelConnectivity.READY:
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                while state != grpc.ChannelConnectivity.READY:
                    if state in (
                        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                        grpc.ChannelConnectivity.SHUTDOWN,
                    ):
                        raise aetcd.exceptions.ConnectionFailedError(
                            "cannot connect: refused or unreachable"
                        )
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise aetcd.exceptions.ConnectionTimeoutError(
                f"not connected within {self.connect_timeout:g}s"
            ) from None
