"""ScheduleJob's one-round-trip path (hourglass/store/admitted.py): it stores a job only when
nothing stands in its way, and its quota count stays exact under concurrent requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hourglass import quota_rules
from hourglass.domain import JobSpec, Task
from hourglass.quota_rules import Quota
from hourglass.schedules import At, Every, Schedule
from hourglass.store import admitted, db, job_batch, jobs, quotas

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
            rate=quota_rules.admission_rate(job.schedule, now=NOW),
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


async def counted(pool: db.Pool, namespace: str) -> int:
    async with pool.connection() as conn:
        return await quotas.job_count(conn, namespace)


async def test_the_namespace_count_follows_every_insert_and_delete(pool: db.Pool) -> None:
    """max_jobs reads namespace_counts; it must equal the namespace's jobs after single
    inserts, a COPY of many, a conflict that stores nothing, and deletes."""
    for _ in range(3):
        assert await create(pool, spec()) is not None
    assert await create(pool, spec(), request_id="r") is not None
    assert await create(pool, spec(), request_id="r") is None  # nothing stored
    async with db.transaction(pool) as conn:
        await job_batch.create_many(
            conn, [job_batch.NewJob(spec=spec()) for _ in range(50)], namespace="team", now=NOW
        )
        await job_batch.create_many(
            conn, [job_batch.NewJob(spec=spec())], namespace="other", now=NOW
        )
    assert (await counted(pool, "team"), await jobs_of(pool, "team")) == (54, 54)
    async with db.transaction(pool) as conn:
        cursor = await conn.execute(
            "SELECT id FROM jobs WHERE namespace = 'team' ORDER BY id LIMIT 10"
        )
        for row in await cursor.fetchall():
            assert await jobs.delete(conn, row["id"], now=NOW)
        # One statement over two namespaces.
        await conn.execute(
            "DELETE FROM jobs WHERE id IN ((SELECT id FROM jobs WHERE namespace = 'team'"
            " LIMIT 5) UNION ALL (SELECT id FROM jobs WHERE namespace = 'other'))"
        )
    assert (await counted(pool, "team"), await jobs_of(pool, "team")) == (39, 39)
    assert (await counted(pool, "other"), await jobs_of(pool, "other")) == (0, 0)
    assert await counted(pool, "nobody") == 0


async def test_a_job_cannot_move_to_another_namespace(pool: db.Pool) -> None:
    """The count is per namespace: a move would make two counts wrong, so it is refused."""
    job_id = await create(pool, spec())
    with pytest.raises(psycopg.errors.RaiseException, match="another namespace"):
        async with db.transaction(pool) as conn:
            await conn.execute("UPDATE jobs SET namespace = 'other' WHERE id = %s", (job_id,))
    assert (await counted(pool, "team"), await counted(pool, "other")) == (1, 0)


async def test_the_quota_holds_with_many_jobs_counted(pool: db.Pool) -> None:
    """The count is read, not counted: a namespace far past a page of jobs is refused at
    exactly max_jobs, on the one-round-trip path and on the full path."""
    async with pool.connection() as conn:
        await quotas.put(conn, "team", Quota(max_jobs=3_000), now=NOW)
    async with db.transaction(pool) as conn:
        await job_batch.create_many(
            conn, [job_batch.NewJob(spec=spec()) for _ in range(2_999)], namespace="team", now=NOW
        )
    assert await create(pool, spec()) is not None
    assert await create(pool, spec()) is None
    with pytest.raises(quota_rules.QuotaExceeded, match="max_jobs=3000"):
        async with db.transaction(pool) as conn:
            await quotas.lock(conn, "team")
            await jobs.create(conn, spec=spec(), now=NOW, namespace="team")
            await quotas.enforce_jobs(conn, "team")
    assert await jobs_of(pool, "team") == 3_000


async def test_one_transaction_admits_in_order_and_leaves_out_only_the_refused(
    pool: db.Pool,
) -> None:
    """A batch is admitted job by job against the count: the ones past max_jobs, or faster
    than the namespace may fire, get None; the others are stored, all in one transaction."""
    async with pool.connection() as conn:
        await quotas.put(conn, "team", Quota(max_jobs=4, max_fires_per_second=1), now=NOW)
    fast = spec(Every(timedelta(milliseconds=100)))
    batch = [spec(), fast, spec(), spec(), spec(), spec()]
    prepared = [
        admitted.prepare(
            spec=job, rate=quota_rules.admission_rate(job.schedule, now=NOW), now=NOW,
            namespace="team",
        )
        for job in batch
    ]  # fmt: skip
    async with pool.connection() as conn:
        stored = await admitted.store(conn, [p for p in prepared if p is not None])
    assert [job_id is not None for job_id in stored] == [True, False, True, True, True, False]
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT DISTINCT xmin::text FROM jobs")
        assert len(await cursor.fetchall()) == 1
    assert (await counted(pool, "team"), await jobs_of(pool, "team")) == (4, 4)


async def test_the_one_statement_path_and_the_full_paths_never_pass_max_jobs_together(
    database_url: str,
) -> None:
    """The one-statement path locks the namespace's count row, the full paths (ScheduleJob's
    and ScheduleJobs') take the advisory lock and then the row through their insert: racing
    each other, they still stop at exactly max_jobs."""
    pool = await db.open_pool(database_url, max_size=12)
    try:
        async with pool.connection() as conn:
            await quotas.put(conn, "team", Quota(max_jobs=9), now=NOW)

        async def full(count: int) -> int:
            try:
                async with db.transaction(pool) as conn:
                    await quotas.lock(conn, "team")
                    await job_batch.create_many(
                        conn,
                        [job_batch.NewJob(spec=spec()) for _ in range(count)],
                        namespace="team",
                        now=NOW,
                    )
                    await quotas.enforce_jobs(conn, "team")
            except quota_rules.QuotaExceeded:
                return 0
            return count

        async def fast() -> int:
            return 0 if await create(pool, spec()) is None else 1

        stored = await asyncio.gather(
            *(full(count) for count in (1, 2, 3, 1, 2)), *(fast() for _ in range(12))
        )
        assert sum(stored) == await jobs_of(pool, "team") == await counted(pool, "team")
        assert await jobs_of(pool, "team") <= 9
    finally:
        await pool.close()
