"""The Locks service on a real etcd and a real API server: tokens grow, waiters are served in
the order they came, a release wakes exactly one waiter (counted), a lease that is not kept
alive hands the lock on, and one namespace cannot see or touch another's locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from hourglass.api import server as api_server
from hourglass.api.auth import Insecure, Tokens
from hourglass.locks import Etcd
from hourglass.mutex import Mutexes
from hourglass.store import db, tokens
from hourglass.v1 import locks_pb2 as pb
from hourglass.v1 import locks_pb2_grpc as pb_grpc
from tests.integration.helpers import eventually


@dataclass
class LockApi:
    stub: pb_grpc.LocksStub
    mutexes: Mutexes
    etcd: Etcd


def seconds(value: float) -> Duration:
    message = Duration()
    message.FromNanoseconds(int(value * 1e9))
    return message


@pytest.fixture
async def locks(pool: db.Pool, database_url: str, etcd: Etcd) -> AsyncIterator[LockApi]:
    server = await api_server.start(
        pool, "127.0.0.1:0", dsn=database_url, auth=Insecure(), etcd=etcd
    )
    assert server.locks is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield LockApi(pb_grpc.LocksStub(channel), server.locks, etcd)
    await server.stop(grace=None)


def acquire(name: str, *, ttl: float = 10, wait: float = 0, holder: str = "") -> pb.AcquireRequest:
    return pb.AcquireRequest(name=name, ttl=seconds(ttl), wait=seconds(wait), holder=holder)


async def waiting(api: LockApi, name: str) -> int:
    reply = await api.stub.Describe(pb.DescribeRequest(name=name))
    return int(reply.waiting)


async def test_tokens_grow_with_every_acquisition(locks: LockApi) -> None:
    seen = []
    for _ in range(3):
        reply = await locks.stub.Acquire(acquire("deploy", holder="me"))
        assert reply.acquired and reply.lease and reply.ttl.seconds == 10
        described = await locks.stub.Describe(pb.DescribeRequest(name="deploy"))
        assert described.holder.lease == reply.lease
        assert described.holder.token == reply.token
        assert described.holder.holder == "me"
        assert 0 < described.holder_ttl.seconds <= 10
        seen.append(reply.token)
        await locks.stub.Release(pb.ReleaseRequest(name="deploy", lease=reply.lease))
    assert seen == sorted(seen) and len(set(seen)) == 3
    free = await locks.stub.Describe(pb.DescribeRequest(name="deploy"))
    assert not free.HasField("holder") and free.waiting == 0


async def test_a_held_lock_is_busy_without_waiting(locks: LockApi) -> None:
    held = await locks.stub.Acquire(acquire("db", holder="first"))
    reply = await locks.stub.Acquire(acquire("db", holder="second"))
    assert not reply.acquired and reply.lease == 0 and reply.token == 0
    assert reply.holder.lease == held.lease and reply.holder.holder == "first"
    # The refused contender left nothing behind in line.
    assert await waiting(locks, "db") == 0
    timed = asyncio.get_running_loop().time()
    reply = await locks.stub.Acquire(acquire("db", wait=0.5))
    assert not reply.acquired
    assert asyncio.get_running_loop().time() - timed >= 0.5
    assert await waiting(locks, "db") == 0


async def test_names_do_not_nest(locks: LockApi) -> None:
    """ "a" and "a/b" are two locks: one lock's keys never fall in the other's range."""
    first = await locks.stub.Acquire(acquire("a"))
    second = await locks.stub.Acquire(acquire("a/b"))
    third = await locks.stub.Acquire(acquire("a.b"))
    assert first.acquired and second.acquired and third.acquired


async def test_fifo_and_one_wakeup_per_release(locks: LockApi) -> None:
    """N waiters line up; each release hands the lock to the next in line, and wakes exactly
    one waiter: the count of watch events delivered to waiters goes up by one per release."""
    holder = await locks.stub.Acquire(acquire("queue", holder="holder"))
    count = 8
    calls = []
    for n in range(count):
        calls.append(locks.stub.Acquire(acquire("queue", wait=120, holder=f"w{n}")))
        # Line them up one after another, so their order is known.
        await eventually(lambda n=n: _waiting_is(locks, "queue", n + 1))
    described = await locks.stub.Describe(pb.DescribeRequest(name="queue"))
    assert [w.holder for w in described.waiters] == [f"w{n}" for n in range(count)]
    assert [w.token for w in described.waiters] == sorted(w.token for w in described.waiters)
    tasks = [asyncio.ensure_future(call) for call in calls]
    wakeups = locks.mutexes.wakeups
    lease = holder.lease
    tokens_seen = [holder.token]
    for n in range(count):
        await locks.stub.Release(pb.ReleaseRequest(name="queue", lease=lease))
        reply = await asyncio.wait_for(tasks[n], 30)
        assert reply.acquired
        # Nobody behind it got the lock, nor was woken.
        assert not any(task.done() for task in tasks[n + 1 :])
        assert locks.mutexes.wakeups == wakeups + n + 1
        now = await locks.stub.Describe(pb.DescribeRequest(name="queue"))
        assert now.holder.holder == f"w{n}" and now.waiting == count - n - 1
        lease = reply.lease
        tokens_seen.append(reply.token)
    assert tokens_seen == sorted(tokens_seen)
    await locks.stub.Release(pb.ReleaseRequest(name="queue", lease=lease))


async def _waiting_is(api: LockApi, name: str, count: int) -> bool:
    return await waiting(api, name) == count


async def test_a_waiter_that_gives_up_wakes_only_its_successor(locks: LockApi) -> None:
    holder = await locks.stub.Acquire(acquire("line"))
    first = asyncio.ensure_future(locks.stub.Acquire(acquire("line", wait=120, holder="1")))
    await eventually(lambda: _waiting_is(locks, "line", 1))
    quitter = asyncio.ensure_future(locks.stub.Acquire(acquire("line", wait=1, holder="2")))
    await eventually(lambda: _waiting_is(locks, "line", 2))
    last = asyncio.ensure_future(locks.stub.Acquire(acquire("line", wait=120, holder="3")))
    await eventually(lambda: _waiting_is(locks, "line", 3))
    wakeups = locks.mutexes.wakeups
    assert not (await quitter).acquired
    # Its successor woke once, found its new predecessor and watches that one.
    await eventually(lambda: _waiting_is(locks, "line", 2))
    await eventually(lambda: _is(locks.mutexes.wakeups, wakeups + 1))
    assert not first.done() and not last.done()
    await locks.stub.Release(pb.ReleaseRequest(name="line", lease=holder.lease))
    got = await first
    assert got.acquired and not last.done()
    await locks.stub.Release(pb.ReleaseRequest(name="line", lease=got.lease))
    assert (await last).acquired
    assert locks.mutexes.wakeups == wakeups + 3


async def _is(value: int, expected: int) -> bool:
    return value == expected


async def test_a_cancelled_wait_leaves_the_line(locks: LockApi) -> None:
    await locks.stub.Acquire(acquire("gone"))
    call = locks.stub.Acquire(acquire("gone", wait=120))
    await eventually(lambda: _waiting_is(locks, "gone", 1))
    call.cancel()
    await eventually(lambda: _waiting_is(locks, "gone", 0))


async def test_an_expired_lease_hands_the_lock_on(locks: LockApi) -> None:
    """A holder that stops calling KeepAlive loses the lock after its TTL; its KeepAlive and
    Release are then NOT_FOUND, and the waiter holds it with a larger token."""
    stale = await locks.stub.Acquire(acquire("ttl", ttl=2))
    waiter = asyncio.ensure_future(locks.stub.Acquire(acquire("ttl", ttl=2, wait=60)))
    # The waiter's own lease (2 s) is kept alive by the server while it waits.
    got = await asyncio.wait_for(waiter, 30)
    assert got.acquired and got.token > stale.token
    for call, request in (
        (locks.stub.KeepAlive, pb.KeepAliveRequest(name="ttl", lease=stale.lease)),
        (locks.stub.Release, pb.ReleaseRequest(name="ttl", lease=stale.lease)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request)  # type: ignore[operator]
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "does not hold lock 'ttl'" in (refused.value.details() or "")
    kept = await locks.stub.KeepAlive(pb.KeepAliveRequest(name="ttl", lease=got.lease))
    assert kept.ttl.seconds >= 1


async def test_keep_alive_keeps_the_lock(locks: LockApi) -> None:
    held = await locks.stub.Acquire(acquire("kept", ttl=2))
    waiter = asyncio.ensure_future(locks.stub.Acquire(acquire("kept", wait=60)))
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        await locks.stub.KeepAlive(pb.KeepAliveRequest(name="kept", lease=held.lease))
        await asyncio.sleep(0.5)
    assert not waiter.done()
    await locks.stub.Release(pb.ReleaseRequest(name="kept", lease=held.lease))
    assert (await asyncio.wait_for(waiter, 30)).acquired


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AcquireRequest(ttl=seconds(10)), "name"),
        (pb.AcquireRequest(name="x" * 254, ttl=seconds(10)), "name"),
        (pb.AcquireRequest(name="a b", ttl=seconds(10)), "name"),
        (pb.AcquireRequest(name="a%2F", ttl=seconds(10)), "name"),
        (pb.AcquireRequest(name="ok"), "ttl"),
        (pb.AcquireRequest(name="ok", ttl=seconds(1)), "ttl"),
        (pb.AcquireRequest(name="ok", ttl=seconds(3601)), "ttl"),
        (pb.AcquireRequest(name="ok", ttl=seconds(10), wait=seconds(-1)), "wait"),
        (pb.AcquireRequest(name="ok", ttl=seconds(10), wait=seconds(3601)), "wait"),
        (pb.AcquireRequest(name="ok", ttl=seconds(10), holder="h" * 254), "holder"),
        (pb.AcquireRequest(name="ok", ttl=seconds(10), holder="a\nb"), "holder"),
    ],
)
async def test_bad_acquire_names_the_field(
    locks: LockApi, request_: pb.AcquireRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await locks.stub.Acquire(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(f"{field}: ")
    assert await waiting(locks, "ok") == 0


async def test_release_needs_a_lease(locks: LockApi) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await locks.stub.Release(pb.ReleaseRequest(name="ok"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("lease: ")


async def test_tenants_cannot_see_or_take_each_others_locks(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    now = datetime.now(UTC)
    secrets = {}
    async with db.transaction(pool) as conn:
        for namespace in ("alpha", "beta"):
            _, secrets[namespace] = await tokens.create(
                conn, namespace=namespace, name="test", now=now, expires_at=None
            )
    server = await api_server.start(
        pool, "127.0.0.1:0", dsn=database_url, auth=Tokens(pool), etcd=etcd
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.LocksStub(channel)

            def as_(namespace: str) -> list[tuple[str, str]]:
                return [("authorization", f"Bearer {secrets[namespace]}")]

            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.Acquire(acquire("shared"))
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

            mine = await stub.Acquire(acquire("shared", holder="alpha"), metadata=as_("alpha"))
            assert mine.acquired
            # Beta's "shared" is another lock: free, and beta sees nothing of alpha's.
            seen = await stub.Describe(pb.DescribeRequest(name="shared"), metadata=as_("beta"))
            assert not seen.HasField("holder")
            theirs = await stub.Acquire(acquire("shared"), metadata=as_("beta"))
            assert theirs.acquired
            # Alpha's lease named from beta is not beta's to keep alive or release.
            for call, request in (
                (stub.KeepAlive, pb.KeepAliveRequest(name="shared", lease=mine.lease)),
                (stub.Release, pb.ReleaseRequest(name="shared", lease=mine.lease)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(request, metadata=as_("beta"))  # type: ignore[operator]
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            still = await stub.Describe(pb.DescribeRequest(name="shared"), metadata=as_("alpha"))
            assert still.holder.lease == mine.lease and still.holder.holder == "alpha"
    finally:
        await server.stop(grace=None)
