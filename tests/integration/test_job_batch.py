"""ScheduleJobs' store (hourglass.store.job_batch): a job stored in a batch reads back exactly
as the same job stored alone by jobs.create, row and revision, whatever its spec holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobSpec,
    KubernetesJob,
    Overlap,
    Resources,
    RetryPolicy,
    Task,
)
from hourglass.schedules import At, Bounds, Cron, Every
from hourglass.store import db, job_batch, jobs

NOW = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)

SPECS = [
    JobSpec(name="plain", task=Task(command=("true",)), schedule=At(NOW + timedelta(days=1))),
    JobSpec(  # everything set, with text that JSON and COPY must escape
        name='dü "quoted"\ttab\\slash\n',
        task=Task(
            command=("/bin/sh", "-c"),
            args=("echo 'a b' \"c\"\\n", "ünï", ""),
            env={"A": "1", "EMPTY": "", "UNI": "✓\n"},
            image="busybox:1.36",
            working_dir="/tmp/x y",
            resources=Resources(cpu_request="250m", memory_limit="512Mi"),
            secret_env={"TOKEN": 's3cr"et', "B": "x"},
            kubernetes=KubernetesJob(
                job_template='{"spec":{"template":{"spec":{"containers":[]}}}}',
                namespace="ns",
                owner_name="owner",
                owner_uid="uid",
                successful_jobs_history_limit=3,
            ),
        ),
        schedule=Cron("*/5 * * * *", "Europe/Paris"),
        bounds=Bounds(start=NOW - timedelta(days=3), end=NOW + timedelta(days=400)),
        retry=RetryPolicy(max_attempts=5, backoff=timedelta(days=1, seconds=3, microseconds=7)),
        timeout=timedelta(hours=25, microseconds=1),
        overlap=Overlap.SKIP,
        catch_up=CatchUp(CatchUpPolicy.SKIP, timedelta(seconds=90)),
    ),
    JobSpec(
        name="every",
        task=Task(command=("true",)),
        schedule=Every(timedelta(milliseconds=1500), timedelta(seconds=1)),
        bounds=Bounds(start=NOW + timedelta(hours=1)),
        catch_up=CatchUp(CatchUpPolicy.LATEST),
    ),
    JobSpec(  # fired already: stored completed, with no next fire
        name="past", task=Task(command=("true",)), schedule=At(NOW - timedelta(days=1))
    ),
]

# Columns that differ between any two jobs.
_OWN = {"id", "request_id", "request_digest"}


async def _stored(pool: db.Pool, job_id: object) -> tuple[dict[str, object], object]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
        row = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT revision, spec, created_at FROM job_revisions WHERE job_id = %s", (job_id,)
        )
        revisions = await cursor.fetchall()
    assert row is not None
    return {k: v for k, v in row.items() if k not in _OWN}, revisions


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name[:5] for spec in SPECS])
async def test_a_job_of_a_batch_is_stored_as_it_would_be_alone(
    pool: db.Pool, spec: JobSpec
) -> None:
    async with db.transaction(pool) as conn:
        alone, _ = await jobs.create(conn, spec=spec, now=NOW, namespace="team")
        batched = await job_batch.create_many(
            conn,
            [job_batch.NewJob(spec=spec, request_id="r", request_digest=b"\x00\xff")],
            namespace="team",
            now=NOW,
        )
    assert await _stored(pool, batched[0]) == await _stored(pool, alone)
    async with pool.connection() as conn:
        job = await jobs.get(conn, batched[0])
        cursor = await conn.execute(
            "SELECT request_id, request_digest FROM jobs WHERE id = %s", (batched[0],)
        )
        row = await cursor.fetchone()
    assert job is not None and job.spec == spec
    assert row == {"request_id": "r", "request_digest": b"\x00\xff"}


async def test_a_batch_keeps_its_order_and_gives_back_a_retried_request(pool: db.Pool) -> None:
    new = [job_batch.NewJob(spec=spec, request_id=f"r{i}", request_digest=b"d") for i, spec in
           enumerate(SPECS)]  # fmt: skip
    async with db.transaction(pool) as conn:
        first = await job_batch.create_many(conn, new, namespace="team", now=NOW)
    async with db.transaction(pool) as conn:
        again = await job_batch.create_many(conn, new[1:], namespace="team", now=NOW)
    assert again == first[1:]
    async with pool.connection() as conn:
        names = [(await jobs.get(conn, job_id)).spec.name for job_id in first]  # type: ignore[union-attr]
    assert names == [spec.name for spec in SPECS]
    with pytest.raises(jobs.RequestConflict):
        async with db.transaction(pool) as conn:
            await job_batch.create_many(
                conn,
                [job_batch.NewJob(spec=SPECS[0], request_id="r0", request_digest=b"other")],
                namespace="team",
                now=NOW,
            )


async def test_a_batch_mixing_retried_and_new_requests_stores_only_the_new_ones(
    pool: db.Pool,
) -> None:
    async with db.transaction(pool) as conn:
        (kept,) = await job_batch.create_many(
            conn,
            [job_batch.NewJob(spec=SPECS[0], request_id="old", request_digest=b"d")],
            namespace="team",
            now=NOW,
        )
    mixed = [
        job_batch.NewJob(spec=SPECS[2], request_id="new", request_digest=b"d"),
        job_batch.NewJob(spec=SPECS[0], request_id="old", request_digest=b"d"),
        job_batch.NewJob(spec=SPECS[3]),
    ]
    async with db.transaction(pool) as conn:
        ids = await job_batch.create_many(conn, mixed, namespace="team", now=NOW)
    assert ids[1] == kept and len({*ids}) == 3
    async with pool.connection() as conn:
        names = [(await jobs.get(conn, job_id)).spec.name for job_id in ids]  # type: ignore[union-attr]
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM jobs) AS jobs,"
            " (SELECT count(*) FROM job_revisions) AS revisions,"
            " (SELECT jobs FROM namespace_counts WHERE namespace = 'team') AS counted"
        )
        counts = await cursor.fetchone()
    assert names == [SPECS[2].name, SPECS[0].name, SPECS[3].name]
    # The retried request made no second job, no revision, and the count did not move.
    assert counts == {"jobs": 3, "revisions": 3, "counted": 3}
