"""ListRuns' queries: a page of runs, newest fire first, narrowed by job, id prefix and a
window of fire times, read in full (with attempts) or as summaries (one row per run, no
attempts' rows).

Each filter adds its own clause, so every combination is its own statement with its own plan:
a job's runs walk the (job_id, scheduled_at) key, a namespace's window walks
runs_namespace_fired, an id prefix walks the primary key. A clause that is written
`param IS NULL OR ...` instead would leave a generic plan none of those indexes fit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row

from hourglass.domain import JobId, Run, RunState, RunSummary
from hourglass.store import runs
from hourglass.store.db import Connection


@dataclass(frozen=True, slots=True)
class Window:
    """Which of a namespace's runs a page may hold; None leaves a filter out."""

    namespace: str
    job_id: JobId | None = None
    # The range (lowest, highest) of ids that an id prefix spans.
    ids: tuple[uuid.UUID, uuid.UUID] | None = None
    # Fired at or after `start` and at or before `end`.
    start: datetime | None = None
    end: datetime | None = None


_STATES = {state.value: state for state in RunState}
# In the order summaries() reads them.
_SUMMARY_COLUMNS = sql.SQL(
    "r.id::text, r.job_id::text, r.scheduled_at, r.state, r.attempt, a.started_at,"
    " r.finished_at, r.trigger"
)


def _query(
    window: Window, *, columns: sql.Composable, join: sql.Composable, params: dict[str, Any]
) -> sql.Composed:
    clauses = [sql.SQL("r.namespace = %(namespace)s")]
    params["namespace"] = window.namespace
    if window.job_id is not None:
        clauses.append(sql.SQL("r.job_id = %(job)s"))
        params["job"] = window.job_id
    if window.ids is not None:
        clauses.append(sql.SQL("r.id BETWEEN %(low)s AND %(high)s"))
        params["low"], params["high"] = window.ids
    if window.start is not None:
        clauses.append(sql.SQL("r.scheduled_at >= %(start)s"))
        params["start"] = window.start
    if window.end is not None:
        clauses.append(sql.SQL("r.scheduled_at <= %(end)s"))
        params["end"] = window.end
    if "before_at" in params:
        clauses.append(sql.SQL("(r.scheduled_at, r.id) < (%(before_at)s, %(before_id)s)"))
    return sql.SQL(
        "SELECT {columns} FROM runs r {join} WHERE {where}"
        " ORDER BY r.scheduled_at DESC, r.id DESC LIMIT %(limit)s"
    ).format(columns=columns, join=join, where=sql.SQL(" AND ").join(clauses))


def _params(limit: int, before: tuple[datetime, uuid.UUID] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        params["before_at"], params["before_id"] = before
    return params


async def page(
    conn: Connection,
    window: Window,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Run]:
    """Up to `limit` runs with all their attempts; `before` is the (scheduled_at, id) of
    the last run of the previous page."""
    params = _params(limit, before)
    query = _query(window, columns=sql.SQL("r.*"), join=sql.SQL(""), params=params)
    cursor = await conn.execute(query, params)
    return await runs.with_attempts(conn, await cursor.fetchall())


async def summaries(
    conn: Connection,
    window: Window,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[RunSummary]:
    """As `page`, each run as a summary: one statement, the current attempt's start joined
    by its key, never an attempt's output."""
    params = _params(limit, before)
    join = sql.SQL("LEFT JOIN attempts a ON a.run_id = r.id AND a.number = r.attempt")
    query = _query(window, columns=_SUMMARY_COLUMNS, join=join, params=params)
    # Tuples, not the pool's dicts, and states from a table, not RunState(): at 10,000 rows
    # each per-row step shows in the page's time.
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(query, params)
        rows = await cursor.fetchall()
    return [
        RunSummary(
            id=row[0],
            job_id=row[1],
            scheduled_at=row[2],
            state=_STATES[row[3]],
            attempt=row[4],
            started_at=row[5],
            finished_at=row[6],
            trigger=row[7],
        )
        for row in rows
    ]
