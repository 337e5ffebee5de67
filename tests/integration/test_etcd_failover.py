"""Three real etcd members, and the one first in the endpoint list dies (SIGKILL) while it is
also the leader: the wrapper carries on through the others. A worker's lease outlives its
TTL and keeps its runs' tokens, a lock holder keeps its lock, a waiter's watch resumes on
another member and gets the lock with a higher token once the holder stops, and a list of
dead endpoints fails with an error naming each of them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from hourglass.domain import RunId
from hourglass.embedded import free_port
from hourglass.etcd_endpoints import EtcdUnavailable
from hourglass.locks import TRANSIENT_ERRORS, Etcd, Lease
from hourglass.mutex import Acquired, Mutexes
from tests.etcd_cluster import EtcdCluster, etcd_cluster
from tests.integration.helpers import eventually

__all__ = ["etcd_cluster"]  # fixture

TTL = 4  # above an election after the leader's death on a busy machine, short for the test


@pytest.fixture
async def clients(etcd_cluster: EtcdCluster) -> AsyncIterator[list[Etcd]]:
    """Clients given every member, first member first, on a prefix of this test's own; the
    test makes more with `new()`. The first member leads."""
    made: list[Etcd] = []
    etcd_cluster.make_leader(0)
    yield made
    for client in made:
        await client.close()


def new(clients: list[Etcd], endpoints: str, prefix: str) -> Etcd:
    client = Etcd(endpoints, prefix)
    clients.append(client)
    return client


async def outlive(ttl: float, *alive: asyncio.Event) -> None:
    """Waits until `ttl` has passed twice over, failing as soon as one of `alive` is set
    (a lease lost)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 2 * ttl

    async def past() -> bool:
        assert not any(event.is_set() for event in alive), "a lease was lost"
        return loop.time() >= until

    await eventually(past, timeout=4 * ttl)


async def test_a_lease_granted_through_the_dead_first_member_lives_on(
    etcd_cluster: EtcdCluster, clients: list[Etcd]
) -> None:
    prefix = f"/failover-{uuid.uuid4().hex[:8]}/"
    etcd = new(clients, etcd_cluster.endpoints, prefix)
    lease = Lease(etcd, TTL)
    await lease.start()
    first = etcd_cluster.members[0].endpoint
    assert etcd.endpoints.current == first
    run = RunId(uuid.uuid4())
    held = await etcd.hold_runs([run], lease_id=lease.id, holder="w1")

    etcd_cluster.kill(0)
    await outlive(TTL, lease.lost)

    assert etcd.endpoints.current != first
    # Read through the survivors alone: the run is still held, on the same lease, with the
    # token it was given through the dead member.
    observer = new(clients, etcd_cluster.live_endpoints(), prefix)
    assert await observer.held_runs() == {str(run): held[run]}
    assert await observer.lease_ttl(lease.id) > 0
    # Fenced writes keep working: the holder releases its run with the old token.
    await etcd.release_runs(held)
    assert await observer.held_runs() == {}
    await lease.stop()


async def test_a_lock_holder_keeps_its_token_and_its_waiter_gets_a_higher_one(
    etcd_cluster: EtcdCluster, clients: list[Etcd]
) -> None:
    prefix = f"/failover-{uuid.uuid4().hex[:8]}/"
    holder = Mutexes(new(clients, etcd_cluster.endpoints, prefix))
    waiter = Mutexes(new(clients, etcd_cluster.endpoints, prefix))
    held = await holder.acquire(namespace="ns", name="deploy", ttl=TTL, wait=0, holder="a")
    assert isinstance(held, Acquired)
    # The waiter queues behind, watching the holder's key through the first member.
    waiting = asyncio.create_task(
        waiter.acquire(namespace="ns", name="deploy", ttl=TTL, wait=60, holder="b")
    )

    async def queued() -> bool:
        return (await holder.describe(namespace="ns", name="deploy")).waiting == 1

    await eventually(queued)

    etcd_cluster.kill(0)
    # The holder keeps its lease alive through the survivors (as `hourglass lock` does
    # through the API), past twice its TTL.
    loop = asyncio.get_running_loop()
    until = loop.time() + 2 * TTL
    while loop.time() < until:
        remaining = await holder.keep_alive(namespace="ns", name="deploy", lease=held.lease)
        assert remaining is not None, "the holder lost its lock"
        await asyncio.sleep(TTL / 4)
    queue = await holder.describe(namespace="ns", name="deploy")
    assert queue.holder is not None
    assert (queue.holder.lease, queue.holder.token) == (held.lease, held.token)
    assert not waiting.done()

    # The holder stops keeping its lease alive (it died): once the lease expires, the waiter,
    # whose watch resumed on another member, gets the lock with a larger token.
    got = await asyncio.wait_for(waiting, timeout=6 * TTL)
    assert isinstance(got, Acquired)
    assert got.token > held.token
    assert got.lease != held.lease


async def test_only_dead_endpoints_fail_with_an_error_naming_each() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    etcd = Etcd(",".join(dead), "/nowhere/")
    try:
        with pytest.raises(EtcdUnavailable) as raised:
            await etcd.grant(5)
    finally:
        await etcd.close()
    message = str(raised.value)
    assert all(endpoint in message for endpoint in dead), message
    # Components ride it out like any etcd outage.
    assert isinstance(raised.value, TRANSIENT_ERRORS)
