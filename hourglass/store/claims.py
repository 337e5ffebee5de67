"""Claiming runs: the queue's side of the runs and attempts tables. A worker locks queued runs
fairly across namespaces (`lock_queued`), holds them under its lease and token
(`mark_running`), marks a run claimed ahead started just before it starts (`start`), and a
stopping worker or the claimer hands back what never started (`hand_back`). Reads, cancels
and logs are in `runs`; how attempts end is in `results`.

Every write made on behalf of a running attempt names the attempt's fencing token in its WHERE
clause, so a worker that lost its lease (and with it the run) changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hourglass import policies, quota_rules
from hourglass.domain import (
    FencingToken,
    JobId,
    Overlap,
    RetryPolicy,
    RunId,
    Task,
)
from hourglass.store import job_columns, results
from hourglass.store.db import RUNS_CHANNEL, Connection, notify


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run a worker has locked and is about to hold: what it needs to execute it."""

    id: RunId
    job_id: JobId
    namespace: str
    scheduled_at: datetime
    # When it became claimable: its fire time, plus jitter or a retry's backoff.
    available_at: datetime
    attempt: int
    task: Task
    timeout: timedelta | None
    retry: RetryPolicy


# Claiming is fair across namespaces, in two statements. The first finds the namespaces with
# runs available now: a skip scan of runs_queued (on (namespace, available_at) of queued runs),
# with each namespace's running runs counted from runs_running (on (namespace, id)). Then
# policies.claim_shares picks the namespaces and how many runs each may offer. The second
# statement takes each chosen namespace's oldest available runs (an index scan per namespace,
# under a constant LIMIT the planner can see) and ranks them so that the namespace running the
# fewest runs gets the next slot (its k-th offer ranks as running + k), and none offers more
# than its share, which its quota max_running_runs bounds. One namespace's backlog
# therefore cannot delay another's runs, and a claim locks about `limit` rows however many
# namespaces wait. buffer_one and replace runs whose job already runs are passed over here (a
# prefilter; exclusivity itself is decided under a per-job lock, in lock_queued).
_WAITING = """
WITH RECURSIVE spaces AS (
    (SELECT namespace FROM runs WHERE state = 'queued' ORDER BY namespace LIMIT 1)
  UNION ALL
    SELECT (SELECT r.namespace FROM runs r
            WHERE r.state = 'queued' AND r.namespace > s.namespace
            ORDER BY r.namespace LIMIT 1)
    FROM spaces s WHERE s.namespace IS NOT NULL
)
SELECT s.namespace, head.available_at AS oldest,
       (SELECT count(*) FROM runs r
        WHERE r.state = 'running' AND r.namespace = s.namespace) AS running,
       coalesce(q.max_running_runs, %(max_running)s) AS max_running
FROM spaces s CROSS JOIN LATERAL (
    SELECT r.available_at FROM runs r
    WHERE r.state = 'queued' AND r.namespace = s.namespace AND r.available_at <= %(now)s
    ORDER BY r.available_at LIMIT 1) AS head
LEFT JOIN namespace_quotas q ON q.namespace = s.namespace
WHERE s.namespace IS NOT NULL
"""

_CLAIM = """
WITH offers AS (
    SELECT c.*, l.running, l.share,
           row_number() OVER (PARTITION BY c.namespace ORDER BY c.available_at) AS nth
    FROM unnest(%(namespaces)s::text[], %(running)s::bigint[], %(shares)s::bigint[])
         AS l(namespace, running, share)
    CROSS JOIN LATERAL (
        SELECT r.id, r.job_id, r.namespace, r.scheduled_at, r.available_at, r.attempt,
               j.command, j.args, j.env, j.image, j.working_dir, j.binary_digest, j.resources,
               j.secret_env, j.kubernetes, j.timeout, j.max_attempts, j.retry_backoff, j.overlap
        FROM runs r JOIN jobs j ON j.id = r.job_id
        WHERE r.state = 'queued' AND r.namespace = l.namespace AND r.available_at <= %(now)s
          AND (j.overlap IN ('allow', 'skip')
               OR NOT EXISTS (SELECT 1 FROM runs other
                              WHERE other.job_id = r.job_id AND other.state = 'running'))
        ORDER BY r.available_at
        LIMIT %(share)s
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
)
SELECT * FROM offers WHERE nth <= share ORDER BY running + nth, available_at LIMIT %(limit)s
"""

# The class id of the per-job advisory locks of exclusive claims.
_JOB_LOCK = 0x4A42
# The class id of the per-namespace advisory locks of claims for a namespace with a
# max_running_runs of its own (the other key is hashtext(namespace)).
_CAPPED_LOCK = 0x4E43


