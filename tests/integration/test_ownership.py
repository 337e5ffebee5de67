"""One owner per job, over real gRPC on a real database: a job the operator manages refuses
the changes the operator would undo, says how to make them with kubectl, and changes nothing;
its manager (or a forced request) may change it; and a manager that asks again for its job
gets the same job back, with its history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from hourglass import ownership
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.integration.test_api import every, snapshot, spec

MANAGER = ownership.scheduled_job("team", "hello")


async def _managed(stub: pb_grpc.JobSchedulerStub) -> str:
    request = every(60, request_id="uid-1/1")
    request.managed_by = MANAGER
    job_id: str = (await stub.ScheduleJob(request)).job_id
    return job_id


# Each change a user might try, and what its message must tell them to do instead.
Call = Callable[[pb_grpc.JobSchedulerStub, str, dict[str, Any]], Awaitable[Any]]
CHANGES: dict[str, tuple[Call, str]] = {
    "delete": (
        lambda stub, job_id, kw: stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id, **kw)),
        "kubectl delete scheduledjob hello -n team",
    ),
    "pause": (
        lambda stub, job_id, kw: stub.PauseJob(pb.PauseJobRequest(job_id=job_id, **kw)),
        "set spec.suspend: true instead: kubectl patch scheduledjob hello -n team",
    ),
    "update": (
        lambda stub, job_id, kw: stub.UpdateJob(
            pb.UpdateJobRequest(job_id=job_id, spec=spec(30), **kw)
        ),
        "kubectl edit scheduledjob hello -n team",
    ),
    "cancel": (
        lambda stub, job_id, kw: stub.CancelJob(pb.CancelJobRequest(job_id=job_id, **kw)),
        "kubectl delete scheduledjob hello -n team",
    ),
    "resume": (
        lambda stub, job_id, kw: stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id, **kw)),
        "set spec.suspend: false instead",
    ),
}  # fmt: skip


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_user_cannot_change_a_managed_job_and_is_told_how(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool, change: str
) -> None:
    job_id = await _managed(stub)
    assert (await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))).job.managed_by == (
        MANAGER
    )
    before = await snapshot(pool)
    call, how = CHANGES[change]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(stub, job_id, {})
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = refused.value.details() or ""
    assert f"job {job_id} is managed by ScheduledJob team/hello" in message
    assert how in message
    assert "force" in message
    assert await snapshot(pool) == before
    # Naming another manager is no better than naming none.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(stub, job_id, {"manager": "ScheduledJob team/other"})
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_manager_changes_its_job_and_force_overrides(
    stub: pb_grpc.JobSchedulerStub,
) -> None:
    job_id = await _managed(stub)
    mine = {"manager": MANAGER}
    paused = await stub.PauseJob(pb.PauseJobRequest(job_id=job_id, **mine))
    assert paused.job.state == pb.JOB_STATE_PAUSED
    resumed = await stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id, **mine))
    assert resumed.job.state == pb.JOB_STATE_ACTIVE
    updated = await stub.UpdateJob(pb.UpdateJobRequest(job_id=job_id, spec=spec(30), **mine))
    assert updated.job.revision == 2 and updated.job.managed_by == MANAGER
    forced = await stub.PauseJob(pb.PauseJobRequest(job_id=job_id, force=True))
    assert forced.job.state == pb.JOB_STATE_PAUSED
    await stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id, force=True))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_job_without_a_manager_is_the_users(stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = (await stub.ScheduleJob(every(60))).job_id
    assert (await stub.PauseJob(pb.PauseJobRequest(job_id=job_id))).job.state == (
        pb.JOB_STATE_PAUSED
    )
    await stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id))


async def test_a_manager_that_asks_again_adopts_its_job_with_its_history(
    stub: pb_grpc.JobSchedulerStub,
) -> None:
    """An operator that lost the job id (its status wiped, a generation later, a restored
    backup) schedules again: it gets the same job, and the runs stay reachable."""
    job_id = await _managed(stub)
    run = (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run
    again = every(45, request_id="uid-1/7")  # another generation, another spec
    again.managed_by = MANAGER
    assert (await stub.ScheduleJob(again)).job_id == job_id
    runs = await stub.ListRuns(pb.ListRunsRequest(job_id=job_id))
    assert [r.id for r in runs.runs] == [run.id]
    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert [j.id for j in listed.jobs] == [job_id]
    # Another manager in the same namespace is another job.
    other = every(60)
    other.managed_by = ownership.scheduled_job("team", "other")
    assert (await stub.ScheduleJob(other)).job_id != job_id


async def test_a_batch_cannot_name_a_manager(stub: pb_grpc.JobSchedulerStub, pool: db.Pool) -> None:
    item = every(60)
    item.managed_by = MANAGER
    before = await snapshot(pool)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=[item]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[0].managed_by" in (refused.value.details() or "")
    assert await snapshot(pool) == before
