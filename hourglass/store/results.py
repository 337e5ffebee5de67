"""How attempts end: the fenced writes of the runs and attempts tables.

A worker's finisher reports a batch of outcomes (`finish_many`, one statement per batch, each
row fenced by its own token, like River's JobSetStateIfRunningMany); the claimer reads which
runs should be held (`list_held`) and marks those whose holder is gone (`mark_lost`). Every
write names the attempt's fencing token in its WHERE clause, so a worker that lost its lease
(and with it the run) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hourglass.domain import FencingToken, Outcome, RetryPolicy, RunId, RunState
from hourglass.policies import Requeue
from hourglass.store import job_columns
from hourglass.store.db import RUNS_CHANNEL, Connection, notify
from hourglass.text import storable

# Outcomes worth another attempt. A cancelled run stays cancelled.
RETRIED = (RunState.FAILED, RunState.TIMED_OUT)


def requeues(outcome: Outcome, requeue: Requeue) -> bool:
    """Whether this result sends its run back to the queue for another attempt."""
    return outcome.state in RETRIED and requeue.at is not None


@dataclass(frozen=True, slots=True)
class HeldRun:
    """A running run as the claimer sees it: who should hold it, with which token."""

    id: RunId
    attempt: int
    fencing_token: FencingToken
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class Finish:
    """How one attempt ended, as its holder reports it: the row `finish_many` writes."""

    run_id: RunId
    attempt: int
    token: FencingToken
    outcome: Outcome
    requeue: Requeue


async def finish(
    conn: Connection,
    *,
    run_id: RunId,
    attempt: int,
    token: FencingToken,
    outcome: Outcome,
    requeue: Requeue,
    now: datetime,
) -> bool:
    """Records how an attempt ended and moves the run on: `finish_many` for one attempt."""
    (accepted,) = await finish_many(
        conn,
        [Finish(run_id=run_id, attempt=attempt, token=token, outcome=outcome, requeue=requeue)],
        now=now,
    )
    return accepted


async def finish_many(conn: Connection, batch: Sequence[Finish], *, now: datetime) -> list[bool]:
    """`finish_and_start` with nothing to start."""
    accepted, _ = await finish_and_start(conn, batch, starts=(), now=now)
    return accepted


async def finish_and_start(
    conn: Connection,
    batch: Sequence[Finish],
    *,
    starts: Sequence[tuple[RunId, int, FencingToken]],
    now: datetime,
) -> tuple[list[bool], set[RunId]]:
    """Records how attempts ended and moves their runs on: each to its outcome's state, or back
    to queued (attempt + 1, available at `requeue.at`) for a failure that has attempts left.
    Returns, in the order of `batch`, whether each row was accepted; and which of `starts`
    were marked started.

    `starts` are attempts claimed ahead that have just got a slot, marked started in the same
    statement (as `claims.start` would, fenced the same way): in a drain, the slot a result
    frees is taken by a run claimed ahead at once, so the two writes travel together and
    cost one statement, one round trip and one commit.

    One statement for the whole batch (River's JobSetStateIfRunningMany), its NOTIFY
    included (one when a run went back to the queue, however many rows): the worker's
    finisher writes whatever results accumulated at once, outside a transaction, so the
    statement is its only round trip. Each row is fenced on its own: it changes nothing, and
    is refused (False), unless its attempt is still running under its token.

    A retry of a write whose commit landed but whose reply was lost (the server went away)
    finds the fence closed by its own first write: that is not a refusal. Only the holder
    writes its attempt's outcome (the claimer writes only "lost"), so an attempt already
    holding this outcome under this token means the write landed, and the row is accepted.
    The statement sees the table as it was before it ran, so a row it updates itself does not
    look landed, and a landed row is found in that same snapshot.

    Text from the attempt (output tails, error) is made storable on the way in: a NUL byte a
    job printed must not fail the write of its result, nor of the rest of the batch.
    """
    if not batch and not starts:
        return [], set()
    if len({(row.run_id, row.attempt) for row in batch}) < len(batch):
        # UPDATE ... FROM would apply one of two rows for the same attempt, unpredictably.
        raise ValueError("a batch names the same attempt twice")
    requeued = [requeues(row.outcome, row.requeue) for row in batch]
    cursor = await conn.execute(
        """
        WITH batch AS (
            SELECT * FROM unnest(
                %(run_ids)s::uuid[], %(attempts)s::int[], %(tokens)s::bigint[],
                %(states)s::text[], %(finished_at)s::timestamptz[], %(exit_codes)s::int[],
                %(stdout)s::text[], %(stderr)s::text[], %(errors)s::text[],
                %(run_states)s::text[], %(next_attempts)s::int[],
                %(available_at)s::timestamptz[], %(run_finished_at)s::timestamptz[]
            ) WITH ORDINALITY AS b(run_id, attempt, token, state, finished_at, exit_code,
                                   stdout, stderr, error, run_state, next_attempt,
                                   available_at, run_finished_at, position)
        ),
        attempt AS (
            UPDATE attempts a
            SET state = b.state, finished_at = b.finished_at, exit_code = b.exit_code,
                stdout_tail = b.stdout, stderr_tail = b.stderr, error = b.error
            FROM batch b
            WHERE a.run_id = b.run_id AND a.number = b.attempt AND a.fencing_token = b.token
              AND a.state = 'running'
            RETURNING b.position
        ),
        run AS (
            UPDATE runs r
            SET state = b.run_state,
                attempt = b.next_attempt,
                available_at = coalesce(b.available_at, r.available_at),
                fencing_token = NULL,
                finished_at = b.run_finished_at
            FROM batch b JOIN attempt USING (position)
            WHERE r.id = b.run_id AND r.fencing_token = b.token AND r.state = 'running'
            RETURNING b.position
        ),
        started AS (
            UPDATE attempts a SET started = true, started_at = %(now)s
            FROM unnest(%(start_ids)s::uuid[], %(start_attempts)s::int[],
                        %(start_tokens)s::bigint[]) AS s(id, attempt, token)
            WHERE a.run_id = s.id AND a.number = s.attempt AND a.fencing_token = s.token
              AND a.state = 'running'
            RETURNING a.run_id
        )
        SELECT b.position,
               b.position IN (SELECT position FROM attempt)
               OR EXISTS (SELECT 1 FROM attempts a
                          WHERE a.run_id = b.run_id AND a.number = b.attempt
                            AND a.fencing_token = b.token AND a.state = b.state) AS accepted,
               -- Evaluated once: wakes the workers when a run went back to the queue.
               (SELECT count(*) FROM (
                    SELECT pg_notify(%(channel)s, '') FROM run JOIN batch q USING (position)
                    WHERE q.run_state = 'queued' LIMIT 1) AS requeued) AS woken,
               NULL::uuid AS started
        FROM batch b
        UNION ALL
        SELECT NULL, NULL, NULL, run_id FROM started
        ORDER BY 1
        """,
        {
            "channel": RUNS_CHANNEL,
            "start_ids": [run_id for run_id, _, _ in starts],
            "start_attempts": [attempt for _, attempt, _ in starts],
            "start_tokens": [token for _, _, token in starts],
            "now": now,
            "run_ids": [row.run_id for row in batch],
            "attempts": [row.attempt for row in batch],
            "tokens": [row.token for row in batch],
            "states": [row.outcome.state.value for row in batch],
            "finished_at": [row.outcome.finished_at or now for row in batch],
            "exit_codes": [row.outcome.exit_code for row in batch],
            "stdout": [storable(row.outcome.stdout_tail) for row in batch],
            "stderr": [storable(row.outcome.stderr_tail) for row in batch],
            "errors": [storable(row.outcome.error) for row in batch],
            "run_states": [
                RunState.QUEUED.value if again else row.outcome.state.value
                for row, again in zip(batch, requeued, strict=True)
            ],
            "next_attempts": [
                row.attempt + 1 if again else row.attempt
                for row, again in zip(batch, requeued, strict=True)
            ],
            "available_at": [
                row.requeue.at if again else None
                for row, again in zip(batch, requeued, strict=True)
            ],
            "run_finished_at": [
                None if again else row.outcome.finished_at or now
                for row, again in zip(batch, requeued, strict=True)
            ],
        },
    )
    rows = await cursor.fetchall()
    return (
        [bool(row["accepted"]) for row in rows if row["position"] is not None],
        {RunId(row["started"]) for row in rows if row["position"] is None},
    )


async def list_held(conn: Connection) -> list[HeldRun]:
    """Every running run with the token of the attempt that should hold it."""
    cursor = await conn.execute(
        """
        SELECT r.id, r.attempt, r.fencing_token, j.max_attempts, j.retry_backoff
        FROM runs r JOIN jobs j ON j.id = r.job_id
        WHERE r.state = 'running'
        """
    )
    return [
        HeldRun(
            id=RunId(row["id"]),
            attempt=row["attempt"],
            fencing_token=FencingToken(row["fencing_token"]),
            retry=job_columns.retry(row),
        )
        for row in await cursor.fetchall()
    ]


async def mark_lost(conn: Connection, *, run: HeldRun, now: datetime, reason: str) -> bool:
    """Records that the holder of a run is gone: the attempt becomes lost and the run is
    requeued (attempt + 1, after a backoff) or failed when its attempts are spent.

    Fenced like a worker's write: a no-op unless the run is still running under the token the
    caller saw, so a worker that finished in the meantime keeps its result.
    """
    requeue = Requeue.decide(run.retry, attempt=run.attempt, now=now)
    outcome = Outcome(state=RunState.LOST, error=reason, finished_at=now)
    # A lost attempt on the last allowed try fails the run: the work may or may not have
    # happened, and nobody is left to say which.
    outcome_for_run = RunState.FAILED if requeue.at is None else RunState.QUEUED
    cursor = await conn.execute(
        """
        WITH attempt AS (
            UPDATE attempts SET state = 'lost', finished_at = %(now)s, error = %(error)s
            WHERE run_id = %(run_id)s AND number = %(attempt)s AND fencing_token = %(token)s
              AND state = 'running'
            RETURNING run_id
        )
        UPDATE runs
        SET state = %(run_state)s,
            attempt = CASE WHEN %(run_state)s = 'queued' THEN attempt + 1 ELSE attempt END,
            available_at = coalesce(%(available_at)s, available_at),
            fencing_token = NULL,
            finished_at = CASE WHEN %(run_state)s = 'queued' THEN NULL ELSE %(now)s END
        WHERE id = (SELECT run_id FROM attempt) AND fencing_token = %(token)s
          AND state = 'running'
        RETURNING id
        """,
        {
            "run_id": run.id,
            "attempt": run.attempt,
            "token": run.fencing_token,
            "error": outcome.error,
            "run_state": outcome_for_run.value,
            "available_at": requeue.at,
            "now": now,
        },
    )
    accepted = await cursor.fetchone() is not None
    if accepted and requeue.at is not None:
        await notify(conn, RUNS_CHANNEL)
    return accepted
