"""The claimer takes back runs whose holder's lease is gone, and only those."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from hourglass.domain import FencingToken, Outcome, RetryPolicy, RunState
from hourglass.locks import Etcd, Lease
from hourglass.policies import Requeue
from hourglass.store import claims, db, results
from hourglass.workers.claimer import Claimer, ClaimerConfig
from hourglass.workers.producer import Producer
from tests.integration.helpers import job_runs, schedule, seconds


def takeovers(attempt: str) -> float:
    """The claimer's `hourglass_takeovers_total{attempt=...}` as /metrics shows it."""
    value = REGISTRY.get_sample_value("hourglass_takeovers_total", {"attempt": attempt})
    return value or 0.0


async def hold_one(
    pool: db.Pool, etcd: Etcd, lease_id: int, *, started: bool = True
) -> tuple[claims.QueuedRun, FencingToken]:
    """Claims the one queued run as a worker would, on the given lease: starting it now, or
    (`started` False) ahead of a free slot."""
    async with db.transaction(pool) as conn:
        (queued,) = await claims.lock_queued(conn, limit=10, now=datetime.now(UTC))
        tokens = await etcd.hold_runs([queued.id], lease_id=lease_id, holder="worker-a")
        await claims.mark_running(
            conn,
            held=[(queued, tokens[queued.id])],
            starting={queued.id} if started else set(),
            worker_id="worker-a",
            now=datetime.now(UTC),
        )
    return queued, tokens[queued.id]


async def queue_one(pool: db.Pool, database_url: str, **spec: object) -> object:
    job_id = await schedule(pool, "true", **spec)
    assert await Producer(pool=pool, dsn=database_url).run_once() == 1
    return job_id


async def test_a_run_whose_lease_expired_is_requeued_as_the_next_attempt(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await queue_one(
        pool, database_url, retry=RetryPolicy(max_attempts=2, backoff=seconds(0))
    )
    lease = await etcd.grant(5)
    queued, token = await hold_one(pool, etcd, lease)
    claimer = Claimer(pool=pool, etcd=etcd)
    assert await claimer.run_once() == 0  # the holder is alive: hands off

    await etcd.revoke(lease)  # the worker dies
    assert await claimer.run_once() == 1
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.QUEUED and run.attempt == 2
    (lost,) = run.attempts
    assert lost.state == RunState.LOST and lost.fencing_token == token
    assert "died or stalled" in lost.error

    # The dead worker's late result is refused: its token no longer holds the run.
    async with db.transaction(pool) as conn:
        accepted = await results.finish(
            conn,
            run_id=queued.id,
            attempt=1,
            token=token,
            outcome=Outcome(state=RunState.SUCCEEDED, exit_code=0),
            requeue=Requeue(at=None),
            now=datetime.now(UTC),
        )
    assert not accepted
    assert await job_runs(pool, job_id) == [run]  # type: ignore[arg-type]


async def test_a_lost_run_with_no_attempts_left_fails(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await queue_one(pool, database_url)
    lease = await etcd.grant(5)
    await hold_one(pool, etcd, lease)
    await etcd.revoke(lease)
    assert await Claimer(pool=pool, etcd=etcd).run_once() == 1
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.FAILED and run.finished_at is not None
    assert [a.state for a in run.attempts] == [RunState.LOST]


async def test_a_run_claimed_ahead_whose_holder_died_before_it_started_is_handed_back(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    # max_attempts 1: losing an attempt would fail the run, though it never ran.
    job_id = await queue_one(pool, database_url)
    lease = await etcd.grant(5)
    queued, token = await hold_one(pool, etcd, lease, started=False)
    await etcd.revoke(lease)  # the worker dies with the run waiting for a slot
    unspent, lost = takeovers("unspent"), takeovers("lost")
    assert await Claimer(pool=pool, etcd=etcd).run_once() == 1
    assert (takeovers("unspent") - unspent, takeovers("lost") - lost) == (1, 0)
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.QUEUED and run.attempt == 1 and run.attempts == ()

    # The dead worker, resumed, can neither start it nor report it.
    async with db.transaction(pool) as conn:
        assert not await claims.start(conn, [(queued.id, 1, token)], now=datetime.now(UTC))
        assert not await results.finish(
            conn,
            run_id=queued.id,
            attempt=1,
            token=token,
            outcome=Outcome(state=RunState.SUCCEEDED, exit_code=0),
            requeue=Requeue(at=None),
            now=datetime.now(UTC),
        )
    assert await job_runs(pool, job_id) == [run]  # type: ignore[arg-type]


async def test_a_run_claimed_ahead_that_started_is_lost_not_handed_back(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await queue_one(pool, database_url)
    lease = await etcd.grant(5)
    queued, token = await hold_one(pool, etcd, lease, started=False)
    async with db.transaction(pool) as conn:
        marked = await claims.start(conn, [(queued.id, 1, token)], now=datetime.now(UTC))
    assert marked == {queued.id}
    await etcd.revoke(lease)  # the worker dies while the command runs
    unspent, lost = takeovers("unspent"), takeovers("lost")
    assert await Claimer(pool=pool, etcd=etcd).run_once() == 1
    assert (takeovers("unspent") - unspent, takeovers("lost") - lost) == (0, 1)
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.FAILED
    assert [a.state for a in run.attempts] == [RunState.LOST]


async def test_a_holder_writes_with_its_token_and_nobody_else_can(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await queue_one(pool, database_url)
    lease = await etcd.grant(5)
    queued, token = await hold_one(pool, etcd, lease)

    async def finish(with_token: int) -> bool:
        async with db.transaction(pool) as conn:
            return await results.finish(
                conn,
                run_id=queued.id,
                attempt=1,
                token=FencingToken(with_token),
                outcome=Outcome(state=RunState.SUCCEEDED, exit_code=0),
                requeue=Requeue(at=None),
                now=datetime.now(UTC),
            )

    assert not await finish(token - 1)
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.RUNNING
    assert await finish(token)
    (run,) = await job_runs(pool, job_id)  # type: ignore[arg-type]
    assert run.state == RunState.SUCCEEDED


async def test_one_claimer_leads_and_another_takes_over_when_it_dies(
    pool: db.Pool, etcd: Etcd
) -> None:
    first, second = (
        Claimer(
            pool=pool,
            etcd=etcd,
            config=ClaimerConfig(interval=0.1, lease_ttl=2, claimer_id=name),
        )
        for name in ("one", "two")
    )
    first_task = asyncio.create_task(first.run())
    await asyncio.sleep(0.5)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(0.5)
    assert (first.leading, second.leading) == (True, False)

    first_task.cancel()  # stops and revokes its lease, as a clean shutdown does
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    for _ in range(50):
        if second.leading:
            break
        await asyncio.sleep(0.1)
    assert second.leading
    second_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second_task


async def test_a_lease_reports_loss_when_etcd_forgets_it(etcd: Etcd) -> None:
    lease = Lease(etcd, ttl=2)
    await lease.start()
    await etcd.revoke(lease.id)
    await asyncio.wait_for(lease.lost.wait(), timeout=5)
    await lease.stop()
