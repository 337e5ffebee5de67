"""The jobs table: storing jobs, reading them, and firing the ones that are due."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hourglass import schedules
from hourglass.domain import Job, JobId, JobSpec, JobState, RetryPolicy, Task
from hourglass.schedules import After, At, Cron, Every, Schedule
from hourglass.store.db import JOBS_CHANNEL, RUNS_CHANNEL, Connection, notify

# How many fires of one job a single producer cycle records at most; a job that missed more
# (a long outage with the "all" catch-up) gets the rest in the next cycles.
MAX_FIRES_PER_JOB_PER_CYCLE = 1000


class RequestConflict(Exception):
    """The request id was used before with a different request."""

    def __init__(self, request_id: str, job_id: JobId) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for job {job_id} with a different "
            "request; use a new request_id for a new job"
        )
        self.job_id = job_id


def schedule_to_json(schedule: Schedule) -> dict[str, Any]:
    match schedule:
        case At(at=at):
            return {"kind": "at", "at": at.isoformat()}
        case After(delay=delay):
            return {"kind": "after", "delay_seconds": delay.total_seconds()}
        case Cron(expression=expression, time_zone=time_zone):
            return {"kind": "cron", "expression": expression, "time_zone": time_zone}
        case Every(interval=interval):
            return {"kind": "every", "interval_seconds": interval.total_seconds()}


def schedule_from_json(data: dict[str, Any]) -> Schedule:
    match data["kind"]:
        case "at":
            return At(datetime.fromisoformat(data["at"]))
        case "after":
            return After(timedelta(seconds=data["delay_seconds"]))
        case "cron":
            return Cron(data["expression"], data["time_zone"])
        case "every":
            return Every(timedelta(seconds=data["interval_seconds"]))
    raise ValueError(f"unknown schedule kind {data['kind']!r}")


def _job(row: dict[str, Any]) -> Job:
    spec = JobSpec(
        name=row["name"],
        task=Task(
            command=tuple(row["command"]),
            args=tuple(row["args"]),
            env=dict(row["env"]),
            image=row["image"],
            working_dir=row["working_dir"],
        ),
        schedule=schedule_from_json(row["schedule"]),
        retry=RetryPolicy(max_attempts=row["max_attempts"], backoff=row["retry_backoff"]),
        timeout=row["timeout"],
    )
    return Job(
        id=JobId(row["id"]),
        spec=spec,
        state=JobState(row["state"]),
        next_fire_at=row["next_fire_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create(
    conn: Connection,
    *,
    spec: JobSpec,
    now: datetime,
    request_id: str = "",
    request_digest: bytes = b"",
) -> tuple[JobId, bool]:
    """Stores a job; returns its id and whether it is new.

    A request id seen before with the same digest returns the job it created (a safe retry);
    with another digest it raises RequestConflict and stores nothing.
    """
    job_id = JobId(uuid.uuid4())
    first_fire = spec.schedule.first(now)
    cursor = await conn.execute(
        """
        INSERT INTO jobs (id, name, request_id, request_digest, command, args, env, image,
                          working_dir, schedule, max_attempts, retry_backoff, timeout, state,
                          next_fire_at, created_at, updated_at)
        VALUES (%(id)s, %(name)s, %(request_id)s, %(digest)s, %(command)s, %(args)s, %(env)s,
                %(image)s, %(working_dir)s, %(schedule)s, %(max_attempts)s, %(backoff)s,
                %(timeout)s, 'active', %(next_fire_at)s, %(now)s, %(now)s)
        ON CONFLICT (request_id) DO NOTHING
        RETURNING id
        """,
        {
            "id": job_id,
            "name": spec.name,
            "request_id": request_id or None,
            "digest": request_digest or None,
            "command": list(spec.task.command),
            "args": list(spec.task.args),
            "env": Jsonb(spec.task.env),
            "image": spec.task.image,
            "working_dir": spec.task.working_dir,
            "schedule": Jsonb(schedule_to_json(spec.schedule)),
            "max_attempts": spec.retry.max_attempts,
            "backoff": spec.retry.backoff,
            "timeout": spec.timeout,
            "next_fire_at": first_fire,
            "now": now,
        },
    )
    if await cursor.fetchone() is not None:
        await notify(conn, JOBS_CHANNEL)
        return job_id, True
    cursor = await conn.execute(
        "SELECT id, request_digest FROM jobs WHERE request_id = %s", (request_id,)
    )
    existing = await cursor.fetchone()
    assert existing is not None, "ON CONFLICT (request_id) implies the row exists"
    if existing["request_digest"] != request_digest:
        raise RequestConflict(request_id, JobId(existing["id"]))
    return JobId(existing["id"]), False


async def get(conn: Connection, job_id: JobId) -> Job | None:
    cursor = await conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
    row = await cursor.fetchone()
    return _job(row) if row else None


async def list_page(
    conn: Connection, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
) -> list[Job]:
    """Jobs newest first; `after` is the (created_at, id) of the last job of the page before."""
    if after is None:
        cursor = await conn.execute(
            "SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT %s", (limit,)
        )
    else:
        cursor = await conn.execute(
            "SELECT * FROM jobs WHERE (created_at, id) < (%s, %s)"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            (*after, limit),
        )
    return [_job(row) for row in await cursor.fetchall()]


async def cancel(conn: Connection, job_id: JobId, *, now: datetime) -> Job | None:
    """Stops a job's future fires and cancels its queued runs; running ones finish."""
    cursor = await conn.execute(
        """
        UPDATE jobs SET state = CASE WHEN state = 'active' THEN 'cancelled' ELSE state END,
                        next_fire_at = NULL, updated_at = %(now)s
        WHERE id = %(id)s RETURNING *
        """,
        {"id": job_id, "now": now},
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    await conn.execute(
        "UPDATE runs SET state = 'cancelled', finished_at = %(now)s"
        " WHERE job_id = %(id)s AND state = 'queued'",
        {"id": job_id, "now": now},
    )
    return _job(row)


async def fire_due(conn: Connection, *, now: datetime, limit: int) -> int:
    """Records a queued run for every due fire of up to `limit` due jobs and advances each
    job's next_fire_at past them, all in the caller's transaction. Returns the runs queued.

    Rows are locked with SKIP LOCKED, so several producers can share the work; the unique
    (job_id, scheduled_at) key makes a fire that was somehow recorded already a no-op.
    """
    cursor = await conn.execute(
        """
        SELECT id, schedule, next_fire_at FROM jobs
        WHERE next_fire_at <= %(now)s
        ORDER BY next_fire_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
        """,
        {"now": now, "limit": limit},
    )
    due = await cursor.fetchall()
    if not due:
        return 0
    run_ids: list[uuid.UUID] = []
    run_jobs: list[uuid.UUID] = []
    fire_times: list[datetime] = []
    job_ids: list[uuid.UUID] = []
    next_times: list[datetime | None] = []
    for row in due:
        schedule = schedule_from_json(row["schedule"])
        fire: datetime | None = row["next_fire_at"]
        fired = 0
        while fire is not None and fire <= now and fired < MAX_FIRES_PER_JOB_PER_CYCLE:
            run_ids.append(uuid.uuid4())
            run_jobs.append(row["id"])
            fire_times.append(fire)
            fired += 1
            fire = schedules.next_fire(schedule, fire)
        job_ids.append(row["id"])
        next_times.append(fire)
    await conn.execute(
        """
        INSERT INTO runs (id, job_id, scheduled_at, state, attempt, available_at, created_at)
        SELECT r.id, r.job_id, r.scheduled_at, 'queued', 1, r.scheduled_at, %(now)s
        FROM unnest(%(ids)s::uuid[], %(jobs)s::uuid[], %(times)s::timestamptz[])
             AS r(id, job_id, scheduled_at)
        ON CONFLICT (job_id, scheduled_at) DO NOTHING
        """,
        {"ids": run_ids, "jobs": run_jobs, "times": fire_times, "now": now},
    )
    await conn.execute(
        """
        UPDATE jobs SET next_fire_at = v.next_fire_at,
                        state = CASE WHEN v.next_fire_at IS NULL THEN 'completed' ELSE state END,
                        updated_at = %(now)s
        FROM unnest(%(ids)s::uuid[], %(next)s::timestamptz[]) AS v(id, next_fire_at)
        WHERE jobs.id = v.id
        """,
        {"ids": job_ids, "next": next_times, "now": now},
    )
    await notify(conn, RUNS_CHANNEL)
    return len(run_ids)


async def next_due_at(conn: Connection) -> datetime | None:
    """The earliest next_fire_at of any job: when the producer has work next."""
    cursor = await conn.execute(
        "SELECT next_fire_at AS due FROM jobs WHERE next_fire_at IS NOT NULL"
        " ORDER BY next_fire_at LIMIT 1"
    )
    row = await cursor.fetchone()
    return row["due"] if row else None