async def lock_queued(conn: Connection, *, limit: int, now: datetime) -> list[QueuedRun]:
    """Locks up to `limit` runs that are queued and available, fairly across namespaces
    (the namespace running the fewest runs first, each namespace's oldest run first),
    skipping rows other workers hold locked.
    Must run in a transaction that `mark_running` then completes.

    buffer_one and replace allow one running run per job. Two workers claiming two queued
    runs of one such job at once cannot see each other's uncommitted claim, so each takes a
    transaction-scoped advisory lock on the job (pg_try_advisory_xact_lock: a worker that
    cannot get it leaves the run for later) and only then looks for a running run of the job,
    in a new statement whose snapshot sees every claim committed before the lock was free.
    """
    cursor = await conn.execute(
        _WAITING, {"now": now, "max_running": quota_rules.DEFAULT_MAX_RUNNING_RUNS}
    )
    waiting = [
        policies.Waiting(row["namespace"], row["running"], row["oldest"], row["max_running"])
        for row in await cursor.fetchall()
    ]
    capped = policies.capped(waiting)
    if capped:
        waiting = await _recount_capped(conn, waiting, capped)
    shares = policies.claim_shares(waiting, limit=limit)
    if not shares:
        return []
    cursor = await conn.execute(
        _CLAIM,
        {
            "namespaces": [share.namespace for share in shares],
            "running": [share.running for share in shares],
            "shares": [share.share for share in shares],
            # One constant LIMIT the planner can see; `shares` trims each namespace's offers.
            "share": max(share.share for share in shares),
            "now": now,
            "limit": limit,
        },
    )
    rows = {row["id"]: row for row in await cursor.fetchall()}
    candidates = [
        policies.Candidate(
            RunId(row["id"]), JobId(row["job_id"]), policies.exclusive(Overlap(row["overlap"]))
        )
        for row in rows.values()
    ]
    locked: set[JobId] = set()
    running: set[JobId] = set()
    contested = policies.jobs_to_lock(candidates)
    if contested:
        cursor = await conn.execute(
            "SELECT id FROM unnest(%s::uuid[]) AS id"
            " WHERE pg_try_advisory_xact_lock(%s, hashtext(id::text))",
            (contested, _JOB_LOCK),
        )
        locked = {JobId(row["id"]) for row in await cursor.fetchall()}
        if locked:
            cursor = await conn.execute(
                "SELECT DISTINCT job_id FROM runs WHERE job_id = ANY(%s) AND state = 'running'",
                (list(locked),),
            )
            running = {JobId(row["job_id"]) for row in await cursor.fetchall()}
    return [
        _queued_run(rows[run_id])
        for run_id in policies.claimable(candidates, locked=locked, running=running)
    ]


async def _recount_capped(
    conn: Connection, waiting: list[policies.Waiting], capped: list[str]
) -> list[policies.Waiting]:
    """Makes max_running_runs exact across workers: two workers counting a namespace's running
    runs at once would each fill the same room. A claim takes a namespace with a cap only
    under a transaction-scoped advisory lock on it (one that cannot get it passes the
    namespace over this time), and recounts its running runs in a new statement, whose
    snapshot sees every claim committed before the lock was free."""
    cursor = await conn.execute(
        "SELECT ns FROM unnest(%s::text[]) AS ns WHERE pg_try_advisory_xact_lock(%s, hashtext(ns))",
        (capped, _CAPPED_LOCK),
    )
    locked = [row["ns"] for row in await cursor.fetchall()]
    counts: dict[str, int] = {}
    if locked:
        cursor = await conn.execute(
            "SELECT l.ns, (SELECT count(*) FROM runs r"
            "              WHERE r.state = 'running' AND r.namespace = l.ns) AS running"
            " FROM unnest(%s::text[]) AS l(ns)",
            (locked,),
        )
        counts = {row["ns"]: int(row["running"]) for row in await cursor.fetchall()}
    return policies.recounted(waiting, capped=capped, running=counts)


def _queued_run(row: dict[str, Any]) -> QueuedRun:
    return QueuedRun(
        id=RunId(row["id"]),
        job_id=JobId(row["job_id"]),
        namespace=row["namespace"],
        scheduled_at=row["scheduled_at"],
        available_at=row["available_at"],
        attempt=row["attempt"],
        task=job_columns.task(row),
        timeout=row["timeout"],
        retry=job_columns.retry(row),
    )


