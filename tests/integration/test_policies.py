"""Schedules, bounds, jitter, and the overlap and catch-up policies, against the real store,
with an injected clock so that hours pass in microseconds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobId,
    JobSpec,
    JobState,
    Overlap,
    Run,
    RunState,
    Task,
)
from hourglass.schedules import After, At, Bounds, Cron, Every, Schedule
from hourglass.store import claims, db, jobs, runs
from hourglass.workers.producer import Producer

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def produce(pool: db.Pool, database_url: str, clock: FakeClock) -> Callable[[], object]:
    producer = Producer(pool=pool, dsn=database_url, clock=clock)
    return producer.run_once


async def create(pool: db.Pool, clock: FakeClock, schedule: Schedule, **spec: object) -> JobId:
    job_spec = JobSpec(name="t", task=Task(command=("true",)), schedule=schedule, **spec)  # type: ignore[arg-type]
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(conn, spec=job_spec, now=clock.now())
    return job_id


async def all_runs(pool: db.Pool, job_id: JobId) -> list[Run]:
    async with pool.connection() as conn:
        found = await runs.list_for_job(conn, job_id, limit=10_000)
    return sorted(found, key=lambda run: run.scheduled_at)


async def job_row(pool: db.Pool, job_id: JobId) -> tuple[JobState, datetime | None, int]:
    async with pool.connection() as conn:
        job = await jobs.get(conn, job_id)
    assert job is not None
    return job.state, job.next_fire_at, job.missed_fires


async def finish_all(pool: db.Pool, job_id: JobId, clock: FakeClock) -> None:
    """Plays a worker that finishes every active run of the job successfully."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET state = 'succeeded', finished_at = %s"
            " WHERE job_id = %s AND state IN ('queued', 'running')",
            (clock.now(), job_id),
        )


