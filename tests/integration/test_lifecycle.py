"""Runs while they live: cancelling, replacing, watching, following output, running uploaded
binaries, and the maintenance that cleans up after them. Real worker, real processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from hourglass import artifacts
from hourglass.domain import Overlap, RunState
from hourglass.locks import Etcd
from hourglass.schedules import Every
from hourglass.store import artifacts as artifact_rows
from hourglass.store import db, runs
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from hourglass.workers.executors.local import BinaryCache
from hourglass.workers.maintenance import Maintenance, MaintenanceConfig
from tests.integration.helpers import eventually, finished_run, job_runs, running_service, schedule


async def running_run(pool: db.Pool, job_id: object) -> object:
    async def check() -> object:
        found = await job_runs(pool, job_id)  # type: ignore[arg-type]
        return next((r for r in found if r.state == RunState.RUNNING), None)

    return await eventually(check)


async def test_cancel_run_terminates_a_running_process(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub, tmp_path: Path
) -> None:
    marker = tmp_path / "survived"
    job_id = await schedule(pool, "sh", "-c", f"echo started; sleep 30; touch {marker}")
    async with running_service(pool, database_url, etcd):
        run = await running_run(pool, job_id)
        await stub.CancelRun(pb.CancelRunRequest(run_id=str(run.id)))  # type: ignore[attr-defined]
        finished = await finished_run(pool, job_id, timeout=10)
    assert finished.state == RunState.CANCELLED
    assert finished.reason == "cancelled by a user"
    (attempt,) = finished.attempts
    assert attempt.state == RunState.CANCELLED and attempt.stdout_tail == "started\n"
    assert not marker.exists()


async def test_a_run_claimed_ahead_waits_for_a_slot_and_can_be_cancelled_before_it_starts(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub, tmp_path: Path
) -> None:
    """A worker holds runs beyond its slots so that a freed slot never waits for a claim. A
    run held that way is running (claimed, fenced) but has not started: cancelling it records
    it cancelled, and its command never runs."""
    marker = tmp_path / "ran"
    quick = await schedule(pool, "true")
    # Claims ahead behind attempts shorter than a minute: after `true`, and while `sleep` is
    # younger than that.
    async with running_service(
        pool, database_url, etcd, concurrency=1, claim_ahead=1, claim_ahead_below=60.0
    ):
        await finished_run(pool, quick)
        busy = await schedule(pool, "sleep", "30")
        await running_run(pool, busy)
        waiting = await schedule(pool, "touch", str(marker))
        run = await running_run(pool, waiting)  # claimed while the only slot is busy
        await stub.CancelRun(pb.CancelRunRequest(run_id=str(run.id)))  # type: ignore[attr-defined]
        finished = await finished_run(pool, waiting, timeout=10)
        (still,) = await job_runs(pool, busy)
        assert still.state == RunState.RUNNING
    assert finished.state == RunState.CANCELLED
    (attempt,) = finished.attempts
    assert attempt.state == RunState.CANCELLED and attempt.error == "cancelled on request"
    assert not marker.exists()


async def test_runs_claimed_ahead_start_when_a_slot_frees_marked_started(
    pool: db.Pool, database_url: str, etcd: Etcd, tmp_path: Path
) -> None:
    """A run held for a slot is stored not started until its slot comes; then its attempt is
    marked started (fenced) and it runs as its first attempt."""
    go = tmp_path / "go"
    quick = await schedule(pool, "true")
    # Room for 4 held runs: a worker claims again once half its lead is spent, so with room
    # for 3 only, runs fired one producer cycle apart left the third unclaimed (it would
    # have been claimed when the busy run ended), and the test failed about once in 8.
    async with running_service(
        pool, database_url, etcd, concurrency=1, claim_ahead=4, claim_ahead_below=60.0
    ):
        await finished_run(pool, quick)
        # Holds the only slot until the test says go.
        busy = await schedule(pool, "sh", "-c", f"until [ -e {go} ]; do sleep 0.05; done")
        await running_run(pool, busy)
        held = [await schedule(pool, "true") for _ in range(3)]
        waiting = [await running_run(pool, job) for job in held]  # claimed, slot busy

        async def started(run_id: object) -> bool:
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT started FROM attempts WHERE run_id = %s", (run_id,)
                )
                row = await cursor.fetchone()
            assert row is not None
            return bool(row["started"])

        assert [await started(run.id) for run in waiting] == [False] * 3  # type: ignore[attr-defined]
        go.touch()
        finished = [await finished_run(pool, job, timeout=20) for job in held]
    for run in finished:
        assert run.state == RunState.SUCCEEDED and run.attempt == 1
        assert [a.number for a in run.attempts] == [1]
        assert await started(run.id)


async def test_a_stopping_worker_hands_back_the_runs_it_claimed_ahead_unstarted(
    pool: db.Pool, database_url: str, etcd: Etcd, tmp_path: Path
) -> None:
    """A run held for a slot that never came goes back to the queue as it was (same attempt,
    no attempt row): it never ran, so it must not come back as a lost attempt."""
    marker = tmp_path / "ran"
    quick = await schedule(pool, "true")
    async with running_service(
        pool, database_url, etcd, concurrency=1, claim_ahead=1, claim_ahead_below=60.0
    ):
        await finished_run(pool, quick)
        busy = await schedule(pool, "sleep", "30")
        await running_run(pool, busy)
        waiting = await schedule(pool, "touch", str(marker))
        await running_run(pool, waiting)
    (run,) = await job_runs(pool, waiting)
    assert run.state == RunState.QUEUED and run.attempt == 1
    assert run.attempts == ()
    assert not marker.exists()


async def test_replace_terminates_the_running_run_then_starts_the_next(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(
        pool, "sleep", "30", when=Every(timedelta(seconds=1.5)), overlap=Overlap.REPLACE
    )

    async def replaced_and_running() -> object:
        found = sorted(await job_runs(pool, job_id), key=lambda r: r.scheduled_at)
        states = [r.state for r in found]
        return RunState.CANCELLED in states and states[-1] == RunState.RUNNING and found

    async with running_service(pool, database_url, etcd):
        found = await eventually(replaced_and_running, timeout=15)
    first = found[0]  # type: ignore[index]
    assert first.state == RunState.CANCELLED and first.reason == "replaced by a later fire"
    assert first.attempts[0].state == RunState.CANCELLED
    # Never two running at once.
    assert [r.state for r in found].count(RunState.RUNNING) == 1  # type: ignore[attr-defined]


async def test_buffer_one_runs_fires_one_after_another(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(
        pool, "sleep", "1", when=Every(timedelta(seconds=0.4)), overlap=Overlap.BUFFER_ONE
    )

    async def three_done() -> object:
        found = [r for r in await job_runs(pool, job_id) if r.state == RunState.SUCCEEDED]
        return len(found) >= 3 and found

    async with running_service(pool, database_url, etcd):
        done = await eventually(three_done, timeout=20)
    found = sorted(await job_runs(pool, job_id), key=lambda r: r.scheduled_at)
    assert RunState.SKIPPED in [r.state for r in found]
    spans = sorted((r.attempts[0].started_at, r.attempts[0].finished_at) for r in done)  # type: ignore[attr-defined]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two runs of a buffer_one job overlapped"


async def collect(
    stream: AsyncIterator[pb.WatchJobResponse], into: list[tuple[float, pb.WatchJobResponse]]
) -> None:
    async for message in stream:
        into.append((time.time(), message))


async def test_watch_job_pushes_each_run_state_change_while_it_happens(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub
) -> None:
    """Every change, in order, and pushed: the running message arrives while the run still
    runs. The run lasts 3 s; a push takes milliseconds (docs/benchmarks.md measures it), so
    the bound only fails if changes were found afterwards instead of pushed. Completeness
    under load, with runs that end at once, is tests/integration/test_watch.py's."""
    job_id = await schedule(pool, "sleep", "3", when=Every(timedelta(hours=1)))
    received: list[tuple[float, pb.WatchJobResponse]] = []
    watcher = asyncio.create_task(
        collect(stub.WatchJob(pb.WatchJobRequest(job_id=str(job_id))), received)
    )
    await eventually(lambda: asyncio.sleep(0, received))  # the snapshot (the job) has arrived
    async with running_service(pool, database_url, etcd):
        await stub.TriggerJob(pb.TriggerJobRequest(job_id=str(job_id)))
        run = await finished_run(pool, job_id)
        await eventually(
            lambda: asyncio.sleep(
                0, any(m.run.state == pb.RUN_STATE_SUCCEEDED for _, m in received)
            )
        )
    watcher.cancel()
    updates = [(at, m.run) for at, m in received if m.HasField("run")]
    assert [r.state for _, r in updates] == [
        pb.RUN_STATE_QUEUED,
        pb.RUN_STATE_RUNNING,
        pb.RUN_STATE_SUCCEEDED,
    ]
    assert all(r.id == str(run.id) for _, r in updates)
    running_arrived = updates[1][0]
    assert run.finished_at is not None
    assert running_arrived < run.finished_at.timestamp(), "running came after the run ended"