async def mark_running(
    conn: Connection,
    *,
    held: list[tuple[QueuedRun, FencingToken]],
    starting: Collection[RunId],
    worker_id: str,
    now: datetime,
) -> None:
    """Moves locked runs to running under their fencing tokens and opens their attempts.

    The attempts of the runs in `starting` (those about to take a free slot) are opened as
    started; the others were claimed ahead and wait for a slot, so their attempts are opened
    not started (`start` marks them when they get one). A run whose holder goes away before
    its attempt started is handed back, not lost (`hand_back`)."""
    if not held:
        return
    params = {
        "ids": [run.id for run, _ in held],
        "attempts": [run.attempt for run, _ in held],
        "tokens": [token for _, token in held],
        "started": [run.id in starting for run, _ in held],
        "worker": worker_id,
        "now": now,
    }
    # One statement (one round trip) for both tables.
    await conn.execute(
        """
        WITH v AS (
            SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(tokens)s::bigint[],
                                 %(started)s::boolean[])
                AS v(id, attempt, token, started)
        ),
        run AS (
            UPDATE runs SET state = 'running', fencing_token = v.token
            FROM v WHERE runs.id = v.id
        )
        INSERT INTO attempts (run_id, number, state, worker_id, fencing_token, started_at,
                              started)
        SELECT v.id, v.attempt, 'running', %(worker)s, v.token, %(now)s, v.started FROM v
        """,
        params,
    )


async def start(
    conn: Connection, held: Sequence[tuple[RunId, int, FencingToken]], *, now: datetime
) -> set[RunId]:
    """Marks attempts that were claimed ahead as started, just before their commands start;
    returns the runs marked. A run left out must not start: it no longer runs under its
    token (a claimer that found its holder gone handed it back). The attempts row is the
    one both writes name, so they are ordered by its lock: whichever commits first wins,
    and the other finds the row changed. One statement, fenced per row; repeating it after
    a lost reply is harmless. (A worker sends its marks with its results, in the same
    statement: `results.finish_and_start`.)"""
    _, started = await results.finish_and_start(conn, (), starts=held, now=now)
    return started


async def hand_back(
    conn: Connection,
    held: Sequence[tuple[RunId, int, FencingToken]],
    *,
    unstarted_only: bool,
) -> list[RunId]:
    """Puts runs that were claimed but never started back in the queue, as if never claimed:
    the run queued again with the same attempt number, the attempt row that was opened for
    it removed (it never ran). Fenced per row like any holder's write; returns the runs
    handed back. One statement; one NOTIFY so that other workers look at once.

    The worker that holds them knows which of its runs never started (`unstarted_only`
    False: a run that got no slot). The claimer, taking back runs whose holder is gone,
    knows only what is stored: `unstarted_only` hands back just the attempts not marked
    started, and a start that commits first keeps its attempt (then lost, not handed back)."""
    if not held:
        return []
    cursor = await conn.execute(
        """
        WITH v AS (
            SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(tokens)s::bigint[])
                AS v(id, attempt, token)
        ),
        gone AS (
            DELETE FROM attempts a USING v
            WHERE a.run_id = v.id AND a.number = v.attempt AND a.fencing_token = v.token
              AND a.state = 'running' AND NOT (%(unstarted_only)s AND a.started)
            RETURNING a.run_id, a.fencing_token
        )
        UPDATE runs r SET state = 'queued', fencing_token = NULL
        FROM gone
        WHERE r.id = gone.run_id AND r.fencing_token = gone.fencing_token AND r.state = 'running'
        RETURNING r.id
        """,
        {
            "ids": [run_id for run_id, _, _ in held],
            "attempts": [attempt for _, attempt, _ in held],
            "tokens": [token for _, _, token in held],
            "unstarted_only": unstarted_only,
        },
    )
    handed = [RunId(row["id"]) for row in await cursor.fetchall()]
    if handed:
        await notify(conn, RUNS_CHANNEL)
    return handed


async def next_available_at(conn: Connection) -> datetime | None:
    """When the earliest queued run becomes claimable (a retry waiting out its backoff)."""
    # runs_queued is ordered by namespace first: the earliest of each namespace's earliest.
    cursor = await conn.execute(
        """
        WITH RECURSIVE spaces AS (
            (SELECT namespace FROM runs WHERE state = 'queued' ORDER BY namespace LIMIT 1)
          UNION ALL
            SELECT (SELECT r.namespace FROM runs r
                    WHERE r.state = 'queued' AND r.namespace > s.namespace
                    ORDER BY r.namespace LIMIT 1)
            FROM spaces s WHERE s.namespace IS NOT NULL
        )
        SELECT min(first.available_at) AS available_at
        FROM spaces s CROSS JOIN LATERAL (
            SELECT r.available_at FROM runs r
            WHERE r.state = 'queued' AND r.namespace = s.namespace
            ORDER BY r.available_at LIMIT 1) AS first
        """
    )
    row = await cursor.fetchone()
    return row["available_at"] if row else None
