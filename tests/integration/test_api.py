"""The JobScheduler API over a real gRPC connection, on a real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc


def every(seconds: float, *command: str, **fields: object) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(
        name="test",
        task=pb.Task(command=list(command or ["true"])),
        **fields,  # type: ignore[arg-type]
    )
    request.schedule.every.interval.FromTimedelta(timedelta(seconds=seconds))
    return request


async def count_rows(pool: db.Pool) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM runs) AS runs"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["jobs"]), int(row["runs"])  # type: ignore[call-overload]


async def test_schedule_then_read_back(stub: pb_grpc.JobSchedulerStub) -> None:
    request = every(30, "echo", max_attempts=3)
    request.task.args.append("hi")
    request.task.env["GREETING"] = "hello"
    request.timeout.FromTimedelta(timedelta(minutes=2))
    job_id = (await stub.ScheduleJob(request)).job_id

    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    job = status.job
    assert job.id == job_id
    assert list(job.task.command) == ["echo"] and list(job.task.args) == ["hi"]
    assert dict(job.task.env) == {"GREETING": "hello"}
    assert job.schedule.every.interval.ToTimedelta() == timedelta(seconds=30)
    assert job.max_attempts == 3
    assert job.timeout.ToTimedelta() == timedelta(minutes=2)
    assert job.state == pb.JOB_STATE_ACTIVE
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
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(every(6, request_id="once"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'once'" in (raised.value.details() or "")
    assert await count_rows(pool) == (1, 0)


def _with_cron(expression: str, zone: str = "") -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(task=pb.Task(command=["true"]))
    request.schedule.cron.expression = expression
    request.schedule.cron.time_zone = zone
    return request


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ScheduleJobRequest(task=pb.Task(command=["true"])), "schedule"),
        (every(1), None),  # valid: control case
        (every(0.001), "schedule.every.interval"),
        (every(1, "true", max_attempts=101), "max_attempts"),
        (every(1, "true", max_attempts=-1), "max_attempts"),
        (_with_cron("not a cron"), "schedule.cron.expression"),
        (_with_cron("* * * * *", "Nowhere/Atlantis"), "schedule.cron.time_zone"),
        (pb.ScheduleJobRequest(schedule=every(1).schedule), "task"),
        (pb.ScheduleJobRequest(task=pb.Task(), schedule=every(1).schedule), "task.command"),
        (
            pb.ScheduleJobRequest(task=pb.Task(command=[" "]), schedule=every(1).schedule),
            "task.command[0]",
        ),
    ],
)
async def test_invalid_requests_name_the_field_and_store_nothing(
    stub: pb_grpc.JobSchedulerStub,
    pool: db.Pool,
    request_: pb.ScheduleJobRequest,
    field: str | None,
) -> None:
    if field is None:
        await stub.ScheduleJob(request_)
        assert await count_rows(pool) == (1, 0)
        return
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(field + ": ")
    assert await count_rows(pool) == (0, 0)


async def test_negative_timeout_is_refused(stub: pb_grpc.JobSchedulerStub) -> None:
    request = every(1)
    request.timeout.FromTimedelta(timedelta(seconds=-5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJob(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("timeout: ")


@pytest.mark.parametrize("call", ["GetJobStatus", "CancelJob", "ListRuns"])
async def test_unknown_and_malformed_job_ids(stub: pb_grpc.JobSchedulerStub, call: str) -> None:
    request_type = {
        "GetJobStatus": pb.GetJobStatusRequest,
        "CancelJob": pb.CancelJobRequest,
        "ListRuns": pb.ListRunsRequest,
    }[call]
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
    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    assert status.job.state == pb.JOB_STATE_CANCELLED


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