async def start_all(pool: db.Pool, job_id: JobId) -> None:
    """Plays a worker that has started every queued run of the job."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET state = 'running', fencing_token = 1"
            " WHERE job_id = %s AND state = 'queued'",
            (job_id,),
        )


def seconds_after_t0(found: list[Run]) -> list[float]:
    return [(run.scheduled_at - T0).total_seconds() for run in found]


# --- every schedule kind ---------------------------------------------------------------


async def test_at_fires_once_at_its_instant(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(pool, clock, At(T0 + timedelta(minutes=5)))
    clock.advance(minutes=4, seconds=59)
    await produce()
    assert await all_runs(pool, job_id) == []
    clock.advance(seconds=1)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [300]
    assert (await job_row(pool, job_id))[:2] == (JobState.COMPLETED, None)


async def test_after_fires_once_after_its_delay(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(pool, clock, After(timedelta(seconds=90)))
    clock.advance(hours=1)
    await produce()
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [90]


async def test_cron_with_seconds_in_a_time_zone(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    # 14:00:30 Berlin summer time is 12:00:30 UTC.
    job_id = await create(pool, clock, Cron("30 0 14 * * *", "Europe/Berlin"))
    clock.advance(seconds=45)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [30]
    assert (await job_row(pool, job_id))[1] == T0 + timedelta(days=1, seconds=30)


# --- bounds and jitter -------------------------------------------------------------------


async def test_every_with_start_and_end_bounds(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    bounds = Bounds(start=T0 + timedelta(minutes=10), end=T0 + timedelta(minutes=10, seconds=45))
    job_id = await create(pool, clock, Every(timedelta(seconds=20)), bounds=bounds)
    assert (await job_row(pool, job_id))[1] == bounds.start
    clock.advance(minutes=9)
    await produce()
    assert await all_runs(pool, job_id) == []  # nothing before the start
    clock.advance(minutes=5)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [600, 620, 640]
    assert (await job_row(pool, job_id))[:2] == (JobState.COMPLETED, None)


async def test_cron_end_bound_completes_the_job(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(
        pool, clock, Cron("*/15 * * * * *"), bounds=Bounds(end=T0 + timedelta(seconds=40))
    )
    clock.advance(minutes=2)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [15, 30]
    assert (await job_row(pool, job_id))[0] == JobState.COMPLETED


async def test_jitter_delays_each_start_within_its_bound(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(pool, clock, Every(timedelta(seconds=10), jitter=timedelta(seconds=4)))
    clock.advance(seconds=2000)
    await produce()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT scheduled_at, available_at FROM runs WHERE job_id = %s", (job_id,)
        )
        delays = [
            (r["available_at"] - r["scheduled_at"]).total_seconds() for r in await cursor.fetchall()
        ]
    assert len(delays) == 200
    assert all(0 <= d < 4 for d in delays)
    assert max(delays) - min(delays) > 2  # spread out, not one fixed offset
    # The fire times themselves stay on the grid.
    assert seconds_after_t0(await all_runs(pool, job_id))[:3] == [10, 20, 30]


# --- DST ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        # Spring forward: 02:30 does not exist; fires once at the first valid instant after.
        (
            "Europe/Berlin",
            datetime(2026, 3, 28, 12, tzinfo=UTC),
            ["2026-03-29T01:00", "2026-03-30T00:30"],
        ),
        (
            "America/New_York",
            datetime(2026, 3, 7, 12, tzinfo=UTC),
            ["2026-03-08T07:00", "2026-03-09T06:30"],
        ),
        # Fall back: 02:30 happens twice in Berlin... and 01:30 in New York; each fires once.
        (
            "Europe/Berlin",
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            ["2026-10-25T00:30", "2026-10-26T01:30"],
        ),
    ],
)
async def test_dst_transitions_fire_exactly_once_per_day(
    pool: db.Pool, database_url: str, zone: str, day: datetime, expected_utc: list[str]
) -> None:
    clock = FakeClock(day)
    job_id = await create(pool, clock, Cron("30 2 * * *", zone))
    producer = Producer(pool=pool, dsn=database_url, clock=clock)
    for _ in range(48 * 4):  # two days in 15-minute steps, as a producer would see them
        clock.advance(minutes=15)
        await producer.run_once()
    fired = [run.scheduled_at.strftime("%Y-%m-%dT%H:%M") for run in await all_runs(pool, job_id)]
    assert fired == expected_utc


async def test_new_york_fall_back_repeated_hour_fires_once(
    pool: db.Pool, database_url: str
) -> None:
    clock = FakeClock(datetime(2026, 10, 31, 12, tzinfo=UTC))
    job_id = await create(pool, clock, Cron("30 1 * * *", "America/New_York"))
    producer = Producer(pool=pool, dsn=database_url, clock=clock)
    for _ in range(48 * 4):
        clock.advance(minutes=15)
        await producer.run_once()
    fired = [run.scheduled_at.strftime("%Y-%m-%dT%H:%M") for run in await all_runs(pool, job_id)]
    # 01:30 EDT (05:30 UTC) on Nov 1, not again at 01:30 EST; then 01:30 EST on Nov 2.
    assert fired == ["2026-11-01T05:30", "2026-11-02T06:30"]


# --- catch-up after downtime ---------------------------------------------------------------


async def test_catch_up_all_runs_every_missed_fire(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(pool, clock, Every(timedelta(seconds=30)))
    clock.advance(minutes=10)  # down for ten minutes
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [30 * i for i in range(1, 21)]
    assert (await job_row(pool, job_id))[2] == 0


async def test_catch_up_all_within_a_window(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(
        pool,
        clock,
        Every(timedelta(seconds=30)),
        catch_up=CatchUp(CatchUpPolicy.ALL, timedelta(minutes=2)),
    )
    clock.advance(minutes=10)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [480, 510, 540, 570, 600]
    assert (await job_row(pool, job_id))[2] == 15


async def test_catch_up_latest_runs_only_the_last_missed_fire(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(pool, clock, Cron("* * * * *"), catch_up=CatchUp(CatchUpPolicy.LATEST))
    clock.advance(minutes=10, seconds=5)
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [600]
    _, next_fire, missed = await job_row(pool, job_id)
    assert missed == 9 and next_fire == T0 + timedelta(minutes=11)


async def test_catch_up_skip_runs_only_fires_that_are_on_time(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    job_id = await create(
        pool, clock, Every(timedelta(seconds=30)), catch_up=CatchUp(CatchUpPolicy.SKIP)
    )
    clock.advance(seconds=31)  # on time: 1s late is within the 10s grace
    await produce()
    clock.advance(minutes=10)  # then down for ten minutes
    await produce()
    assert seconds_after_t0(await all_runs(pool, job_id)) == [30, 630]
    assert (await job_row(pool, job_id))[2] == 19


# --- overlap -------------------------------------------------------------------------------


async def overlap_scenario(
    pool: db.Pool, clock: FakeClock, produce: Callable, overlap: Overlap
) -> list[Run]:  # type: ignore[type-arg]
    """Fires at 10s (starts running), 20s and 30s while it runs; then it finishes; 40s."""
    job_id = await create(pool, clock, Every(timedelta(seconds=10)), overlap=overlap)
    clock.advance(seconds=10)
    await produce()
    await start_all(pool, job_id)
    for _ in range(2):
        clock.advance(seconds=10)
        await produce()
    return await all_runs(pool, job_id)


async def test_overlap_allow_queues_every_fire(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    found = await overlap_scenario(pool, clock, produce, Overlap.ALLOW)
    assert [r.state for r in found] == [RunState.RUNNING, RunState.QUEUED, RunState.QUEUED]


async def test_overlap_skip_records_skipped_fires(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    found = await overlap_scenario(pool, clock, produce, Overlap.SKIP)
    assert [r.state for r in found] == [RunState.RUNNING, RunState.SKIPPED, RunState.SKIPPED]
    assert "overlap policy skip" in found[1].reason


async def test_overlap_buffer_one_keeps_one_waiting(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    found = await overlap_scenario(pool, clock, produce, Overlap.BUFFER_ONE)
    assert [r.state for r in found] == [RunState.RUNNING, RunState.QUEUED, RunState.SKIPPED]
    # The waiting run may not start while the first runs...
    async with db.transaction(pool) as conn:
        assert await claims.lock_queued(conn, limit=10, now=clock.now()) == []
    await finish_all_running(pool, found[0])
    # ...and may once it has finished.
    async with db.transaction(pool) as conn:
        claimable = await claims.lock_queued(conn, limit=10, now=clock.now())
    assert [r.id for r in claimable] == [found[1].id]


async def test_overlap_replace_cancels_the_active_run(
    pool: db.Pool, clock: FakeClock, produce: Callable
) -> None:  # type: ignore[type-arg]
    found = await overlap_scenario(pool, clock, produce, Overlap.REPLACE)
    # The running one is asked to terminate (its worker records it cancelled); the queued
    # one of the second fire was cancelled outright by the third.
    assert [r.state for r in found] == [RunState.RUNNING, RunState.CANCELLED, RunState.QUEUED]
    async with pool.connection() as conn:
        assert await runs.cancel_requested(conn, [found[0].id]) == [found[0].id]
    assert found[1].reason == "replaced by a later fire"


async def finish_all_running(pool: db.Pool, run: Run) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE runs SET state = 'succeeded' WHERE id = %s", (run.id,))
