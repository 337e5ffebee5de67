"""The runs and attempts tables: history, cancels and output. Claiming runs (the queue's side)
is in `claims`; how attempts end (the fenced results of workers and the claimer) in `results`.

A run is one fire of a job; an attempt is one execution of a run. Every write made on behalf of
a running attempt names the attempt's fencing token in its WHERE clause, so a worker that lost
its lease (and with it the run) changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from hourglass.domain import (
    Attempt,
    FencingToken,
    JobId,
    Run,
    RunId,
    RunState,
)
from hourglass.store.db import Connection

CANCEL_CHANNEL = "hourglass_cancel"
LOGS_CHANNEL = "hourglass_logs"


def _attempt(row: dict[str, Any]) -> Attempt:
    return Attempt(
        number=row["number"],
        state=RunState(row["state"]),
        worker_id=row["worker_id"],
        fencing_token=FencingToken(row["fencing_token"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        stdout_tail=row["stdout_tail"],
        stderr_tail=row["stderr_tail"],
        error=row["error"],
    )


async def list_for_job(
    conn: Connection,
    job_id: JobId,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    ids: tuple[uuid.UUID, uuid.UUID] | None = None,
) -> list[Run]:
    """A job's runs with all their attempts, newest fire first; `before` is the
    (scheduled_at, id) of the last run of the previous page; `ids` keeps the runs whose id
    lies in the range (lowest, highest) that an id prefix spans."""
    cursor = await conn.execute(
        """
        SELECT * FROM runs
        WHERE job_id = %(job)s
          AND (%(before_at)s::timestamptz IS NULL
               OR (scheduled_at, id) < (%(before_at)s, %(before_id)s))
          AND (%(low)s::uuid IS NULL OR id BETWEEN %(low)s AND %(high)s)
        ORDER BY scheduled_at DESC, id DESC
        LIMIT %(limit)s
        """,
        {
            "job": job_id,
            "limit": limit,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None,
            "low": ids[0] if ids else None,
            "high": ids[1] if ids else None,
        },
    )
    return await with_attempts(conn, await cursor.fetchall())


async def attempts_of(conn: Connection, run_ids: list[RunId]) -> dict[RunId, tuple[Attempt, ...]]:
    """The attempts of these runs as stored now, each run's in order of number."""
    if not run_ids:
        return {}
    cursor = await conn.execute(
        "SELECT * FROM attempts WHERE run_id = ANY(%s) ORDER BY run_id, number", (run_ids,)
    )
    attempts: dict[RunId, list[Attempt]] = {}
    for row in await cursor.fetchall():
        attempts.setdefault(RunId(row["run_id"]), []).append(_attempt(row))
    return {run_id: tuple(found) for run_id, found in attempts.items()}


