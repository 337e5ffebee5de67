"""Claims are fair across namespaces, and exclusive overlap policies hold across workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hourglass.domain import FencingToken, JobId, JobSpec, Overlap, Task
from hourglass.locks import Etcd
from hourglass.quota_rules import Quota
from hourglass.schedules import Every
from hourglass.store import claims, db, fires, jobs, quotas
from hourglass.workers.executors.local import LocalExecutor
from hourglass.workers.worker import Worker
from hourglass.workers.worker_config import WorkerConfig
from tests.integration.helpers import eventually


async def create(pool: db.Pool, namespace: str, command: tuple[str, ...], **spec: object) -> JobId:
    job_spec = JobSpec(
        name=namespace,
        task=Task(command=command),
        schedule=Every(timedelta(hours=1)),
        **spec,  # type: ignore[arg-type]
    )
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(
            conn, spec=job_spec, now=datetime.now(UTC), namespace=namespace
        )
    return job_id


async def claim(pool: db.Pool, limit: int, token: int) -> list[claims.QueuedRun]:
    """One worker's claim, committed (the etcd part played by a made-up token)."""
    async with db.transaction(pool) as conn:
        queued = await claims.lock_queued(conn, limit=limit, now=datetime.now(UTC))
        await claims.mark_running(
            conn,
            held=[(run, FencingToken(token)) for run in queued],
            starting={run.id for run in queued},
            worker_id="test",
            now=datetime.now(UTC),
        )
    return queued


async def test_one_namespaces_backlog_does_not_delay_another(pool: db.Pool) -> None:
    backlog = await create(pool, "a", ("true",))
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        queued = await fires.backfill(
            conn, backlog, start=now - timedelta(hours=5000), end=now, now=now
        )
    assert queued == 5000
    other = await create(pool, "b", ("true",))
    async with db.transaction(pool) as conn:
        late = await fires.trigger(conn, other, now=datetime.now(UTC))

    # A worker with room for 8: b's one run is in its first claim.
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        first = await claims.lock_queued(conn, limit=8, now=datetime.now(UTC))
    assert late in [run.id for run in first]
    # a offers its share of the claim: half of 8.
    assert sum(1 for run in first if run.job_id == backlog) == 4

    # A busy worker with one free slot at a time: b's run is in its first two claims.
    claimed = [run.id for run in await claim(pool, 1, 1)]
    claimed += [run.id for run in await claim(pool, 1, 2)]
    assert late in claimed


async def test_a_namespace_never_runs_more_than_its_max_running_runs(pool: db.Pool) -> None:
    """y's cap of 3 leaves the rest of every claim to x, and a y at its cap gets no slot even
    when the worker has nothing else to run."""
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        await quotas.put(conn, "y", Quota(max_running_runs=3), now=now)
    flood = await create(pool, "y", ("true",))
    async with db.transaction(pool) as conn:
        await fires.backfill(conn, flood, start=now - timedelta(hours=50), end=now, now=now)
    steady = await create(pool, "x", ("true",))
    async with db.transaction(pool) as conn:
        for _ in range(10):
            await fires.trigger(conn, steady, now=datetime.now(UTC))

    first = await claim(pool, 8, 1)
    assert sum(run.job_id == flood for run in first) == 3
    assert sum(run.job_id == steady for run in first) == 5
    assert {run.namespace for run in first} == {"x", "y"}
    second = await claim(pool, 8, 2)
    assert [run.job_id for run in second] == [steady] * 5
    assert await claim(pool, 8, 3) == []  # y's 47 queued runs wait for one of its 3 to end

    # One of y's runs ends: y has room for one again.
    async with db.transaction(pool) as conn:
        ended = next(run.id for run in first if run.job_id == flood)
        await conn.execute("UPDATE runs SET state = 'succeeded' WHERE id = %s", (ended,))
    assert [run.job_id for run in await claim(pool, 8, 4)] == [flood]


