"""Fair use at the API and in the producer: catch-up begins at creation, and each namespace's
quotas (jobs, queued runs, fires per second) refuse what exceeds them and store nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.domain import JobId, JobSpec, Task
from hourglass.quota_rules import Quota
from hourglass.schedules import At, Every
from hourglass.store import db, fires, jobs, quotas
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from hourglass.workers.producer import Producer

SEVENTIES = datetime(1976, 1, 1, tzinfo=UTC)


def every(milliseconds: int, *, start: datetime | None = None) -> pb.JobSpec:
    spec = pb.JobSpec(task=pb.Task(command=["true"]))
    spec.schedule.every.interval.FromTimedelta(timedelta(milliseconds=milliseconds))
    if start is not None:
        spec.schedule.start.FromDatetime(start)
    return spec


def one_shot() -> pb.JobSpec:
    spec = pb.JobSpec(task=pb.Task(command=["true"]))
    spec.schedule.after.FromTimedelta(timedelta(hours=1))
    return spec


async def count(pool: db.Pool, sql: str, *params: object) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(sql.encode(), params)
        row = await cursor.fetchone()
    assert row is not None
    return int(next(iter(row.values())))


async def set_quota(pool: db.Pool, namespace: str = "default", **limits: float) -> None:
    async with db.transaction(pool) as conn:
        await quotas.put(conn, namespace, Quota(**limits), now=datetime.now(UTC))  # type: ignore[arg-type]


def exhausted(caught: pytest.ExceptionInfo[grpc.aio.AioRpcError], quota: str) -> str:
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert quota in details, details
    return details


# --- catch-up begins at creation ---------------------------------------------------------


async def test_a_half_century_start_fires_only_from_creation(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool, database_url: str
) -> None:
    """The flood request of issue 9: every 100 ms from 1976 with catch-up `all`."""
    before = datetime.now(UTC)
    reply = await stub.ScheduleJob(pb.ScheduleJobRequest(spec=every(100, start=SEVENTIES)))
    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=reply.job_id))
    first = status.job.next_fire_at.ToDatetime(tzinfo=UTC)
    assert before <= first <= before + timedelta(seconds=5)
    assert (first - SEVENTIES) % timedelta(milliseconds=100) == timedelta(0)  # on the grid

    producer = Producer(pool=pool, dsn=database_url)
    deadline = datetime.now(UTC) + timedelta(seconds=0.5)
    while datetime.now(UTC) < deadline:
        await producer.run_once()
    await producer.run_once()
    elapsed = (datetime.now(UTC) - before).total_seconds()
    fired = await count(pool, "SELECT count(*) FROM runs WHERE job_id = %s", reply.job_id)
    # One fire per 100 ms since creation, not 1.6e10.
    assert 1 <= fired <= elapsed * 10 + 1
    assert await count(pool, "SELECT missed_fires FROM jobs WHERE id = %s", reply.job_id) == 0
    oldest = await count(
        pool,
        "SELECT count(*) FROM runs WHERE job_id = %s AND scheduled_at < %s",
        reply.job_id,
        before,
    )
    assert oldest == 0


async def test_update_with_a_past_start_fires_from_the_update_on(
    stub: pb_grpc.JobSchedulerStub,
) -> None:
    reply = await stub.ScheduleJob(pb.ScheduleJobRequest(spec=one_shot()))
    before = datetime.now(UTC)
    updated = await stub.UpdateJob(
        pb.UpdateJobRequest(job_id=reply.job_id, spec=every(1000, start=SEVENTIES))
    )
    first = updated.job.next_fire_at.ToDatetime(tzinfo=UTC)
    assert before <= first <= before + timedelta(seconds=2)


# --- quotas at the API ---------------------------------------------------------------------


async def test_the_job_quota_refuses_and_stores_nothing(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await set_quota(pool, max_jobs=2)
    for _ in range(2):
        await stub.ScheduleJob(pb.ScheduleJobRequest(spec=one_shot()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ScheduleJob(pb.ScheduleJobRequest(spec=one_shot()))
    assert "max_jobs=2" in exhausted(caught, "max_jobs")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ScheduleJobs(
            pb.ScheduleJobsRequest(requests=[pb.ScheduleJobRequest(spec=one_shot())] * 3)
        )
    exhausted(caught, "max_jobs")
    assert await count(pool, "SELECT count(*) FROM jobs") == 2
    assert await count(pool, "SELECT count(*) FROM job_revisions") == 2
    # A retry of a request that was stored answers as before, at the limit too.
    await set_quota(pool, max_jobs=3)
    request = pb.ScheduleJobRequest(spec=one_shot(), request_id="once")
    first = await stub.ScheduleJob(request)
    assert (await stub.ScheduleJob(request)).job_id == first.job_id


async def test_the_queued_runs_quota_refuses_triggers_and_backfills(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await set_quota(pool, max_queued_runs=2)
    job = await stub.ScheduleJob(pb.ScheduleJobRequest(spec=every(60_000)))
    for _ in range(2):
        await stub.TriggerJob(pb.TriggerJobRequest(job_id=job.job_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TriggerJob(pb.TriggerJobRequest(job_id=job.job_id))
    assert "max_queued_runs=2" in exhausted(caught, "max_queued_runs")
    now = datetime.now(UTC)
    backfill = pb.BackfillRequest(job_id=job.job_id, to=Timestamp())
    getattr(backfill, "from").FromDatetime(now - timedelta(hours=1))
    backfill.to.FromDatetime(now)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Backfill(backfill)
    exhausted(caught, "max_queued_runs")
    assert await count(pool, "SELECT count(*) FROM runs") == 2
    # Another namespace has its own queue and its own quota.
    async with db.transaction(pool) as conn:
        other, _ = await jobs.create(
            conn,
            spec=JobSpec(
                name="b", task=Task(command=("true",)), schedule=Every(timedelta(hours=1))
            ),
            now=now,
            namespace="b",
        )
        await fires.trigger(conn, other, now=now)
        await quotas.enforce_queued(conn, "b")


async def test_the_rate_quota_refuses_a_schedule_faster_than_the_namespace(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await set_quota(pool, max_fires_per_second=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ScheduleJob(pb.ScheduleJobRequest(spec=every(100, start=SEVENTIES)))
    details = exhausted(caught, "max_fires_per_second=5")
    assert "10 times a second" in details
    job = await stub.ScheduleJob(pb.ScheduleJobRequest(spec=every(500)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateJob(pb.UpdateJobRequest(job_id=job.job_id, spec=every(100)))
    exhausted(caught, "max_fires_per_second")
    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id))
    assert status.job.revision == 1
    assert await count(pool, "SELECT count(*) FROM jobs") == 1


# --- quotas in the producer ----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


async def create(pool: db.Pool, clock: FakeClock, namespace: str, **spec: object) -> JobId:
    job_spec = JobSpec(name="t", task=Task(command=("true",)), **spec)  # type: ignore[arg-type]
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(conn, spec=job_spec, now=clock.now(), namespace=namespace)
    return job_id


async def test_fires_over_the_queued_quota_are_recorded_skipped_with_the_quota(
    pool: db.Pool, database_url: str
) -> None:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    await set_quota(pool, "y", max_queued_runs=3)
    job_id = await create(pool, clock, "y", schedule=Every(timedelta(seconds=1)))
    other = await create(pool, clock, "x", schedule=Every(timedelta(seconds=1)))
    clock.current += timedelta(seconds=10)
    producer = Producer(pool=pool, dsn=database_url, clock=clock)
    await producer.run_once()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT state, reason, count(*) AS n FROM runs WHERE job_id = %s"
            " GROUP BY state, reason",
            (job_id,),
        )
        found = {(row["state"], row["reason"]): row["n"] for row in await cursor.fetchall()}
    reason = "namespace quota max_queued_runs=3 reached: fire held back"
    assert found == {("queued", ""): 3, ("skipped", reason): 7}
    # Every fire is accounted for; the other namespace is untouched by y's quota.
    assert await count(pool, "SELECT count(*) FROM runs WHERE job_id = %s", other) == 10


async def test_fires_over_the_rate_quota_are_paced_not_dropped(
    pool: db.Pool, database_url: str
) -> None:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    await set_quota(pool, "y", max_fires_per_second=2)
    due = clock.now() + timedelta(seconds=1)
    for _ in range(6):
        await create(pool, clock, "y", schedule=At(due))
    clock.current = due
    await Producer(pool=pool, dsn=database_url, clock=clock).run_once()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT available_at FROM runs WHERE state = 'queued' ORDER BY available_at"
        )
        starts = [(row["available_at"] - due).total_seconds() for row in await cursor.fetchall()]
    # Two at once (one second's worth), then one every half second.
    assert starts == [0, 0, 0.5, 1.0, 1.5, 2.0]


# --- the admin command ---------------------------------------------------------------------


def test_quota_command_shows_and_changes_a_namespaces_quotas(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hourglass.cli.main import main

    base = ["--database-url", database_url, "--namespace", "y"]
    assert main(["quota", "get", *base]) == 0
    assert "100000" in capsys.readouterr().out
    assert (
        main(["quota", "set", *base, "--max-queued-runs", "50", "--max-fires-per-second", "2.5"])
        == 0
    )
    assert main(["quota", "list", "--database-url", database_url]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "MAX RUNNING" in listing[0] and listing[1].split()[4] == "100000"
    assert listing[-1].split() == ["y", "100000", "50", "2.5", "100000", "default", "own"]
    # The artifact quota is set through the same command, and leaves the others as they are.
    assert main(["quota", "set", *base, "--max-artifact-bytes", "5GiB"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == [
        "y", "100000", "50", "2.5", "100000", "5GiB", "own",
    ]  # fmt: skip
    # So is the cap on running runs.
    assert main(["quota", "set", *base, "--max-running-runs", "4"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == [
        "y", "100000", "50", "2.5", "4", "5GiB", "own",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main(["quota", "set", *base, "--max-running-runs", "-2"])
    assert exited.value.code == 2
    assert "--max-running-runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["quota", "set", *base, "--max-jobs", "-1"])
    assert exited.value.code == 2
    assert "--max-jobs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["quota", "set", *base])
    assert exited.value.code == 2
    assert main(["quota", "reset", *base]) == 0
    assert main(["quota", "get", *base]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[-1] == "default"
