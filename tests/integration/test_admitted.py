"""ScheduleJob's one-round-trip path (hourglass/store/admitted.py): it stores a job only when
nothing stands in its way, and its quota count stays exact under concurrent requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg

from hourglass import policies
from hourglass.domain import JobSpec, Task
from hourglass.policies import Quota
from hourglass.schedules import At, Every, Schedule
from hourglass.store import admitted, db, quotas

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(schedule: Schedule | None = None) -> JobSpec:
    return JobSpec(name="t", task=Task(command=("true",)), schedule=schedule or At(NOW))


async def create(
    pool: db.Pool, job: JobSpec, *, namespace: str = "team", request_id: str = ""
) -> object:
    async with pool.connection() as conn:
        return await admitted.create(
            conn,
            spec=job,
            rate=policies.admission_rate(job.schedule, now=NOW),
            now=NOW,
            namespace=namespace,
            request_id=request_id,
            request_digest=b"d" if request_id else b"",
        )


async def jobs_of(pool: db.Pool, namespace: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM jobs WHERE namespace = %s", (namespace,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_concurrent_requests_never_take_a_namespace_past_max_jobs(database_url: str) -> None:
    pool = await db.open_pool(database_url, max_size=12)
    try:
        async with pool.connection() as conn:
            await quotas.put(conn, "team", Quota(max_jobs=5), now=NOW)
        results = await asyncio.gather(*(create(pool, spec()) for _ in range(24)))
        assert sum(result is not None for result in results) == 5
        assert await jobs_of(pool, "team") == 5
        # Another namespace is not held back by this one's quota.
        assert await create(pool, spec(), namespace="other") is not None
    finally:
        await pool.close()


async def test_a_stored_job_has_its_first_revision_and_wakes_the_producer(
    pool: db.Pool, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {db.JOBS_CHANNEL}")
        job_id = await create(pool, spec(Every(timedelta(minutes=1))))
        assert job_id is not None
        notification = await asyncio.wait_for(anext(listener.notifies()), timeout=30)
        assert notification.channel == db.JOBS_CHANNEL
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT j.state, j.next_fire_at, r.revision FROM jobs j"
            " JOIN job_revisions r ON r.job_id = j.id WHERE j.id = %s",
            (job_id,),
        )
        rows = await cursor.fetchall()
    assert [(row["state"], row["revision"]) for row in rows] == [("active", 1)]
    assert rows[0]["next_fire_at"] == NOW + timedelta(minutes=1)


async def test_anything_to_decide_stores_nothing_and_leaves_it_to_the_full_path(
    pool: db.Pool,
) -> None:
    assert await create(pool, spec(), request_id="r1") is not None
    # A retried request id: the full path answers it (same job, or a conflict).
    assert await create(pool, spec(), request_id="r1") is None
    # A schedule faster than the namespace may fire: the full path refuses it, saying why.
    async with pool.connection() as conn:
        await quotas.put(conn, "team", Quota(max_fires_per_second=1), now=NOW)
    assert await create(pool, spec(Every(timedelta(milliseconds=100)))) is None
    # A binary: the full path checks that the namespace uploaded it.
    binary = JobSpec(name="b", task=Task(command=(), binary="sha256:" + "0" * 64), schedule=At(NOW))
    assert await create(pool, binary) is None
    assert await jobs_of(pool, "team") == 1
