"""WatchJob delivers every state change of every run, in order, and resumes from a cursor
without a gap or a repeat. Real API, real worker, real processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.domain import JobId
from hourglass.locks import Etcd
from hourglass.schedules import Every
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from hourglass.workers.maintenance import Maintenance
from tests.integration.helpers import eventually, job_runs, running_service, schedule

QUEUED_RUNNING_SUCCEEDED = [pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING, pb.RUN_STATE_SUCCEEDED]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Busy loops on more processes than the machine has cores, for the test's duration:
    the worker, the API and the watcher all fight for the CPU."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()


class Watch:
    """One WatchJob call, read message by message into `messages` by a task of its own."""

    def __init__(self, stub: pb_grpc.JobSchedulerStub, job_id: JobId, cursor: str = "") -> None:
        self.call = stub.WatchJob(pb.WatchJobRequest(job_id=str(job_id), cursor=cursor))
        self.messages: list[pb.WatchJobResponse] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.call.read()  # type: ignore[attr-defined]
            if message is grpc.aio.EOF:
                return
            self.messages.append(message)

    async def count(self, n: int) -> list[pb.WatchJobResponse]:
        """Waits for at least n messages."""
        await eventually(lambda: asyncio.sleep(0, len(self.messages) >= n))
        return self.messages

    async def close(self) -> None:
        self.call.cancel()  # type: ignore[attr-defined]
        await asyncio.gather(self.task, return_exceptions=True)

    def states(self) -> dict[str, list[int]]:
        """Each run's states, in the order they came."""
        found: dict[str, list[int]] = {}
        for message in self.messages:
            if message.HasField("run"):
                found.setdefault(message.run.id, []).append(message.run.state)
        return found


async def all_succeeded(watch: Watch, run_ids: set[str]) -> None:
    async def check() -> bool:
        states = watch.states()
        return all(pb.RUN_STATE_SUCCEEDED in states.get(run_id, ()) for run_id in run_ids)

    await eventually(check, timeout=60)


async def test_watch_delivers_queued_running_succeeded_of_instant_runs_under_cpu_load(
    pool: db.Pool,
    database_url: str,
    etcd: Etcd,
    stub: pb_grpc.JobSchedulerStub,
    cpu_load: None,
) -> None:
    job_id = await schedule(pool, "true", when=Every(timedelta(hours=1)))
    watch = Watch(stub, job_id)
    (first,) = await watch.count(1)
    assert first.HasField("job") and first.cursor
    async with running_service(pool, database_url, etcd):
        # Runs of `true` end within a millisecond of starting, and the worker claims and
        # finishes them in batches: each change still comes as a message of its own.
        triggered = await asyncio.gather(
            *(stub.TriggerJob(pb.TriggerJobRequest(job_id=str(job_id))) for _ in range(20))
        )
        run_ids = {reply.run.id for reply in triggered}
        await all_succeeded(watch, run_ids)
    await watch.close()
    states = watch.states()
    assert set(states) == run_ids
    for run_id in run_ids:
        assert states[run_id] == QUEUED_RUNNING_SUCCEEDED, (run_id, states[run_id])
    # Each message shows the run as that change left it, attempts included.
    by_state = {(m.run.id, m.run.state): m.run for m in watch.messages if m.HasField("run")}
    for run_id in run_ids:
        assert list(by_state[run_id, pb.RUN_STATE_QUEUED].attempts) == []
        (running,) = by_state[run_id, pb.RUN_STATE_RUNNING].attempts
        assert running.state == pb.RUN_STATE_RUNNING and not running.HasField("exit_code")
        (done,) = by_state[run_id, pb.RUN_STATE_SUCCEEDED].attempts
        assert done.state == pb.RUN_STATE_SUCCEEDED and done.exit_code == 0
    assert all(m.cursor for m in watch.messages)


async def backfill(stub: pb_grpc.JobSchedulerStub, job_id: JobId, hours: float) -> int:
    """Queues the job's hourly fires of the last `hours` hours in one statement."""
    now = datetime.now(UTC)
    request = pb.BackfillRequest(job_id=str(job_id))
    getattr(request, "from").FromDatetime(now - timedelta(hours=hours))
    request.to.FromDatetime(now - timedelta(minutes=1))
    return int((await stub.Backfill(request)).queued)


