"""Tokens at the API: they expire, and an open stream ends once its token stops working,
within the auth cache's lifetime, leaving no task behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.api import server as api_server
from hourglass.api.auth import Tokens
from hourglass.store import db, tokens
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.integration.helpers import eventually

CACHE_SECONDS = 1.0


class MovableClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


@dataclass
class Api:
    stub: pb_grpc.JobSchedulerStub
    clock: MovableClock
    pool: db.Pool

    async def token(self, namespace: str, *, ttl: timedelta | None = None) -> tuple[str, str]:
        """(token id, token) of a new token of `namespace`."""
        now = datetime.now(UTC)
        async with db.transaction(self.pool) as conn:
            token_id, secret = await tokens.create(
                conn,
                namespace=namespace,
                name="test",
                now=now,
                expires_at=now + ttl if ttl else None,
            )
        return str(token_id), secret

    async def revoke(self, token_id: str) -> None:
        import uuid

        async with db.transaction(self.pool) as conn:
            assert await tokens.revoke(conn, uuid.UUID(token_id), now=datetime.now(UTC))


def bearer(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


@pytest.fixture
async def api(pool: db.Pool, database_url: str) -> AsyncIterator[Api]:
    clock = MovableClock()
    server = await api_server.start(
        pool,
        "127.0.0.1:0",
        dsn=database_url,
        auth=Tokens(pool, cache_seconds=CACHE_SECONDS, clock=clock),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Api(stub=pb_grpc.JobSchedulerStub(channel), clock=clock, pool=pool)
    finally:
        await server.stop(grace=None)


def every_hour() -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"])))
    request.spec.schedule.every.interval.FromSeconds(3600)
    return request


async def test_an_expired_token_is_refused_and_told_so(api: Api) -> None:
    _, secret = await api.token("team-x", ttl=timedelta(hours=1))
    await api.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(secret))
    # Its namespace is cached now; the expiry still applies at once, without a query.
    api.clock.at += timedelta(hours=1, seconds=1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(secret))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = raised.value.details() or ""
    assert "expired" in details and "hourglass token create --namespace team-x" in details
    # A token without a TTL does not expire.
    _, forever = await api.token("team-x")
    api.clock.at += timedelta(days=3650)
    await api.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(forever))


async def _open_tasks() -> int:
    return len(asyncio.all_tasks())


async def _ends_after_revoke(api: Api, token_id: str, stream: grpc.aio.UnaryStreamCall) -> float:  # type: ignore[type-arg]
    """Revokes the token while `stream` is open; returns the seconds until the stream ended,
    having checked that it ended UNAUTHENTICATED."""
    await api.revoke(token_id)
    revoked = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while await stream.read() is not grpc.aio.EOF:
            pass
    elapsed = time.monotonic() - revoked
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, raised.value
    return elapsed


async def test_a_watch_ends_within_the_cache_lifetime_once_its_token_is_revoked(
    api: Api,
) -> None:
    token_id, secret = await api.token("watchers")
    job_id = (await api.stub.ScheduleJob(every_hour(), metadata=bearer(secret))).job_id
    before = await _open_tasks()
    stream = api.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=bearer(secret))
    first = await stream.read()
    assert first.job.id == job_id  # type: ignore[union-attr]
    # Several re-checks pass while the token works (a window to observe, not a condition to
    # wait for): the stream stays open and still delivers.
    await asyncio.sleep(2 * CACHE_SECONDS)
    assert not stream.done()
    await api.stub.PauseJob(pb.PauseJobRequest(job_id=job_id), metadata=bearer(secret))
    deadline = time.monotonic() + 3 * CACHE_SECONDS
    while time.monotonic() < deadline:
        event = await asyncio.wait_for(stream.read(), 3 * CACHE_SECONDS)
        if event.job.state == pb.JOB_STATE_PAUSED:  # type: ignore[union-attr]
            break
    else:
        raise AssertionError("the pause never reached the stream")

    elapsed = await _ends_after_revoke(api, token_id, stream)
    print(f"watch ended {elapsed:.2f}s after the revoke (cache {CACHE_SECONDS}s)")
    # The cache's lifetime, plus one round of the stream's own work on a busy machine.
    assert elapsed < CACHE_SECONDS + 0.5
    # Nothing of the stream is left running in the server.
    await eventually(lambda: _settled(before))


async def _settled(before: int) -> bool:
    return await _open_tasks() <= before


async def test_following_logs_ends_within_the_cache_lifetime_once_its_token_is_revoked(
    api: Api,
) -> None:
    token_id, secret = await api.token("followers")
    job_id = (await api.stub.ScheduleJob(every_hour(), metadata=bearer(secret))).job_id
    run = (
        await api.stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id), metadata=bearer(secret))
    ).run
    before = await _open_tasks()
    # The run stays queued (no worker): following it keeps the stream open.
    stream = api.stub.GetRunLogs(
        pb.GetRunLogsRequest(run_id=run.id, follow=True), metadata=bearer(secret)
    )
    # Several re-checks pass while the token works (a window to observe).
    await asyncio.sleep(2 * CACHE_SECONDS)
    assert not stream.done()
    elapsed = await _ends_after_revoke(api, token_id, stream)
    print(f"logs -f ended {elapsed:.2f}s after the revoke (cache {CACHE_SECONDS}s)")
    assert elapsed < CACHE_SECONDS + 0.5
    await eventually(lambda: _settled(before))


async def test_a_stream_of_an_expiring_token_ends_when_it_expires(api: Api) -> None:
    _, secret = await api.token("short", ttl=timedelta(hours=1))
    job_id = (await api.stub.ScheduleJob(every_hour(), metadata=bearer(secret))).job_id
    stream = api.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=bearer(secret))
    await stream.read()
    api.clock.at += timedelta(hours=2)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while await stream.read() is not grpc.aio.EOF:
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (raised.value.details() or "")
    # Expiry needs no query: the next re-check sees it.
    assert time.monotonic() - started < CACHE_SECONDS / 2 + 0.5