async def with_attempts(conn: Connection, rows: list[dict[str, Any]]) -> list[Run]:
    """Runs from their rows, each with its attempts (one more statement for all of them)."""
    if not rows:
        return []
    attempts = await attempts_of(conn, [RunId(row["id"]) for row in rows])
    return [
        Run(
            id=RunId(row["id"]),
            job_id=JobId(row["job_id"]),
            scheduled_at=row["scheduled_at"],
            state=RunState(row["state"]),
            attempt=row["attempt"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            attempts=attempts.get(RunId(row["id"]), ()),
            trigger=row["trigger"],
            reason=row["reason"],
        )
        for row in rows
    ]


async def get(conn: Connection, run_id: RunId) -> Run | None:
    cursor = await conn.execute("SELECT * FROM runs WHERE id = %s", (run_id,))
    found = await with_attempts(conn, await cursor.fetchall())
    return found[0] if found else None


async def request_cancel(
    conn: Connection, run_ids: list[RunId], *, reason: str, now: datetime
) -> list[RunId]:
    """Cancels runs: a queued one at once; a running one by flagging it and notifying its
    worker, which terminates the process and records the run as cancelled (fenced). Returns
    the ids of the runs that were running."""
    if not run_ids:
        return []
    await conn.execute(
        "UPDATE runs SET state = 'cancelled', finished_at = %s, reason = %s"
        " WHERE id = ANY(%s) AND state = 'queued'",
        (now, reason, run_ids),
    )
    cursor = await conn.execute(
        "UPDATE runs SET cancel_requested = true, reason = %s"
        " WHERE id = ANY(%s) AND state = 'running' RETURNING id",
        (reason, run_ids),
    )
    running = [RunId(row["id"]) for row in await cursor.fetchall()]
    for chunk in range(0, len(running), 200):
        payload = ",".join(str(run_id) for run_id in running[chunk : chunk + 200])
        await conn.execute("SELECT pg_notify(%s, %s)", (CANCEL_CHANNEL, payload))
    return running


async def cancel_requested(conn: Connection, run_ids: list[RunId]) -> list[RunId]:
    """Of these runs, the ones someone asked to cancel (the worker's fallback to NOTIFY)."""
    if not run_ids:
        return []
    cursor = await conn.execute(
        "SELECT id FROM runs WHERE id = ANY(%s) AND cancel_requested AND state = 'running'",
        (run_ids,),
    )
    return [RunId(row["id"]) for row in await cursor.fetchall()]


async def append_logs(
    conn: Connection,
    *,
    run_id: RunId,
    attempt: int,
    token: FencingToken,
    chunks: list[tuple[int, bytes]],
) -> bool:
    """Appends (stream, data) chunks of an attempt's output, fenced like every other write of
    the attempt. Streams: 1 stdout, 2 stderr."""
    if not chunks:
        return True
    cursor = await conn.execute(
        """
        INSERT INTO run_logs (run_id, attempt, stream, data)
        SELECT %(run_id)s, %(attempt)s, c.stream, c.data
        FROM unnest(%(streams)s::smallint[], %(data)s::bytea[]) WITH ORDINALITY
             AS c(stream, data, position)
        WHERE EXISTS (SELECT 1 FROM attempts
                      WHERE run_id = %(run_id)s AND number = %(attempt)s
                        AND fencing_token = %(token)s AND state = 'running')
        ORDER BY c.position
        """,
        {
            "run_id": run_id,
            "attempt": attempt,
            "token": token,
            "streams": [stream for stream, _ in chunks],
            "data": [data for _, data in chunks],
        },
    )
    if cursor.rowcount:
        await conn.execute("SELECT pg_notify(%s, %s)", (LOGS_CHANNEL, str(run_id)))
    return cursor.rowcount > 0


async def read_logs(
    conn: Connection, run_id: RunId, *, after_seq: int = 0, limit: int = 500
) -> list[tuple[int, int, int, bytes]]:
    """(seq, attempt, stream, data) of a run's output after `after_seq`, in order."""
    cursor = await conn.execute(
        "SELECT seq, attempt, stream, data FROM run_logs"
        " WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (run_id, after_seq, limit),
    )
    return [
        (row["seq"], row["attempt"], row["stream"], bytes(row["data"]))
        for row in await cursor.fetchall()
    ]


async def prune_finished(conn: Connection, *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` terminal runs (with their attempts and logs) that finished
    before `before`. Returns how many it deleted."""
    cursor = await conn.execute(
        """
        DELETE FROM runs WHERE id IN (
            SELECT id FROM runs
            WHERE finished_at < %s AND state NOT IN ('queued', 'running')
            ORDER BY finished_at LIMIT %s)
        """,
        (before, limit),
    )
    return cursor.rowcount


async def count_active(conn: Connection, *, now: datetime) -> tuple[int, int]:
    """(runs queued and ready to start now, runs running)."""
    cursor = await conn.execute(
        "SELECT count(*) FILTER (WHERE state = 'queued' AND available_at <= %s) AS ready,"
        " count(*) FILTER (WHERE state = 'running') AS running"
        " FROM runs WHERE state IN ('queued', 'running')",
        (now,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["ready"]), int(row["running"])