async def test_a_watch_resumed_from_its_last_cursor_misses_nothing_and_repeats_nothing(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub
) -> None:
    job_id = await schedule(pool, "true", when=Every(timedelta(hours=1)))
    first = Watch(stub, job_id)
    await first.count(1)
    # Eight runs queued by one statement arrive in one read of the log; the client goes
    # away halfway through it.
    queued = await backfill(stub, job_id, 8.5)
    assert queued >= 8
    await first.count(1 + 3)
    await first.close()
    received = first.messages[: 1 + 3]
    assert [m.run.state for m in received[1:]] == [pb.RUN_STATE_QUEUED] * 3
    # (The cursor of a message inside a read names that read: base/read/last id.)
    assert received[-1].cursor.count("/") == 2
    # Meanwhile the runs go on, and more come.
    async with running_service(pool, database_url, etcd):
        more = [
            (await stub.TriggerJob(pb.TriggerJobRequest(job_id=str(job_id)))).run.id
            for _ in range(3)
        ]

        async def all_done() -> bool:
            found = await job_runs(pool, job_id)
            return len(found) == queued + 3 and all(r.state.terminal for r in found)

        await eventually(all_done, timeout=60)
        run_ids = {str(r.id) for r in await job_runs(pool, job_id)}
        assert set(more) <= run_ids
        second = Watch(stub, job_id, cursor=received[-1].cursor)
        await all_succeeded(second, run_ids)
        # The resumed stream goes on past the runs that happened while it was away.
        extra = await stub.TriggerJob(pb.TriggerJobRequest(job_id=str(job_id)))
        await all_succeeded(second, {extra.run.id})
    await second.close()
    assert second.messages[0].HasField("job")  # from a cursor: the job as it is now, first
    combined: dict[str, list[int]] = {}
    for message in received + second.messages:
        if message.HasField("run"):
            combined.setdefault(message.run.id, []).append(message.run.state)
    assert set(combined) == run_ids | {extra.run.id}
    for run_id, states in combined.items():
        assert states == QUEUED_RUNNING_SUCCEEDED, (run_id, states)

    # A cursor at the end of a read resumes as well: nothing new, then the next change.
    third = Watch(stub, job_id, cursor=second.messages[-1].cursor)
    await third.count(1)
    last = await stub.TriggerJob(pb.TriggerJobRequest(job_id=str(job_id)))
    await eventually(lambda: asyncio.sleep(0, last.run.id in third.states()))
    await third.close()
    assert third.states() == {last.run.id: [pb.RUN_STATE_QUEUED]}


class Later:
    """A clock a day ahead: maintenance then finds every event older than its retention."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(days=1)


async def test_a_cursor_older_than_the_event_retention_is_refused_as_expired(
    pool: db.Pool, stub: pb_grpc.JobSchedulerStub
) -> None:
    job_id = await schedule(pool, "true", when=Every(timedelta(hours=1)))
    watch = Watch(stub, job_id)
    (first,) = await watch.count(1)
    await watch.close()
    await backfill(stub, job_id, 3.5)
    assert await Maintenance(pool=pool, clock=Later()).prune_events() >= 3
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) AS left FROM run_events")
        assert (await cursor.fetchone()) == {"left": 0}

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Watch(stub, job_id, cursor=first.cursor).task
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "cursor expired, re-list" in str(refused.value.details())

    # A fresh watch (no cursor) lists again and gets a cursor that works.
    fresh = Watch(stub, job_id)
    messages = await fresh.count(4)
    await fresh.close()
    assert [m.run.state for m in messages[1:4]] == [pb.RUN_STATE_QUEUED] * 3
    resumed = Watch(stub, job_id, cursor=messages[-1].cursor)
    assert (await resumed.count(1))[0].HasField("job")
    await resumed.close()


@pytest.mark.parametrize(
    "cursor", ["nonsense", "5:3:", "10:20:30", "3:9:4/3:9:/x", "1:2:/1:2:/3/4", "0:0:"]
)
async def test_a_cursor_the_server_never_returned_is_invalid_argument(
    pool: db.Pool, stub: pb_grpc.JobSchedulerStub, cursor: str
) -> None:
    job_id = await schedule(pool, "true", when=Every(timedelta(hours=1)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Watch(stub, job_id, cursor=cursor).task
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(refused.value.details()).startswith("cursor: ")


async def test_a_cursor_from_beyond_this_database_is_refused_as_expired(
    pool: db.Pool, stub: pb_grpc.JobSchedulerStub
) -> None:
    """A cursor from another installation, or from before a restore: the server cannot tell
    which changes come after it, so the client lists again."""
    job_id = await schedule(pool, "true", when=Every(timedelta(hours=1)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Watch(stub, job_id, cursor="900000000:900000000:").task
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "cursor expired, re-list" in str(refused.value.details())
