"""ListJobs by name and id prefix, ListRuns by id prefix: how a client finds the job or run a
person named by a word, never reaching another namespace's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.domain import JobSpec, Task
from hourglass.schedules import Every
from hourglass.store import db, jobs
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.integration.test_api import every


async def _schedule(stub: pb_grpc.JobSchedulerStub, name: str) -> str:
    request = every(60)
    request.spec.name = name
    job_id: str = (await stub.ScheduleJob(request)).job_id
    return job_id


async def _theirs(pool: db.Pool, name: str) -> str:
    """A job of another namespace, stored there (a job never moves between namespaces)."""
    spec = JobSpec(name=name, task=Task(command=("true",)), schedule=Every(timedelta(minutes=1)))
    async with pool.connection() as conn:
        job_id, _ = await jobs.create(conn, spec=spec, now=datetime.now(UTC), namespace="other")
    return str(job_id)


async def test_list_jobs_by_exact_name_in_the_callers_namespace_only(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    hello = await _schedule(stub, "hello")
    again = await _schedule(stub, "hello")
    await _schedule(stub, "hello-world")
    await _theirs(pool, "hello")
    found = await stub.ListJobs(pb.ListJobsRequest(name="hello"))
    assert sorted(j.id for j in found.jobs) == sorted([hello, again])
    assert all(j.namespace == "default" for j in found.jobs)
    assert not (await stub.ListJobs(pb.ListJobsRequest(name="hell"))).jobs
    # Filters page like the full listing.
    first = await stub.ListJobs(pb.ListJobsRequest(name="hello", page_size=1))
    assert len(first.jobs) == 1 and first.next_page_token
    rest = await stub.ListJobs(
        pb.ListJobsRequest(name="hello", page_size=1, page_token=first.next_page_token)
    )
    assert {first.jobs[0].id, rest.jobs[0].id} == {hello, again}


async def test_list_jobs_by_id_prefix(stub: pb_grpc.JobSchedulerStub, pool: db.Pool) -> None:
    ids = [await _schedule(stub, f"job-{n}") for n in range(6)]
    for job_id in ids:
        for length in (4, 8, 11, 36):
            found = await stub.ListJobs(pb.ListJobsRequest(id_prefix=job_id[:length]))
            assert job_id in [j.id for j in found.jobs]
            assert all(j.id.startswith(job_id[:length]) for j in found.jobs)
    theirs = await _theirs(pool, "job-theirs")
    assert not (await stub.ListJobs(pb.ListJobsRequest(id_prefix=theirs))).jobs


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("abc", "has 3 hex digits: give at least 4"),
        ("abcg", "only lowercase hex digits and dashes"),
        ("ABCD", "only lowercase hex digits and dashes"),
        ("abcdef012", "needs a dash at position 9"),
    ],
)
async def test_a_bad_id_prefix_is_invalid_argument_naming_the_field(
    stub: pb_grpc.JobSchedulerStub, prefix: str, reason: str
) -> None:
    for call in (
        stub.ListJobs(pb.ListJobsRequest(id_prefix=prefix)),
        stub.ListRuns(pb.ListRunsRequest(id_prefix=prefix)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (raised.value.details() or "").startswith("id_prefix:")
        assert reason in (raised.value.details() or "")


async def test_list_runs_by_id_prefix_across_the_callers_jobs(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    first = await _schedule(stub, "first")
    second = await _schedule(stub, "second")
    runs = [
        (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run
        for job_id in (first, second, second)
    ]
    for run in runs:
        found = await stub.ListRuns(pb.ListRunsRequest(id_prefix=run.id[:6]))
        assert run.id in [r.id for r in found.runs]
        assert all(r.id.startswith(run.id[:6]) for r in found.runs)
        # With a job too, only that job's runs.
        other = first if run.job_id == second else second
        scoped = await stub.ListRuns(pb.ListRunsRequest(job_id=other, id_prefix=run.id))
        assert not scoped.runs
    async with pool.connection() as conn:
        await conn.execute("UPDATE runs SET namespace = 'other' WHERE id = %s", (runs[0].id,))
    assert not (await stub.ListRuns(pb.ListRunsRequest(id_prefix=runs[0].id))).runs
    # Without a job and without a prefix, the job is still required.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListRuns(pb.ListRunsRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job_id: is required" in (raised.value.details() or "")
