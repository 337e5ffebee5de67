"""Uploaded binaries belong to the namespaces that uploaded them, through the real API and
the database: another namespace gets NOT_FOUND for a digest and learns nothing about what
others stored; uploads have a quota and an idle timeout; maintenance respects every
namespace's references."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest

from hourglass import artifacts
from hourglass.api import server as api_server
from hourglass.api.auth import Tokens
from hourglass.store import artifacts as artifact_rows
from hourglass.store import db, migrate, tokens
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from hourglass.workers.maintenance import Maintenance, MaintenanceConfig
from tests.conftest import PostgresServer

IDLE_TIMEOUT = 1.0
DEFAULT_QUOTA = 64 * 1024


@dataclass
class Api:
    stub: pb_grpc.JobSchedulerStub
    store: artifacts.LocalArtifactStore
    pool: db.Pool
    secrets: dict[str, str]

    def md(self, namespace: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.secrets[namespace]}")]

    async def upload(
        self, namespace: str, data: bytes, piece: int = 4096
    ) -> pb.UploadBinaryResponse:
        requests = [
            pb.UploadBinaryRequest(chunk=data[i : i + piece]) for i in range(0, len(data), piece)
        ]
        reply: pb.UploadBinaryResponse = await self.stub.UploadBinary(
            iter(requests), metadata=self.md(namespace)
        )
        return reply

    async def schedule(self, namespace: str, digest: str) -> str:
        request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(binary=digest)))
        request.spec.schedule.every.interval.FromSeconds(3600)
        reply = await self.stub.ScheduleJob(request, metadata=self.md(namespace))
        return str(reply.job_id)


@pytest.fixture
async def api(pool: db.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    store = artifacts.LocalArtifactStore(tmp_path / "artifacts")
    secrets = {}
    async with db.transaction(pool) as conn:
        for namespace in ("team-a", "team-b"):
            _, secrets[namespace] = await tokens.create(
                conn, namespace=namespace, name="", now=datetime.now(UTC)
            )
    server = await api_server.start(
        pool,
        "127.0.0.1:0",
        dsn=database_url,
        auth=Tokens(pool),
        artifact_store=store,
        upload_idle_timeout=IDLE_TIMEOUT,
        artifact_quota=DEFAULT_QUOTA,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Api(pb_grpc.JobSchedulerStub(channel), store, pool, secrets)
    finally:
        await server.stop(grace=None)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def owners(pool: db.Pool) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT namespace, digest FROM artifact_owners ORDER BY 1, 2")
        return [(row["namespace"], row["digest"]) for row in await cursor.fetchall()]


def leftovers(store: artifacts.LocalArtifactStore) -> list[Path]:
    folder = store.root / "tmp"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_namespace_runs_only_what_it_uploaded_and_learns_nothing_of_others(
    api: Api,
) -> None:
    data = b"#!/bin/sh\necho team-a\n" * 50
    first = await api.upload("team-a", data)
    assert first.created and first.digest == digest_of(data)
    assert not (await api.upload("team-a", data)).created  # the same namespace again
    a_job = await api.schedule("team-a", first.digest)

    # B names A's digest: NOT_FOUND, worded exactly as for a digest nobody uploaded.
    nobody = digest_of(b"never uploaded")
    answers = {}
    for digest in (first.digest, nobody):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.schedule("team-b", digest)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        answers[digest] = (raised.value.details() or "").replace(digest, "DIGEST")
    assert answers[first.digest] == answers[nobody]
    # Through ScheduleJobs and UpdateJob as well.
    batch = pb.ScheduleJobsRequest(
        requests=[pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(binary=first.digest)))]
    )
    batch.requests[0].spec.schedule.every.interval.FromSeconds(3600)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.ScheduleJobs(batch, metadata=api.md("team-b"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    own = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"])))
    own.spec.schedule.every.interval.FromSeconds(3600)
    b_job = (await api.stub.ScheduleJob(own, metadata=api.md("team-b"))).job_id
    change = pb.UpdateJobRequest(job_id=b_job, spec=pb.JobSpec(task=pb.Task(binary=first.digest)))
    change.spec.schedule.every.interval.FromSeconds(3600)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.UpdateJob(change, metadata=api.md("team-b"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    # B's upload of the same bytes is new to B, as if nobody had stored them; the bytes are
    # still stored once.
    second = await api.upload("team-b", data)
    assert second.created and second.digest == first.digest
    assert not (await api.upload("team-b", data)).created
    assert await api.store.list() == [artifacts.parse_digest(first.digest)]
    await api.schedule("team-b", first.digest)
    # A's job was never touched.
    status = await api.stub.GetJobStatus(
        pb.GetJobStatusRequest(job_id=a_job), metadata=api.md("team-a")
    )
    assert status.job.spec.task.binary == first.digest


async def test_the_schema_refuses_a_job_with_another_namespaces_binary(api: Api) -> None:
    digest = (await api.upload("team-a", b"#!/bin/sh\n")).digest
    own = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"])))
    own.spec.schedule.every.interval.FromSeconds(3600)
    b_job = (await api.stub.ScheduleJob(own, metadata=api.md("team-b"))).job_id
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        async with db.transaction(api.pool) as conn:
            await conn.execute(
                "UPDATE jobs SET binary_digest = %s WHERE id = %s", (digest, uuid.UUID(b_job))
            )


async def test_an_upload_past_the_quota_is_refused_and_keeps_nothing(api: Api) -> None:
    kept = await api.upload("team-b", b"b" * (DEFAULT_QUOTA // 2))
    before = await owners(api.pool)
    # A stored these bytes already; for B they count in full all the same.
    shared = b"a" * (DEFAULT_QUOTA // 2 + 1)
    await api.upload("team-a", shared)
    for data in (shared, b"c" * (DEFAULT_QUOTA // 2 + 1)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.upload("team-b", data)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = raised.value.details() or ""
        assert "quota" in details and "64KiB" in details and "team-b" in details
    assert [o for o in await owners(api.pool) if o[0] == "team-b"] == [
        o for o in before if o[0] == "team-b"
    ]
    assert sorted(await api.store.list()) == sorted(
        artifacts.parse_digest(d) for d in (kept.digest, digest_of(shared))
    )
    assert leftovers(api.store) == []

    # The admin raises B's quota: the same upload fits now; A keeps the default.
    async with db.transaction(api.pool) as conn:
        await artifact_rows.set_quota(conn, "team-b", 2 * DEFAULT_QUOTA)
    assert (await api.upload("team-b", shared)).created
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.upload("team-a", b"d" * (DEFAULT_QUOTA // 2))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_concurrent_uploads_cannot_both_fit_the_last_bytes(api: Api) -> None:
    size = DEFAULT_QUOTA * 2 // 3
    results = await asyncio.gather(
        api.upload("team-a", b"x" * size),
        api.upload("team-a", b"y" * size),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1, results
    assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with api.pool.connection() as conn:
        assert await artifact_rows.usage(conn, "team-a") == size


async def test_an_idle_upload_is_ended_and_keeps_nothing(api: Api) -> None:
    stalled = asyncio.Event()

    async def stalls() -> AsyncIterator[pb.UploadBinaryRequest]:
        yield pb.UploadBinaryRequest(chunk=b"#!/bin/sh\n" * 100)
        await stalled.wait()  # never set: the client goes quiet with the stream open

    started = asyncio.get_running_loop().time()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.UploadBinary(stalls(), metadata=api.md("team-a"))
    elapsed = asyncio.get_running_loop().time() - started
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "nothing was stored" in (raised.value.details() or "")
    assert IDLE_TIMEOUT <= elapsed < IDLE_TIMEOUT + 5
    assert await api.store.list() == []
    assert leftovers(api.store) == []
    assert await owners(api.pool) == []


async def test_maintenance_respects_each_namespaces_references(api: Api) -> None:
    data = b"#!/bin/sh\necho shared\n"
    digest = (await api.upload("team-a", data)).digest
    await api.upload("team-b", data)
    a_job = await api.schedule("team-a", digest)
    orphan = (await api.upload("team-b", b"#!/bin/sh\necho orphan\n")).digest
    maintenance = Maintenance(
        pool=api.pool,
        artifact_store=api.store,
        config=MaintenanceConfig(artifact_grace=timedelta(hours=1)),
    )
    # Within the grace nothing goes: an upload may be about to be scheduled.
    assert await maintenance.run_once() == (0, 0)

    async def age_everything() -> None:
        old = datetime.now(UTC) - timedelta(hours=2)
        async with db.transaction(api.pool) as conn:
            await conn.execute("UPDATE artifacts SET created_at = %s", (old,))
            await conn.execute("UPDATE artifact_owners SET uploaded_at = %s", (old,))

    await age_everything()
    # B used neither upload: B's ownerships end, and only the bytes nobody else uses go.
    assert await maintenance.run_once() == (0, 1)
    assert await owners(api.pool) == [("team-a", digest)]
    assert await api.store.list() == [artifacts.parse_digest(digest)]
    assert not await api.store.exists(artifacts.parse_digest(orphan))
    # B can no longer schedule it; A's job still has it.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.schedule("team-b", digest)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    await api.stub.TriggerJob(pb.TriggerJobRequest(job_id=a_job), metadata=api.md("team-a"))

    # Once A's job is gone, so is the binary.
    await api.stub.DeleteJob(pb.DeleteJobRequest(job_id=a_job), metadata=api.md("team-a"))
    await age_everything()
    assert await maintenance.run_once() == (0, 1)
    assert await owners(api.pool) == []
    assert await api.store.list() == []


async def test_a_release_loses_to_a_concurrent_schedule(api: Api) -> None:
    """Maintenance decided an ownership was unused; a schedule lands before its delete: the
    foreign key keeps the ownership, and maintenance goes on."""
    digest = (await api.upload("team-a", b"#!/bin/sh\necho race\n")).digest
    old = datetime.now(UTC) - timedelta(hours=2)
    async with db.transaction(api.pool) as conn:
        await conn.execute("UPDATE artifact_owners SET uploaded_at = %s", (old,))
        assert await artifact_rows.unused_ownerships(
            conn, uploaded_before=datetime.now(UTC), limit=10
        ) == [("team-a", digest)]
    await api.schedule("team-a", digest)
    async with db.transaction(api.pool) as conn:
        assert not await artifact_rows.release(
            conn, namespace="team-a", digest=digest, uploaded_before=datetime.now(UTC)
        )
        assert not await artifact_rows.forget(conn, digest)
    assert await owners(api.pool) == [("team-a", digest)]


async def test_migration_0006_gives_scheduled_binaries_to_their_jobs_namespaces(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs scheduled before ownership existed keep working: their namespaces own their
    binaries. An upload no job used has no known owner and is left to maintenance."""
    name = f"m_{uuid.uuid4().hex[:8]}"
    with postgres_server.admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres_server.dsn(name)
    everything = migrate.migrations()
    monkeypatch.setattr(
        migrate, "migrations", lambda folder=None: [m for m in everything if m[0] < 6]
    )
    migrate.apply(dsn)
    used, unused = digest_of(b"used"), digest_of(b"unused")
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for digest in (used, unused):
            conn.execute(
                "INSERT INTO artifacts (digest, size, created_at) VALUES (%s, 4, %s)", (digest, now)
            )
        for namespace in ("team-a", "team-b", "team-b"):
            conn.execute(
                "INSERT INTO jobs (id, name, command, schedule, created_at, updated_at,"
                " binary_digest, namespace) VALUES (%s, 'j', '{}', '{}', %s, %s, %s, %s)",
                (uuid.uuid4(), now, now, used, namespace),
            )
    monkeypatch.setattr(migrate, "migrations", lambda folder=None: everything)
    assert migrate.apply(dsn) == [m[1] for m in everything if m[0] >= 6]
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT namespace, digest FROM artifact_owners ORDER BY 1").fetchall()
    assert found == [("team-a", used), ("team-b", used)]
