"""results.finish_many: a batch of results in one statement, each row fenced on its own; and
results.finish_and_start, the start marks of runs claimed ahead in that same statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest

from hourglass.domain import FencingToken, Outcome, RetryPolicy, Run, RunState
from hourglass.locks import Etcd
from hourglass.policies import Requeue
from hourglass.store import claims, db, results, runs
from hourglass.store.claims import QueuedRun
from hourglass.store.results import Finish
from hourglass.workers.producer import Producer
from tests.integration.helpers import hold_runs, schedule, seconds


def row(
    held: tuple[QueuedRun, FencingToken],
    state: RunState = RunState.SUCCEEDED,
    *,
    requeue_at: datetime | None = None,
    token: FencingToken | None = None,
    **outcome: Any,
) -> Finish:
    run, held_token = held
    return Finish(
        run_id=run.id,
        attempt=run.attempt,
        token=held_token if token is None else token,
        outcome=Outcome(state=state, **outcome),
        requeue=Requeue(at=requeue_at),
    )


async def finish_many(pool: db.Pool, batch: list[Finish]) -> list[bool]:
    async with db.transaction(pool) as conn:
        return await results.finish_many(conn, batch, now=datetime.now(UTC))


async def get(pool: db.Pool, held: tuple[QueuedRun, FencingToken]) -> Run:
    async with pool.connection() as conn:
        found = await runs.get(conn, held[0].id)
    assert found is not None
    return found


class CountingConnection:
    """A real connection that counts the statements sent through it."""

    def __init__(self, conn: db.Connection) -> None:
        self.conn = conn
        self.statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await self.conn.execute(*args, **kwargs)


async def test_a_mixed_batch_is_fenced_row_by_row(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    retry = RetryPolicy(max_attempts=2, backoff=seconds(1))
    ok, fenced, landed, requeued, last = await hold_runs(pool, database_url, etcd, 5, retry=retry)
    # The run `landed` was written once already, by a try whose answer was lost.
    assert await finish_many(pool, [row(landed, exit_code=0, stdout_tail="once\n")])
    landed_before = await get(pool, landed)
    retry_at = datetime.now(UTC) + timedelta(minutes=5)
    finished_at = datetime.now(UTC) - timedelta(seconds=1)

    accepted = await finish_many(
        pool,
        [
            row(ok, exit_code=0, stdout_tail="out\n", stderr_tail="err\n", finished_at=finished_at),
            row(fenced, token=FencingToken(fenced[1] - 1), exit_code=0),
            row(landed, exit_code=0, stdout_tail="once\n"),
            row(requeued, RunState.FAILED, requeue_at=retry_at, exit_code=3, error="exit 3"),
            row(last, RunState.TIMED_OUT, error="timeout after 1s"),
        ],
    )

    assert accepted == [True, False, True, True, True]
    run = await get(pool, ok)
    assert (run.state, run.attempt, run.finished_at) == (RunState.SUCCEEDED, 1, finished_at)
    (attempt,) = run.attempts
    assert (attempt.state, attempt.exit_code, attempt.stdout_tail, attempt.stderr_tail) == (
        RunState.SUCCEEDED,
        0,
        "out\n",
        "err\n",
    )
    assert attempt.finished_at == finished_at

    run = await get(pool, fenced)
    assert run.state == RunState.RUNNING and run.attempts[0].state == RunState.RUNNING

    assert await get(pool, landed) == landed_before

    run = await get(pool, requeued)
    assert (run.state, run.attempt, run.finished_at) == (RunState.QUEUED, 2, None)
    (attempt,) = run.attempts
    assert (attempt.state, attempt.exit_code, attempt.error) == (RunState.FAILED, 3, "exit 3")
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT available_at FROM runs WHERE id = %s", (run.id,))
        assert await cursor.fetchone() == {"available_at": retry_at}

    run = await get(pool, last)
    assert run.state == RunState.TIMED_OUT and run.attempt == 1 and run.finished_at is not None
    assert run.attempts[0].error == "timeout after 1s"


async def test_a_late_result_of_a_run_the_claimer_took_back_is_refused(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    (held,) = await hold_runs(pool, database_url, etcd, 1)
    async with db.transaction(pool) as conn:
        (taken,) = await results.list_held(conn)
        assert await results.mark_lost(conn, run=taken, now=datetime.now(UTC), reason="gone")
    before = await get(pool, held)
    assert await finish_many(pool, [row(held, exit_code=0)]) == [False]
    assert await get(pool, held) == before
    assert before.state == RunState.FAILED and before.attempts[0].state == RunState.LOST


async def test_statements_per_batch_do_not_grow_with_the_batch(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    retry = RetryPolicy(max_attempts=2, backoff=seconds(1))
    held = await hold_runs(pool, database_url, etcd, 41, retry=retry)
    later = datetime.now(UTC) + timedelta(minutes=1)
    counts = []
    for batch in ([held[0]], held[1:]):
        async with db.transaction(pool) as conn:
            counting = CountingConnection(conn)
            accepted = await results.finish_many(
                cast(db.Connection, counting),
                [row(h, RunState.FAILED, requeue_at=later, exit_code=1) for h in batch],
                now=datetime.now(UTC),
            )
        assert accepted == [True] * len(batch)
        counts.append(counting.statements)
    assert counts == [1, 1]  # one statement, the NOTIFY for the runs that went back included


async def test_only_a_batch_that_requeues_a_run_wakes_the_workers(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    retry = RetryPolicy(max_attempts=2, backoff=seconds(1))
    done, again = await hold_runs(pool, database_url, etcd, 2, retry=retry)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {db.RUNS_CHANNEL}")
        await listener.execute("LISTEN test_marker")

        async def channels_until_marker() -> list[str]:
            async with db.transaction(pool) as conn:
                await db.notify(conn, "test_marker")
            seen = []
            async for note in listener.notifies(timeout=10):
                if note.channel == "test_marker":
                    return seen
                seen.append(note.channel)
            raise AssertionError("the marker notification never came")

        assert await finish_many(pool, [row(done, exit_code=0)]) == [True]
        assert await channels_until_marker() == []
        # A repeat of an accepted write changes nothing, so it wakes nobody either.
        assert await finish_many(pool, [row(done, exit_code=0)]) == [True]
        assert await channels_until_marker() == []
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert await finish_many(pool, [row(again, RunState.FAILED, requeue_at=later)]) == [True]
        assert await channels_until_marker() == [db.RUNS_CHANNEL]


async def test_text_postgresql_refuses_is_stored_with_replacement_marks(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    (held,) = await hold_runs(pool, database_url, etcd, 1)
    accepted = await finish_many(
        pool,
        [
            row(
                held,
                RunState.FAILED,
                exit_code=1,
                stdout_tail="a\x00b",
                stderr_tail="\x00\x00",
                error="cannot open 'f\udcff\x00'",
            )
        ],
    )
    assert accepted == [True]
    (attempt,) = (await get(pool, held)).attempts
    assert (attempt.stdout_tail, attempt.stderr_tail, attempt.error) == (
        "a\ufffdb",
        "\ufffd\ufffd",
        "cannot open 'f\ufffd\ufffd'",
    )


async def test_a_batch_naming_one_attempt_twice_is_refused_whole(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    (held,) = await hold_runs(pool, database_url, etcd, 1)
    with pytest.raises(ValueError, match="same attempt twice"):
        await finish_many(pool, [row(held, exit_code=0), row(held, RunState.FAILED)])
    assert (await get(pool, held)).state == RunState.RUNNING


async def test_start_marks_ride_with_results_in_one_statement_each_fenced(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    (done,) = await hold_runs(pool, database_url, etcd, 1)
    # Two more runs claimed ahead of a free slot (their attempts not started), one of which
    # the claimer has already handed back to the queue (its holder looked gone).
    for _ in range(2):
        await schedule(pool, "true")
    assert await Producer(pool=pool, dsn=database_url).run_once() == 2
    lease = await etcd.grant(30)
    async with db.transaction(pool) as conn:
        ahead = await claims.lock_queued(conn, limit=2, now=datetime.now(UTC))
        tokens = await etcd.hold_runs([r.id for r in ahead], lease_id=lease, holder="w")
        held = [(run, tokens[run.id]) for run in ahead]
        await claims.mark_running(
            conn, held=held, starting=set(), worker_id="w", now=datetime.now(UTC)
        )
    (waiting, waiting_token), (taken, taken_token) = held
    async with db.transaction(pool) as conn:
        handed = await claims.hand_back(
            conn, [(taken.id, taken.attempt, taken_token)], unstarted_only=True
        )
    assert handed == [taken.id]

    async with pool.connection() as conn:
        counting = CountingConnection(conn)
        accepted, started = await results.finish_and_start(
            cast(db.Connection, counting),
            [row(done, exit_code=0)],
            starts=[
                (waiting.id, waiting.attempt, waiting_token),
                (taken.id, taken.attempt, taken_token),
            ],
            now=datetime.now(UTC),
        )
    assert counting.statements == 1
    assert accepted == [True]
    # The handed-back run must not start: its mark is refused by the fence.
    assert started == {waiting.id}
    assert (await get(pool, done)).state == RunState.SUCCEEDED
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT run_id, started FROM attempts WHERE run_id = ANY(%s)",
            ([waiting.id, taken.id],),
        )
        assert {row["run_id"]: row["started"] for row in await cursor.fetchall()} == {
            waiting.id: True
        }
    assert (await get(pool, (taken, taken_token))).state == RunState.QUEUED