async def test_two_claims_at_once_never_pass_a_namespaces_running_cap(pool: db.Pool) -> None:
    """Two workers claiming at the same moment each see room for y's 4 runs; only the one
    holding y's claim lock takes them, and the next claim counts what it took."""
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        await quotas.put(conn, "y", Quota(max_running_runs=4), now=now)
    flood = await create(pool, "y", ("true",))
    async with db.transaction(pool) as conn:
        await fires.backfill(conn, flood, start=now - timedelta(hours=20), end=now, now=now)
    async with pool.connection() as first, pool.connection() as second:
        async with first.transaction():
            taken = await claims.lock_queued(first, limit=8, now=datetime.now(UTC))
            await claims.mark_running(
                first,
                held=[(r, FencingToken(1)) for r in taken],
                starting={r.id for r in taken},
                worker_id="a",
                now=now,
            )
            async with second.transaction():
                assert await claims.lock_queued(second, limit=8, now=datetime.now(UTC)) == []
        assert len(taken) == 4
    assert await claim(pool, 8, 2) == []


async def test_the_claim_reads_indexes_not_the_backlog(pool: db.Pool) -> None:
    backlog = await create(pool, "a", ("true",))
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        await fires.backfill(conn, backlog, start=now - timedelta(hours=5000), end=now, now=now)
        await conn.execute("ANALYZE runs")
    async with db.transaction(pool) as conn:
        params: dict[str, object] = {"now": datetime.now(UTC), "max_running": 100_000}
        cursor = await conn.execute(("EXPLAIN " + claims._WAITING).encode(), params)
        plan = "\n".join(row["QUERY PLAN"] for row in await cursor.fetchall())
        params.update(namespaces=["a"], running=[0], shares=[8], share=8, limit=8)
        cursor = await conn.execute(("EXPLAIN " + claims._CLAIM).encode(), params)
        plan += "\n".join(row["QUERY PLAN"] for row in await cursor.fetchall())
    assert "Seq Scan on runs" not in plan, plan
    assert "runs_queued" in plan and "runs_running" in plan, plan


@contextlib.asynccontextmanager
async def two_workers(pool: db.Pool, dsn: str, etcd: Etcd) -> AsyncIterator[list[Worker]]:
    workers = [
        Worker(
            pool=pool,
            dsn=dsn,
            etcd=etcd,
            executor=LocalExecutor(),
            config=WorkerConfig(
                concurrency=4, lease_ttl=3, max_idle=0.2, shutdown_grace=1, worker_id=f"w{i}"
            ),
        )
        for i in (1, 2)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def test_two_workers_never_run_two_runs_of_a_buffer_one_job(
    pool: db.Pool, database_url: str, etcd: Etcd, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    script = (
        f'echo "start $HOURGLASS_RUN_ID" >> {ledger}; sleep 0.1;'
        f' echo "end $HOURGLASS_RUN_ID" >> {ledger}'
    )
    job_id = await create(pool, "a", ("sh", "-c", script), overlap=Overlap.BUFFER_ONE)
    most_running = 0
    sampling = True

    async def sample() -> None:
        nonlocal most_running
        async with pool.connection() as conn:
            while sampling:
                cursor = await conn.execute(
                    "SELECT count(*) AS n FROM runs WHERE job_id = %s AND state = 'running'",
                    (job_id,),
                )
                row = await cursor.fetchone()
                assert row is not None
                most_running = max(most_running, row["n"])
                await asyncio.sleep(0.002)

    triggers = 24
    async with two_workers(pool, database_url, etcd):
        sampler = asyncio.create_task(sample())
        # Bursts of triggers: each burst wakes both workers with several queued runs.
        for _ in range(triggers // 4):
            async with db.transaction(pool) as conn:
                for _ in range(4):
                    await fires.trigger(conn, job_id, now=datetime.now(UTC))
            await asyncio.sleep(0.05)

        async def all_finished() -> bool:
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT count(*) AS done FROM runs WHERE job_id = %s AND state = 'succeeded'",
                    (job_id,),
                )
                row = await cursor.fetchone()
            assert row is not None
            return bool(row["done"] == triggers)

        await eventually(all_finished, timeout=60)
        sampling = False
        await sampler
    # The process ledger: each run ends before the next one starts.
    events = ledger.read_text().split("\n")[:-1]
    assert len(events) == 2 * triggers
    for index in range(0, len(events), 2):
        start, end = events[index].split(), events[index + 1].split()
        assert start[0] == "start" and end == ["end", start[1]], events[index : index + 2]
    assert most_running == 1
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT worker_id FROM attempts a JOIN runs r ON r.id = a.run_id"
            " WHERE r.job_id = %s",
            (job_id,),
        )
        holders = {row["worker_id"] for row in await cursor.fetchall()}
    print("runs held by", sorted(holders))
