"""The finisher survives any single bad result; if it dies anyway, its worker ends loudly."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from hourglass.clock import SystemClock
from hourglass.domain import FencingToken, Outcome, RetryPolicy, RunState
from hourglass.locks import Etcd
from hourglass.policies import Requeue
from hourglass.store import db, runs
from hourglass.store.claims import QueuedRun
from hourglass.workers.claimer import Claimer
from hourglass.workers.executors.local import LocalExecutor
from hourglass.workers.finisher import Finisher, FinisherCrashed, Result
from hourglass.workers.logs import STDERR, STDOUT
from hourglass.workers.producer import Producer
from hourglass.workers.worker import Worker
from hourglass.workers.worker_config import WorkerConfig
from tests.integration.helpers import (
    finished_run,
    hold_runs,
    job_runs,
    running_service,
    schedule,
    seconds,
)

# An exit code no integer column holds: a stand-in for any value the database refuses even
# after the store has made the text storable.
UNSTORABLE_EXIT = 2**31


async def test_a_job_printing_nul_bytes_succeeds_and_its_worker_finishes_later_runs(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(pool, "sh", "-c", r"printf 'a\000b'; printf 'c\000d' >&2")
    async with running_service(pool, database_url, etcd) as worker:
        run = await finished_run(pool, job_id)
        later = await schedule(pool, "echo", "later")
        after = await finished_run(pool, later)
        assert worker.finisher.crashed is None
    assert run.state == RunState.SUCCEEDED
    (attempt,) = run.attempts
    assert (attempt.exit_code, attempt.stdout_tail, attempt.stderr_tail) == (
        0,
        "a\ufffdb",
        "c\ufffdd",
    )
    # The full output keeps the bytes the job wrote.
    async with pool.connection() as conn:
        logs = await runs.read_logs(conn, run.id)
    assert b"".join(data for _, _, stream, data in logs if stream == STDOUT) == b"a\x00b"
    assert b"".join(data for _, _, stream, data in logs if stream == STDERR) == b"c\x00d"
    assert after.state == RunState.SUCCEEDED
    assert after.attempts[0].stdout_tail == "later\n"


def result(
    held: tuple[QueuedRun, FencingToken],
    state: RunState = RunState.SUCCEEDED,
    *,
    exit_code: int = 0,
    requeue_at: datetime | None = None,
) -> Result:
    run, token = held
    return Result(
        run=run,
        token=token,
        outcome=Outcome(state=state, exit_code=exit_code, stdout_tail="out\x00\n"),
        requeue=Requeue(at=requeue_at),
        fields={},
    )


async def test_a_result_the_database_refuses_does_not_stop_the_results_after_it(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    retry = RetryPolicy(max_attempts=2, backoff=seconds(0))
    first, refused, refused_retry, last, later = await hold_runs(
        pool, database_url, etcd, 5, retry=retry
    )
    finisher = Finisher(pool=pool, etcd=etcd, clock=SystemClock())
    # Submitted before the finisher starts, so the four are written as one batch.
    finisher.submit(result(first))
    finisher.submit(result(refused, exit_code=UNSTORABLE_EXIT))
    finisher.submit(
        result(
            refused_retry,
            RunState.FAILED,
            exit_code=UNSTORABLE_EXIT,
            requeue_at=datetime.now(UTC),
        )
    )
    finisher.submit(result(last))
    finisher.start()
    try:
        await asyncio.wait_for(finisher.flush(), 30)
        finisher.submit(result(later))
        await asyncio.wait_for(finisher.flush(), 30)
        assert finisher.crashed is None
        assert finisher.unstorable == 2
    finally:
        await finisher.stop()

    async with pool.connection() as conn:
        found = {held[0].id: await runs.get(conn, held[0].id) for held in (first, last, later)}
        refused_run = await runs.get(conn, refused[0].id)
        retried_run = await runs.get(conn, refused_retry[0].id)
    for run in found.values():
        assert run is not None and run.state == RunState.SUCCEEDED
        assert run.attempts[0].stdout_tail == "out\ufffd\n"
    # The refused success is recorded as a failed attempt that says why, and ends the run.
    assert refused_run is not None and refused_run.state == RunState.FAILED
    (attempt,) = refused_run.attempts
    assert attempt.state == RunState.FAILED and attempt.exit_code is None
    assert f"(succeeded, exit code {UNSTORABLE_EXIT}) could not be stored" in attempt.error
    assert "out of range" in attempt.error
    # A refused failure with attempts left is retried as it would have been.
    assert retried_run is not None
    assert (retried_run.state, retried_run.attempt) == (RunState.QUEUED, 2)
    assert retried_run.attempts[0].state == RunState.FAILED
    assert "could not be stored" in retried_run.attempts[0].error
    # Every run's key is released, refused ones included: nothing stays held.
    assert await etcd.held_runs() == {}


async def test_a_worker_that_can_write_no_result_ends_and_its_runs_are_taken_back(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(
        pool, "sleep", "0.2", retry=RetryPolicy(max_attempts=2, backoff=seconds(0))
    )
    # The database now refuses every outcome a worker writes, however it is put: not a fault
    # of one result, so nothing the finisher can route around.
    async with db.transaction(pool) as conn:
        await conn.execute(
            "ALTER TABLE attempts ADD CONSTRAINT refuse_results"
            " CHECK (state IN ('running', 'lost')) NOT VALID"
        )
    worker = Worker(
        pool=pool,
        dsn=database_url,
        etcd=etcd,
        executor=LocalExecutor(),
        config=WorkerConfig(lease_ttl=30, max_idle=0.2, shutdown_grace=1),
    )
    assert await Producer(pool=pool, dsn=database_url).run_once() == 1
    task = asyncio.create_task(worker.run())
    try:
        with pytest.raises(FinisherCrashed, match="CheckViolation"):
            await asyncio.wait_for(asyncio.shield(task), 30)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    # Its lease was revoked on the way out (a 30 s TTL has not run out): the run's key is
    # gone, so the claimer takes the run back at once.
    assert await etcd.held_runs() == {}
    assert await Claimer(pool=pool, etcd=etcd).run_once() == 1
    (run,) = await job_runs(pool, job_id)
    assert (run.state, run.attempt) == (RunState.QUEUED, 2)
    assert [a.state for a in run.attempts] == [RunState.LOST]
