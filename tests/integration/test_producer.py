"""The producer turns due fires into queued runs and advances next_fire_at in one step."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hourglass.domain import JobSpec, JobState, Task
from hourglass.schedules import At, Cron, Every
from hourglass.store import db, jobs, runs
from hourglass.workers.producer import Producer

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


def spec(schedule: object, name: str = "job") -> JobSpec:
    return JobSpec(name=name, task=Task(command=("true",)), schedule=schedule)  # type: ignore[arg-type]


async def create(pool: db.Pool, job_spec: JobSpec, now: datetime = T0) -> object:
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(conn, spec=job_spec, now=now)
    return job_id


async def scheduled_times(pool: db.Pool, job_id: object) -> list[datetime]:
    async with pool.connection() as conn:
        found = await runs.list_for_job(conn, job_id, limit=1000)  # type: ignore[arg-type]
    return sorted(run.scheduled_at for run in found)


async def test_interval_job_fires_each_due_time_once(pool: db.Pool, database_url: str) -> None:
    clock = FakeClock(T0)
    job_id = await create(pool, spec(Every(timedelta(seconds=10))))
    producer = Producer(pool=pool, dsn=database_url, clock=clock)
    assert await producer.run_once() == 0  # first fire is at T0 + 10s

    clock.current = T0 + timedelta(seconds=35)
    assert await producer.run_once() == 1
    assert await producer.run_once() == 0  # nothing is fired twice
    assert await scheduled_times(pool, job_id) == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    async with pool.connection() as conn:
        job = await jobs.get(conn, job_id)  # type: ignore[arg-type]
    assert job is not None and job.next_fire_at == T0 + timedelta(seconds=40)


async def test_one_shot_job_completes_after_its_fire(pool: db.Pool, database_url: str) -> None:
    job_id = await create(pool, spec(At(T0 + timedelta(minutes=1))))
    producer = Producer(pool=pool, dsn=database_url, clock=FakeClock(T0 + timedelta(minutes=5)))
    assert await producer.run_once() == 1
    async with pool.connection() as conn:
        job = await jobs.get(conn, job_id)  # type: ignore[arg-type]
    assert job is not None
    assert job.state == JobState.COMPLETED and job.next_fire_at is None
    assert await scheduled_times(pool, job_id) == [T0 + timedelta(minutes=1)]


async def test_concurrent_producers_never_double_a_fire(pool: db.Pool, database_url: str) -> None:
    job_ids = [await create(pool, spec(Cron("* * * * * *"), f"job{i}")) for i in range(50)]
    clock = FakeClock(T0 + timedelta(seconds=5))
    producers = [Producer(pool=pool, dsn=database_url, clock=clock) for _ in range(4)]
    counts = await asyncio.gather(*(p.run_once() for p in producers))
    assert sum(counts) == 50
    for job_id in job_ids:
        assert await scheduled_times(pool, job_id) == [
            T0 + timedelta(seconds=s) for s in range(1, 6)
        ]


async def test_due_jobs_are_found_through_the_next_fire_index(pool: db.Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("SET enable_seqscan = off")
        cursor = await conn.execute(
            "EXPLAIN SELECT id FROM jobs WHERE next_fire_at <= now()"
            " ORDER BY next_fire_at LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
        plan = "\n".join(str(row["QUERY PLAN"]) for row in await cursor.fetchall())
    assert "jobs_next_fire_at" in plan
