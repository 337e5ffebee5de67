"""Group commit of ScheduleJob (hourglass.api.group_commit): the concurrent calls of a
namespace share one transaction, each is answered after its commit, and neither a quota
refusal nor a failure of one call fails the others."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest

from hourglass import quota_rules
from hourglass.api.group_commit import GroupCommit
from hourglass.domain import JobSpec, Task
from hourglass.quota_rules import Quota
from hourglass.schedules import At
from hourglass.store import admitted, db, quotas

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = JobSpec(name="t", task=Task(command=("true",)), schedule=At(NOW))


def prepared(namespace: str = "team") -> admitted.Prepared:
    made = admitted.prepare(
        spec=SPEC,
        rate=quota_rules.admission_rate(SPEC.schedule, now=NOW),
        now=NOW,
        namespace=namespace,
    )
    assert made is not None
    return made


async def transactions(pool: db.Pool, namespace: str) -> int:
    """How many transactions wrote the namespace's jobs (rows of one share its xmin)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(DISTINCT xmin::text) AS n FROM jobs WHERE namespace = %s", (namespace,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_concurrent_calls_share_a_transaction_and_see_their_jobs_committed(
    pool: db.Pool,
) -> None:
    commit = GroupCommit(pool)
    ids = await asyncio.gather(*(commit.store(prepared()) for _ in range(10)))
    assert all(job_id is not None for job_id in ids)
    assert len(set(ids)) == 10
    assert await transactions(pool, "team") == 1
    # Answered after the commit: another connection sees every job.
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT id FROM jobs WHERE id = ANY(%s)", (list(ids),))
        assert len(await cursor.fetchall()) == 10
    # Another namespace goes in a transaction of its own.
    assert await commit.store(prepared("other")) is not None
    assert await transactions(pool, "other") == 1


async def test_batches_from_two_processes_never_pass_max_jobs(database_url: str) -> None:
    """Two API processes (two GroupCommits, each batching its calls): the namespace ends at
    exactly max_jobs, and each refused call got None (the full path then says why)."""
    pool = await db.open_pool(database_url, max_size=8)
    try:
        async with pool.connection() as conn:
            await quotas.put(conn, "team", Quota(max_jobs=7), now=NOW)
        first, second = GroupCommit(pool, max_batch=3), GroupCommit(pool, max_batch=3)
        results = await asyncio.gather(
            *(commit.store(prepared()) for _ in range(12) for commit in (first, second))
        )
        assert sum(job_id is not None for job_id in results) == 7
        async with pool.connection() as conn:
            assert await quotas.job_count(conn, "team") == 7
            cursor = await conn.execute("SELECT count(*) AS n FROM jobs")
            row = await cursor.fetchone()
        assert row is not None and row["n"] == 7
    finally:
        await pool.close()


async def test_a_call_that_fails_fails_alone(pool: db.Pool) -> None:
    """A job the database refuses fails its batch; the batch is then stored call by call, so
    only that call gets the error."""
    bad = prepared()
    bad = replace(bad, row={**bad.row, "max_attempts": 0})  # breaks a CHECK
    commit = GroupCommit(pool)
    results = await asyncio.gather(
        commit.store(prepared()), commit.store(bad), commit.store(prepared()),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[1], psycopg.errors.CheckViolation)
    assert results[0] is not None and results[2] is not None
    assert not isinstance(results[0], BaseException)
    async with pool.connection() as conn:
        assert await quotas.job_count(conn, "team") == 2


async def test_a_caller_that_goes_away_leaves_the_others_answered(pool: db.Pool) -> None:
    commit = GroupCommit(pool)
    leaving = asyncio.ensure_future(commit.store(prepared()))
    staying = asyncio.ensure_future(commit.store(prepared()))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying is not None
    with pytest.raises(asyncio.CancelledError):
        await leaving
