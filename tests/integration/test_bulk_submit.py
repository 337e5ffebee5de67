"""ScheduleJobs across several chunks (hourglass.api.bulk_submit): the inserts of the first
chunks are sent before the last ones are validated, yet the call stays all or nothing and
answers the refusals in the order a caller saw when the whole batch was validated first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.api.bulk_submit import CHUNK
from hourglass.quota_rules import Quota
from hourglass.store import db, quotas
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

# Three chunks and a part.
SIZE = 3 * CHUNK + CHUNK // 2


def job(index: int, *, request_id: str = "", milliseconds: int = 60_000) -> pb.ScheduleJobRequest:
    spec = pb.JobSpec(task=pb.Task(command=["echo", str(index)]))
    spec.schedule.every.interval.FromTimedelta(timedelta(milliseconds=milliseconds))
    return pb.ScheduleJobRequest(request_id=request_id, spec=spec)


async def set_quota(pool: db.Pool, **limits: float) -> None:
    async with db.transaction(pool) as conn:
        await quotas.put(conn, "default", Quota(**limits), now=datetime.now(UTC))  # type: ignore[arg-type]


async def stored(pool: db.Pool) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM jobs) AS jobs,"
            " (SELECT count(*) FROM job_revisions) AS revisions"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["jobs"]), int(row["revisions"])


async def refused(
    stub: pb_grpc.JobSchedulerStub, requests: list[pb.ScheduleJobRequest]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=requests))
    return raised.value


async def test_a_batch_of_several_chunks_is_stored_in_order_and_retried_as_it_was(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    requests = [job(i, request_id=f"r{i}") for i in range(SIZE)]
    reply = await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=requests))
    assert len(set(reply.job_ids)) == SIZE
    for index in (0, CHUNK - 1, CHUNK, 2 * CHUNK + 1, SIZE - 1):
        status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=reply.job_ids[index]))
        assert list(status.job.spec.task.command) == ["echo", str(index)]
    # A retry mixing stored requests (in every chunk) with new ones: the stored ones give back
    # their jobs, the new ones are stored.
    mixed = [requests[i] if i % 2 else job(i, request_id=f"new{i}") for i in range(SIZE)]
    again = await stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=mixed))
    assert [again.job_ids[i] for i in range(1, SIZE, 2)] == list(reply.job_ids[1::2])
    assert not set(again.job_ids[0::2]) & set(reply.job_ids)
    assert await stored(pool) == (SIZE + len(range(0, SIZE, 2)),) * 2


async def test_an_invalid_job_in_the_last_chunk_stores_nothing(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    requests = [job(i) for i in range(SIZE)]
    requests[SIZE - 2].spec.task.command[0] = ""
    error = await refused(stub, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"requests[{SIZE - 2}].spec.task.command[0]: ")
    assert await stored(pool) == (0, 0)


async def test_an_invalid_job_outranks_an_earlier_quota_or_conflict(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await set_quota(pool, max_fires_per_second=1)
    await stub.ScheduleJob(job(0, request_id="taken"))
    too_fast = job(1, milliseconds=500)
    conflict = job(2, request_id="taken")
    requests = [too_fast, conflict, *(job(i) for i in range(2, SIZE))]
    requests[-1].spec.max_attempts = -1
    error = await refused(stub, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"requests[{SIZE - 1}].spec.max_attempts: ")
    # Without the invalid job: the rate first, though the conflict comes earlier in the batch.
    requests = [conflict, *(job(i) for i in range(1, SIZE))]
    requests[-1] = too_fast
    error = await refused(stub, requests)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_fires_per_second" in (error.details() or "")
    # Then the conflict, found in the first chunk, stops the batch though later chunks are fine.
    error = await refused(stub, [conflict, *(job(i) for i in range(1, SIZE))])
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await stored(pool) == (1, 1)


async def test_a_batch_over_max_jobs_stores_nothing(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    await set_quota(pool, max_jobs=SIZE - 1)
    error = await refused(stub, [job(i) for i in range(SIZE)])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_jobs" in (error.details() or "")
    assert await stored(pool) == (0, 0)
    reply = await stub.ScheduleJobs(
        pb.ScheduleJobsRequest(requests=[job(i) for i in range(SIZE - 1)])
    )
    assert len(reply.job_ids) == SIZE - 1