async def test_run_logs_follow_a_live_run(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub
) -> None:
    job_id = await schedule(pool, "sh", "-c", "echo one; sleep 1.5; echo two >&2; echo three")
    async with running_service(pool, database_url, etcd):
        run = await running_run(pool, job_id)
        pieces: list[tuple[int, bytes, RunState]] = []
        async for chunk in stub.GetRunLogs(pb.GetRunLogsRequest(run_id=str(run.id), follow=True)):  # type: ignore[attr-defined]
            async with pool.connection() as conn:
                now = await runs.get(conn, run.id)  # type: ignore[attr-defined]
            assert now is not None
            pieces.append((chunk.stream, chunk.data, now.state))
    assert b"".join(d for s, d, _ in pieces if s == pb.LOG_STREAM_STDOUT) == b"one\nthree\n"
    assert b"".join(d for s, d, _ in pieces if s == pb.LOG_STREAM_STDERR) == b"two\n"
    # The first line arrived while the run was still going: followed, not read afterwards.
    assert pieces[0][1] == b"one\n" and pieces[0][2] == RunState.RUNNING
    # Without follow, a finished run's output comes back whole.
    again = [c.data async for c in stub.GetRunLogs(pb.GetRunLogsRequest(run_id=str(run.id)))]  # type: ignore[attr-defined]
    assert b"".join(again) == b"one\ntwo\nthree\n"


