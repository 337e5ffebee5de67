from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from hourglass.domain import FencingToken, JobId, JobSpec, Run, Task
from hourglass.locks import Etcd
from hourglass.schedules import At, Schedule
from hourglass.store import claims, db, jobs, runs
from hourglass.workers.executors.local import BinaryCache, LocalExecutor
from hourglass.workers.producer import Producer, ProducerConfig
from hourglass.workers.worker import Worker
from hourglass.workers.worker_config import WorkerConfig

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def schedule(
    pool: db.Pool,
    *command: str,
    when: Schedule | None = None,
    **spec: object,
) -> JobId:
    now = datetime.now(UTC)
    job_spec = JobSpec(
        name="test",
        task=Task(command=tuple(command)),
        schedule=when or At(now),
        **spec,  # type: ignore[arg-type]
    )
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(conn, spec=job_spec, now=now)
    return job_id


async def job_runs(pool: db.Pool, job_id: JobId) -> list[Run]:
    async with pool.connection() as conn:
        return await runs.list_for_job(conn, job_id, limit=100)


async def finished_run(pool: db.Pool, job_id: JobId, timeout: float = 20) -> Run:
    async def check() -> Run | None:
        found = await job_runs(pool, job_id)
        return found[0] if found and found[0].state.terminal else None

    return await eventually(check, timeout)


@contextlib.asynccontextmanager
async def running_service(
    pool: db.Pool,
    dsn: str,
    etcd: Etcd,
    binaries: BinaryCache | None = None,
    executor: LocalExecutor | None = None,
    **worker_config: object,
) -> AsyncIterator[Worker]:
    """A producer and a worker with the local executor (unsandboxed unless `executor` says
    otherwise), in this event loop."""
    producer = Producer(pool=pool, dsn=dsn, config=ProducerConfig(max_idle=0.2))
    worker = Worker(
        pool=pool,
        dsn=dsn,
        etcd=etcd,
        executor=executor or LocalExecutor(binaries=binaries),
        config=WorkerConfig(
            **{"lease_ttl": 3, "max_idle": 0.2, "shutdown_grace": 1, **worker_config}
        ),  # type: ignore[arg-type]
    )
    tasks = [asyncio.create_task(producer.run()), asyncio.create_task(worker.run())]
    try:
        yield worker
    finally:
        worker.stop()
        tasks[0].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def hold_runs(
    pool: db.Pool, database_url: str, etcd: Etcd, count: int, **spec: object
) -> list[tuple[claims.QueuedRun, FencingToken]]:
    """Queues one run each of `count` new `true` jobs and holds them all as one worker would,
    on a lease of 30 s."""
    for _ in range(count):
        await schedule(pool, "true", **spec)
    assert await Producer(pool=pool, dsn=database_url).run_once() == count
    lease = await etcd.grant(30)
    async with db.transaction(pool) as conn:
        queued = await claims.lock_queued(conn, limit=count, now=datetime.now(UTC))
        tokens = await etcd.hold_runs([r.id for r in queued], lease_id=lease, holder="w")
        held = [(run, tokens[run.id]) for run in queued]
        await claims.mark_running(
            conn, held=held, starting=set(tokens), worker_id="w", now=datetime.now(UTC)
        )
    assert len(held) == count
    return held


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
