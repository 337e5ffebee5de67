"""The JobScheduler API over a real gRPC connection, on a real database."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc


def spec(seconds: float = 60, *command: str, **fields: object) -> pb.JobSpec:
    message = pb.JobSpec(name="test", task=pb.Task(command=list(command or ["true"])), **fields)  # type: ignore[arg-type]
    message.schedule.every.interval.FromTimedelta(timedelta(seconds=seconds))
    return message


def every(
    seconds: float = 60, *command: str, request_id: str = "", **fields: object
) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(request_id=request_id, spec=spec(seconds, *command, **fields))


async def count_rows(pool: db.Pool) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM runs) AS runs"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["jobs"]), int(row["runs"])


async def snapshot(pool: db.Pool) -> list[tuple[object, ...]]:
    """Every stored row of jobs and runs, to show a refused request changed nothing."""
    async with pool.connection() as conn:
        jobs = await (await conn.execute("SELECT * FROM jobs ORDER BY id")).fetchall()
        runs = await (await conn.execute("SELECT * FROM runs ORDER BY id")).fetchall()
    return [tuple(row.values()) for row in [*jobs, *runs]]


async def test_schedule_then_read_back(stub: pb_grpc.JobSchedulerStub) -> None:
    request = every(30, "echo", max_attempts=3)
    request.spec.task.args.append("hi")
    request.spec.task.env["GREETING"] = "hello"
    request.spec.timeout.FromTimedelta(timedelta(minutes=2))
    job_id = (await stub.ScheduleJob(request)).job_id

    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    job = status.job
    assert job.id == job_id
    assert list(job.spec.task.command) == ["echo"] and list(job.spec.task.args) == ["hi"]
    assert dict(job.spec.task.env) == {"GREETING": "hello"}
    assert job.spec.schedule.every.interval.ToTimedelta() == timedelta(seconds=30)
    assert job.spec.max_attempts == 3
    assert job.spec.timeout.ToTimedelta() == timedelta(minutes=2)
    assert job.spec.overlap == pb.OVERLAP_POLICY_ALLOW
    assert job.spec.catch_up.policy == pb.CATCH_UP_POLICY_ALL
    assert job.state == pb.JOB_STATE_ACTIVE and job.revision == 1
    gap = job.next_fire_at.ToDatetime() - job.created_at.ToDatetime()
    assert gap == timedelta(seconds=30)
    assert list(status.recent_runs) == []

    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert [j.id for j in listed.jobs] == [job_id]


async def test_same_request_id_is_a_safe_retry(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    request = every(5, request_id="retry-me")
    first = await stub.ScheduleJob(request)
    second = await stub.ScheduleJob(request)
    assert first.job_id == second.job_id
    assert await count_rows(pool) == (1, 0)


async def test_request_id_reused_with_another_body_is_already_exists(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await stub.ScheduleJob(every(5, request_id="once"))
    before = await snapshot(pool)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(every(6, request_id="once"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'once'" in (raised.value.details() or "")
    assert await snapshot(pool) == before


def _with_cron(expression: str, zone: str = "") -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"])))
    request.spec.schedule.cron.expression = expression
    request.spec.schedule.cron.time_zone = zone
    return request


def _bounded(start: int, end: int) -> pb.ScheduleJobRequest:
    request = every(1)
    request.spec.schedule.start.FromSeconds(start)
    request.spec.schedule.end.FromSeconds(end)
    return request


def _jitter(interval: float, jitter: float) -> pb.ScheduleJobRequest:
    request = every(interval)
    request.spec.schedule.every.jitter.FromTimedelta(timedelta(seconds=jitter))
    return request


def _invalid_requests() -> Iterator[tuple[pb.ScheduleJobRequest, str]]:
    yield pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"]))), "spec.schedule"
    yield every(0.001), "spec.schedule.every.interval"
    yield _jitter(1, 2), "spec.schedule.every.jitter"
    yield _bounded(2_000_000_000, 1_900_000_000), "spec.schedule.end"
    yield every(1, "true", max_attempts=101), "spec.max_attempts"
    yield every(1, "true", max_attempts=-1), "spec.max_attempts"
    yield _with_cron("not a cron"), "spec.schedule.cron.expression"
    yield _with_cron("* * * * *", "Nowhere/Atlantis"), "spec.schedule.cron.time_zone"
    yield pb.ScheduleJobRequest(spec=pb.JobSpec(schedule=spec().schedule)), "spec.task"
    yield (
        pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(), schedule=spec().schedule)),
        "spec.task.command",
    )
    yield (
        pb.ScheduleJobRequest(
            spec=pb.JobSpec(task=pb.Task(command=[" "]), schedule=spec().schedule)
        ),
        "spec.task.command[0]",
    )
    yield (
        pb.ScheduleJobRequest(
            spec=pb.JobSpec(task=pb.Task(binary="md5:abc"), schedule=spec().schedule)
        ),
        "spec.task.binary",
    )
    negative = every(1)
    negative.spec.timeout.FromTimedelta(timedelta(seconds=-5))
    yield negative, "spec.timeout"
    yield every(1, "true", overlap=42), "spec.overlap"


@pytest.mark.parametrize(("request_", "field"), list(_invalid_requests()))
async def test_invalid_requests_name_the_field_and_store_nothing(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool, request_: pb.ScheduleJobRequest, field: str
) -> None:
    await stub.ScheduleJob(every(60))  # something stored that must survive
    before = await snapshot(pool)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(field + ": "), raised.value.details()
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "call",
    ["GetJobStatus", "CancelJob", "ListRuns", "PauseJob", "ResumeJob", "TriggerJob", "DeleteJob"],
)
async def test_unknown_and_malformed_job_ids(stub: pb_grpc.JobSchedulerStub, call: str) -> None:
    request_type = getattr(pb, f"{call}Request")
    method = getattr(stub, call)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(request_type(job_id=str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(request_type(job_id="nope"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("job_id: ")


async def test_cancel_stops_future_fires(stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = (await stub.ScheduleJob(every(60))).job_id
    cancelled = await stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    assert cancelled.job.state == pb.JOB_STATE_CANCELLED
    assert not cancelled.job.HasField("next_fire_at")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_pause_and_resume(stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = (await stub.ScheduleJob(every(60))).job_id
    paused = (await stub.PauseJob(pb.PauseJobRequest(job_id=job_id))).job
    assert paused.state == pb.JOB_STATE_PAUSED and not paused.HasField("next_fire_at")
    resumed = (await stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id))).job
    assert resumed.state == pb.JOB_STATE_ACTIVE
    next_fire = resumed.next_fire_at.ToDatetime(tzinfo=UTC)
    assert timedelta(seconds=55) < next_fire - datetime.now(UTC) <= timedelta(seconds=60)


async def test_update_replaces_the_spec_and_keeps_revisions(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    job_id = (await stub.ScheduleJob(every(60, "echo", "one"))).job_id
    new_spec = spec(5, "echo", "two", overlap=pb.OVERLAP_POLICY_SKIP)
    updated = (await stub.UpdateJob(pb.UpdateJobRequest(job_id=job_id, spec=new_spec))).job
    assert updated.revision == 2
    assert list(updated.spec.task.command) == ["echo", "two"]
    assert updated.spec.overlap == pb.OVERLAP_POLICY_SKIP
    assert updated.spec.schedule.every.interval.ToTimedelta() == timedelta(seconds=5)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT revision, spec->'command' AS command FROM job_revisions"
            " WHERE job_id = %s ORDER BY revision",
            (job_id,),
        )
        revisions = [(row["revision"], row["command"]) for row in await cursor.fetchall()]
    assert revisions == [(1, ["echo", "one"]), (2, ["echo", "two"])]


async def test_trigger_queues_a_manual_run(stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = (await stub.ScheduleJob(every(3600))).job_id
    run = (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run
    assert run.state == pb.RUN_STATE_QUEUED and run.trigger == pb.RUN_TRIGGER_MANUAL
    listed = await stub.ListRuns(pb.ListRunsRequest(job_id=job_id))
    assert [r.id for r in listed.runs] == [run.id]


async def test_backfill_queues_each_fire_of_a_range_once(stub: pb_grpc.JobSchedulerStub) -> None:
    request = _with_cron("0 * * * *")
    job_id = (await stub.ScheduleJob(request)).job_id
    backfill = pb.BackfillRequest(job_id=job_id)
    getattr(backfill, "from").FromDatetime(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    backfill.to.FromDatetime(datetime(2026, 1, 1, 5, 0, tzinfo=UTC))
    assert (await stub.Backfill(backfill)).queued == 5  # 01:00 .. 05:00
    assert (await stub.Backfill(backfill)).queued == 0  # already recorded
    runs = (await stub.ListRuns(pb.ListRunsRequest(job_id=job_id))).runs
    assert [r.scheduled_at.ToDatetime().hour for r in runs] == [5, 4, 3, 2, 1]
    assert {r.trigger for r in runs} == {pb.RUN_TRIGGER_BACKFILL}
    backwards = pb.BackfillRequest(job_id=job_id, to=getattr(backfill, "from"))
    getattr(backwards, "from").CopyFrom(backfill.to)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Backfill(backwards)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_run_of_a_queued_run(stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = (await stub.ScheduleJob(every(3600))).job_id
    run = (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run
    cancelled = (await stub.CancelRun(pb.CancelRunRequest(run_id=run.id))).run
    assert cancelled.state == pb.RUN_STATE_CANCELLED
    assert cancelled.reason == "cancelled by a user"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelRun(pb.CancelRunRequest(run_id=str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_removes_the_job_and_its_history(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    job_id = (await stub.ScheduleJob(every(3600))).job_id
    await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))
    await stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id))
    assert await count_rows(pool) == (0, 0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_upload_binary_is_content_addressed_and_schedulable(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    data = b"#!/bin/sh\necho uploaded\n" * 1000
    pieces = [data[i : i + 4096] for i in range(0, len(data), 4096)]

    async def upload() -> pb.UploadBinaryResponse:
        return await stub.UploadBinary(pb.UploadBinaryRequest(chunk=c) for c in pieces)  # type: ignore[arg-type]

    first, second = await upload(), await upload()
    assert first.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (first.created, second.created) == (True, False)
    assert first.size == second.size == len(data)

    request = every(60)
    del request.spec.task.command[:]
    request.spec.task.binary = first.digest
    request.spec.task.args.append("--flag")
    job = (
        await stub.GetJobStatus(
            pb.GetJobStatusRequest(job_id=(await stub.ScheduleJob(request)).job_id)
        )
    ).job
    assert job.spec.task.binary == first.digest

    unknown = every(60)
    del unknown.spec.task.command[:]
    unknown.spec.task.binary = "sha256:" + "0" * 64
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(unknown)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not found" in (raised.value.details() or "")


async def test_list_jobs_pages_through_everything(stub: pb_grpc.JobSchedulerStub) -> None:
    created = {(await stub.ScheduleJob(every(60))).job_id for _ in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token))
        assert len(page.jobs) <= 3
        seen += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(created)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListJobs(pb.ListJobsRequest(page_token="garbage!"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_schedule_jobs_stores_a_batch_in_order(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    requests = [every(60 + i, "echo", str(i), request_id=f"batch-{i}") for i in range(50)]
    requests.append(every(3600))  # no request id
    reply = await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=requests))
    assert len(reply.job_ids) == 51
    for index in (0, 17, 49):
        job = (await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=reply.job_ids[index]))).job
        assert list(job.spec.task.command) == ["echo", str(index)]
        assert job.spec.schedule.every.interval.ToTimedelta() == timedelta(seconds=60 + index)
        assert job.revision == 1 and job.next_fire_at.ToDatetime() > job.created_at.ToDatetime()
    # A retry of the same batch returns the same ids for the requests that carry one.
    again = await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=requests[:50]))
    assert list(again.job_ids) == list(reply.job_ids[:50])
    assert await count_rows(pool) == (51, 0)


async def test_schedule_jobs_is_all_or_nothing(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    requests = [every(60) for _ in range(5)]
    requests[3].spec.schedule.every.interval.FromSeconds(0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=requests))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("requests[3].spec.schedule.every.interval: ")
    twice = [every(60, request_id="same"), every(61, request_id="same")]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=twice))
    assert (raised.value.details() or "").startswith("requests[1].request_id: ")
    await stub.ScheduleJob(every(60, request_id="taken"))
    conflicting = [every(60, request_id="fresh"), every(99, request_id="taken")]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=conflicting))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await count_rows(pool) == (1, 0)