async def upload(stub: pb_grpc.JobSchedulerStub, data: bytes) -> str:
    reply = await stub.UploadBinary(
        pb.UploadBinaryRequest(chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)
    )  # type: ignore[arg-type]
    return str(reply.digest)


async def test_an_uploaded_binary_runs_by_digest_and_a_corrupt_one_is_refused(
    pool: db.Pool, database_url: str, etcd: Etcd, stub: pb_grpc.JobSchedulerStub, tmp_path: Path
) -> None:
    store = artifacts.LocalArtifactStore(tmp_path / "artifacts")  # the api fixture's store
    script = b'#!/bin/sh\necho "tool says: $*"\n'
    digest = await upload(stub, script)
    request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(binary=digest, args=["a", "b c"])))
    request.spec.schedule.after.FromSeconds(0)
    job_id = (await stub.ScheduleJob(request)).job_id

    cache = BinaryCache(store, tmp_path / "cache")
    async with running_service(pool, database_url, etcd, binaries=cache):
        ok = await finished_run(pool, job_id)  # type: ignore[arg-type]
        assert ok.state == RunState.SUCCEEDED
        assert ok.attempts[0].stdout_tail == "tool says: a b c\n"

        # Corrupt the stored bytes and the cached copy: the next run must refuse to execute.
        store.path_of(artifacts.parse_digest(digest)).write_bytes(b"#!/bin/sh\necho evil\n")
        for cached in (tmp_path / "cache").iterdir():
            cached.write_bytes(b"#!/bin/sh\necho evil\n")
        run = (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run

        async def refused() -> object:
            async with pool.connection() as conn:
                found = await runs.get(conn, run.id)  # type: ignore[arg-type]
            return found if found and found.state.terminal else None

        bad = await eventually(refused)
    assert bad.state == RunState.FAILED  # type: ignore[attr-defined]
    error = bad.attempts[0].error  # type: ignore[attr-defined]
    assert "corrupt" in error.lower() and digest in error
    assert bad.attempts[0].stdout_tail == ""  # type: ignore[attr-defined]


async def test_binary_over_the_size_limit_is_resource_exhausted(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    from hourglass.api import server as api_server
    from hourglass.api.auth import Insecure

    server = await api_server.start(
        pool,
        "127.0.0.1:0",
        dsn=database_url,
        auth=Insecure(),
        artifact_store=artifacts.LocalArtifactStore(tmp_path / "small"),
        max_binary=1000,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await upload(pb_grpc.JobSchedulerStub(channel), b"x" * 5000)
    finally:
        await server.stop()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1000 bytes" in (raised.value.details() or "")
    assert await artifacts.LocalArtifactStore(tmp_path / "small").list() == []


async def test_maintenance_prunes_old_runs_and_unreferenced_binaries(
    pool: db.Pool, stub: pb_grpc.JobSchedulerStub, tmp_path: Path
) -> None:
    store = artifacts.LocalArtifactStore(tmp_path / "artifacts")
    kept_digest = await upload(stub, b"#!/bin/sh\necho kept\n")
    orphan_digest = await upload(stub, b"#!/bin/sh\necho orphan\n")
    request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(binary=kept_digest)))
    request.spec.schedule.every.interval.FromSeconds(3600)
    job_id = (await stub.ScheduleJob(request)).job_id
    old, recent = [
        (await stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id))).run for _ in range(2)
    ]
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET state = 'succeeded', finished_at = %s WHERE id = %s",
            (now - timedelta(days=40), old.id),
        )
        await conn.execute(
            "UPDATE runs SET state = 'succeeded', finished_at = %s WHERE id = %s",
            (now - timedelta(days=1), recent.id),
        )
        await conn.execute("UPDATE artifacts SET created_at = %s", (now - timedelta(days=2),))
        await conn.execute(
            "UPDATE artifact_owners SET uploaded_at = %s", (now - timedelta(days=2),)
        )

    maintenance = Maintenance(
        pool=pool, artifact_store=store, config=MaintenanceConfig(retention=timedelta(days=30))
    )
    assert await maintenance.run_once() == (1, 1)
    remaining = [r.id for r in (await stub.ListRuns(pb.ListRunsRequest(job_id=job_id))).runs]
    assert remaining == [recent.id]
    assert await store.list() == [artifacts.parse_digest(kept_digest)]
    async with pool.connection() as conn:
        assert await artifact_rows.unreferenced(conn, created_before=now, limit=10) == []
    assert not await store.exists(artifacts.parse_digest(orphan_digest))
