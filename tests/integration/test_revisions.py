"""ListJobRevisions against a real API and PostgreSQL, with tokens: a job updated twice has
three revisions, newest first, paged; another namespace's token finds no such job; bad input
is INVALID_ARGUMENT naming the field; a secret's value never comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest

from hourglass.api import server as api_server
from hourglass.api.auth import Tokens
from hourglass.store import db, tokens
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

SECRET_VALUE = "hunter2-do-not-echo"


async def _token(pool: db.Pool, namespace: str) -> list[tuple[str, str]]:
    async with db.transaction(pool) as conn:
        _, secret = await tokens.create(
            conn, namespace=namespace, name="test", now=datetime.now(UTC), expires_at=None
        )
    return [("authorization", f"Bearer {secret}")]


@pytest.fixture
async def stub(pool: db.Pool, database_url: str) -> AsyncIterator[pb_grpc.JobSchedulerStub]:
    server = await api_server.start(
        pool, "127.0.0.1:0", dsn=database_url, auth=Tokens(pool, cache_seconds=1.0)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield pb_grpc.JobSchedulerStub(channel)
    finally:
        await server.stop(grace=None)


def _spec(*, every: int, command: list[str], env: dict[str, str] | None = None) -> pb.JobSpec:
    spec = pb.JobSpec(
        name="report",
        task=pb.Task(command=command, env=env or {}, secret_env={"API_KEY": SECRET_VALUE}),
    )
    spec.schedule.every.interval.FromSeconds(every)
    return spec


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_a_job_updated_twice_lists_three_revisions_newest_first_in_pages(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool, database_url: str
) -> None:
    team = await _token(pool, "team-a")
    first = _spec(every=3600, command=["echo", "one"])
    job_id = (await stub.ScheduleJob(pb.ScheduleJobRequest(spec=first), metadata=team)).job_id
    second = _spec(every=60, command=["echo", "one"])
    await stub.UpdateJob(pb.UpdateJobRequest(job_id=job_id, spec=second), metadata=team)
    third = _spec(every=60, command=["echo", "two"], env={"MODE": "fast"})
    await stub.UpdateJob(pb.UpdateJobRequest(job_id=job_id, spec=third), metadata=team)

    whole = await stub.ListJobRevisions(pb.ListJobRevisionsRequest(job_id=job_id), metadata=team)
    assert [r.revision for r in whole.revisions] == [3, 2, 1]
    assert whole.next_page_token == ""
    newest, middle, oldest = whole.revisions
    assert list(newest.spec.task.command) == ["echo", "two"]
    assert dict(newest.spec.task.env) == {"MODE": "fast"}
    assert middle.spec.schedule.every.interval.seconds == 60
    assert oldest.spec.schedule.every.interval.seconds == 3600
    assert oldest.spec.name == "report" and list(oldest.spec.task.command) == ["echo", "one"]
    assert newest.created_at.ToDatetime() >= middle.created_at.ToDatetime()
    assert middle.created_at.ToDatetime() >= oldest.created_at.ToDatetime()
    # The newest revision is the spec the job has now, as GetJobStatus shows it.
    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=team)
    assert status.job.revision == 3 and newest.spec == status.job.spec

    # A secret shows by name only, in every revision: its value was never kept.
    for revision in whole.revisions:
        assert dict(revision.spec.task.secret_env) == {"API_KEY": "<redacted>"}
    assert SECRET_VALUE.encode() not in whole.SerializeToString()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM job_revisions WHERE spec::text LIKE %s",
            (f"%{SECRET_VALUE}%",),
        )
        row = await cursor.fetchone()
    assert row is not None and row["n"] == 0

    # Pages of two, then of one: the same revisions in the same order, none twice.
    page = await stub.ListJobRevisions(
        pb.ListJobRevisionsRequest(job_id=job_id, page_size=2), metadata=team
    )
    assert [r.revision for r in page.revisions] == [3, 2] and page.next_page_token
    rest = await stub.ListJobRevisions(
        pb.ListJobRevisionsRequest(job_id=job_id, page_size=2, page_token=page.next_page_token),
        metadata=team,
    )
    assert [r.revision for r in rest.revisions] == [1] and rest.next_page_token == ""
    seen, token = [], ""
    while True:
        step = await stub.ListJobRevisions(
            pb.ListJobRevisionsRequest(job_id=job_id, page_size=1, page_token=token),
            metadata=team,
        )
        seen += [r.revision for r in step.revisions]
        token = step.next_page_token
        if not token:
            break
    assert seen == [3, 2, 1]


async def test_another_namespace_finds_no_such_job(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    team, other = await _token(pool, "team-b"), await _token(pool, "team-c")
    spec = _spec(every=3600, command=["true"])
    job_id = (await stub.ScheduleJob(pb.ScheduleJobRequest(spec=spec), metadata=team)).job_id
    request = pb.ListJobRevisionsRequest(job_id=job_id)
    refused = await _refused(stub.ListJobRevisions(request, metadata=other))
    # Exactly as GetJobStatus answers it, and as a job that never existed.
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    status = await _refused(
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=other)
    )
    assert (status.code(), status.details()) == (refused.code(), refused.details())
    missing = await _refused(
        stub.ListJobRevisions(
            pb.ListJobRevisionsRequest(job_id="00000000-0000-4000-8000-000000000000"),
            metadata=other,
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # The owner still sees it, and a call without a token is not let in.
    assert len((await stub.ListJobRevisions(request, metadata=team)).revisions) == 1
    anonymous = await _refused(stub.ListJobRevisions(request))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"job_id": ""}, "job_id", "is required"),
        ({"job_id": "not-a-uuid"}, "job_id", "is not a job id"),
        ({"page_size": -1}, "page_size", "must not be negative"),
        ({"page_size": 501}, "page_size", "must be at most 500"),
        ({"page_token": "garbage!"}, "page_token", "is not a token this server returned"),
        ({"page_token": "cjA="}, "page_token", "is not a token this server returned"),  # "r0"
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.JobSchedulerStub,
    pool: db.Pool,
    fields: dict[str, object],
    field: str,
    reason: str,
) -> None:
    team = await _token(pool, "team-d")
    spec = _spec(every=3600, command=["true"])
    job_id = (await stub.ScheduleJob(pb.ScheduleJobRequest(spec=spec), metadata=team)).job_id
    request = pb.ListJobRevisionsRequest(**{"job_id": job_id, **fields})  # type: ignore[arg-type]
    refused = await _refused(stub.ListJobRevisions(request, metadata=team))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.details() or ""
    assert details.startswith(f"{field}: ") and reason in details, details
