"""The jobs table: storing jobs, changing them, and firing the ones that are due."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from hourglass import schedules
from hourglass.domain import (
    Job,
    JobId,
    JobSpec,
    JobState,
    RunId,
)
from hourglass.schedules import Cron, Every
from hourglass.store import job_columns
from hourglass.store.db import JOBS_CHANNEL, Connection, notify
from hourglass.store.runs import request_cancel


class RequestConflict(Exception):
    """The request id was used before with a different request."""

    def __init__(self, request_id: str, job_id: JobId) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for job {job_id} with a different "
            "request; use a new request_id for a new job"
        )
        self.job_id = job_id


class UnknownArtifact(Exception):
    """The job's namespace never uploaded the binary. The message is the same whether another
    namespace did or nobody did: it must not tell a tenant what others stored."""

    def __init__(self, digest: str) -> None:
        super().__init__(
            f"binary {digest} not found: upload it with UploadBinary first (a namespace can"
            " run only the binaries it uploaded)"
        )


class NotAllowed(Exception):
    """The job's state does not allow the change (e.g. resuming a cancelled job)."""


async def check_binary(conn: Connection, specs: list[JobSpec], *, namespace: str) -> None:
    """Raises UnknownArtifact unless `namespace` uploaded every binary of `specs`. FOR KEY
    SHARE keeps maintenance from releasing an ownership before this transaction commits; the
    foreign key jobs_binary_owner holds it afterwards."""
    wanted = sorted({spec.task.binary for spec in specs if spec.task.binary})
    if not wanted:
        return
    cursor = await conn.execute(
        "SELECT digest FROM artifact_owners WHERE namespace = %s AND digest = ANY(%s)"
        " FOR KEY SHARE",
        (namespace, wanted),
    )
    owned = {row["digest"] for row in await cursor.fetchall()}
    for digest in wanted:
        if digest not in owned:
            raise UnknownArtifact(digest)


async def create(
    conn: Connection,
    *,
    spec: JobSpec,
    now: datetime,
    namespace: str = "default",
    request_id: str = "",
    request_digest: bytes = b"",
    managed_by: str = "",
) -> tuple[JobId, bool]:
    """Stores a job; returns its id and whether it is new.

    A request id seen before with the same digest returns the job it created (a safe retry);
    with another digest it raises RequestConflict and stores nothing. A manager that has a job
    in the namespace gets that job back, whatever the spec: it adopts it (and its history)
    rather than running a second one.
    """
    # The insert comes first and the existing row is read only on a conflict: a retry is rare,
    # and a read before every insert cost a round trip per call (docs/benchmarks.md).
    await check_binary(conn, [spec], namespace=namespace)
    job_id = JobId(uuid.uuid4())
    first = schedules.first_fire(spec.schedule, created=now, bounds=spec.bounds)
    cursor = await conn.execute(
        """
        INSERT INTO jobs (id, name, request_id, request_digest, command, args, env, image,
                          working_dir, binary_digest, resources, secret_env, kubernetes,
                          namespace, managed_by, schedule, max_attempts,
                          retry_backoff, timeout, overlap, catch_up, catch_up_window, state,
                          next_fire_at, created_at, updated_at)
        VALUES (%(id)s, %(name)s, %(request_id)s, %(digest)s, %(command)s, %(args)s, %(env)s,
                %(image)s, %(working_dir)s, %(binary)s, %(resources)s, %(secret_env)s,
                 %(kubernetes)s, %(namespace)s, %(managed_by)s, %(schedule)s,
                %(max_attempts)s,
                %(backoff)s, %(timeout)s, %(overlap)s, %(catch_up)s, %(catch_up_window)s,
                %(state)s, %(next_fire_at)s, %(now)s, %(now)s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        {
            **job_columns.spec_params(spec),
            "id": job_id,
            "namespace": namespace,
            "managed_by": managed_by,
            "request_id": request_id or None,
            "digest": request_digest or None,
            "state": JobState.ACTIVE if first else JobState.COMPLETED,
            "next_fire_at": first,
            "now": now,
        },
    )
    if await cursor.fetchone() is None:  # a retry of the same request, or a managed job
        existing = await _by_request(conn, namespace, request_id) if request_id else None
        if existing is not None:
            return _same_request(request_id, request_digest, existing)
        managed = await by_manager(conn, namespace, managed_by) if managed_by else None
        assert managed is not None, "a conflict on neither unique key"
        return managed.id, False
    await conn.execute(
        "INSERT INTO job_revisions (job_id, revision, spec, created_at) VALUES (%s, 1, %s, %s)",
        (job_id, job_columns.spec_json(spec), now),
    )
    await notify(conn, JOBS_CHANNEL)
    return job_id, True


async def _by_request(conn: Connection, namespace: str, request_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT id, request_digest FROM jobs WHERE namespace = %s AND request_id = %s",
        (namespace, request_id),
    )
    return await cursor.fetchone()


def _same_request(request_id: str, digest: bytes, existing: dict[str, Any]) -> tuple[JobId, bool]:
    if existing["request_digest"] != digest:
        raise RequestConflict(request_id, JobId(existing["id"]))
    return JobId(existing["id"]), False


async def by_manager(conn: Connection, namespace: str, managed_by: str) -> Job | None:
    """The job that `managed_by` manages in the namespace, if any."""
    cursor = await conn.execute(
        "SELECT * FROM jobs WHERE namespace = %s AND managed_by = %s AND managed_by <> ''",
        (namespace, managed_by),
    )
    row = await cursor.fetchone()
    return job_columns.from_row(row) if row else None


async def get(
    conn: Connection, job_id: JobId, *, namespace: str | None = None, for_update: bool = False
) -> Job | None:
    """A job by id; with a namespace, only if it belongs to that namespace."""
    query = "SELECT * FROM jobs WHERE id = %s AND (%s::text IS NULL OR namespace = %s)"
    cursor = await conn.execute(
        query + (" FOR UPDATE" if for_update else ""), (job_id, namespace, namespace)
    )
    row = await cursor.fetchone()
    return job_columns.from_row(row) if row else None


async def list_page(
    conn: Connection,
    *,
    namespace: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    name: str | None = None,
    ids: tuple[uuid.UUID, uuid.UUID] | None = None,
) -> list[Job]:
    """A namespace's jobs newest first; `after` is the (created_at, id) of the last job of the
    page before. `name` keeps the jobs of that exact name, `ids` those whose id lies in the
    range (lowest, highest) that an id prefix spans."""
    cursor = await conn.execute(
        """
        SELECT * FROM jobs
        WHERE namespace = %(namespace)s
          AND (%(after_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_at)s, %(after_id)s))
          AND (%(name)s::text IS NULL OR name = %(name)s)
          AND (%(low)s::uuid IS NULL OR id BETWEEN %(low)s AND %(high)s)
        ORDER BY created_at DESC, id DESC
        LIMIT %(limit)s
        """,
        {
            "namespace": namespace,
            "limit": limit,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "name": name,
            "low": ids[0] if ids else None,
            "high": ids[1] if ids else None,
        },
    )
    return [job_columns.from_row(row) for row in await cursor.fetchall()]


async def update(conn: Connection, job_id: JobId, *, spec: JobSpec, now: datetime) -> Job | None:
    """Replaces a job's spec and plans its next fire from now; keeps the old spec as a
    revision. A paused job stays paused; a finished one-shot job can be given a new schedule."""
    job = await get(conn, job_id, for_update=True)
    if job is None:
        return None
    if job.state == JobState.CANCELLED:
        raise NotAllowed(f"job {job_id} is cancelled; schedule a new job instead")
    await check_binary(conn, [spec], namespace=job.namespace)
    state = job.state
    next_fire: datetime | None = None
    if state != JobState.PAUSED:
        next_fire = schedules.first_fire(spec.schedule, created=now, bounds=spec.bounds)
        state = JobState.ACTIVE if next_fire else JobState.COMPLETED
    cursor = await conn.execute(
        """
        UPDATE jobs SET name = %(name)s, command = %(command)s, args = %(args)s, env = %(env)s,
            image = %(image)s, working_dir = %(working_dir)s, binary_digest = %(binary)s,
            resources = %(resources)s, secret_env = %(secret_env)s,
            kubernetes = %(kubernetes)s,
            schedule = %(schedule)s, max_attempts = %(max_attempts)s,
            retry_backoff = %(backoff)s, timeout = %(timeout)s, overlap = %(overlap)s,
            catch_up = %(catch_up)s, catch_up_window = %(catch_up_window)s, state = %(state)s,
            next_fire_at = %(next_fire_at)s, revision = revision + 1, updated_at = %(now)s
        WHERE id = %(id)s
        RETURNING *
        """,
        {
            **job_columns.spec_params(spec),
            "id": job_id,
            "state": state,
            "next_fire_at": next_fire,
            "now": now,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    await conn.execute(
        "INSERT INTO job_revisions (job_id, revision, spec, created_at) VALUES (%s, %s, %s, %s)",
        (job_id, row["revision"], job_columns.spec_json(spec), now),
    )
    await notify(conn, JOBS_CHANNEL)
    return job_columns.from_row(row)


async def pause(conn: Connection, job_id: JobId, *, now: datetime) -> Job | None:
    job = await get(conn, job_id, for_update=True)
    if job is None:
        return None
    if job.state not in (JobState.ACTIVE, JobState.PAUSED):
        raise NotAllowed(f"job {job_id} is {job.state}; only an active job can be paused")
    return await _set_state(conn, job_id, JobState.PAUSED, None, now)


async def resume(conn: Connection, job_id: JobId, *, now: datetime) -> Job | None:
    """Back to firing, from the schedule's next fire after now: fires that came due while
    paused are not made up."""
    job = await get(conn, job_id, for_update=True)
    if job is None:
        return None
    if job.state == JobState.ACTIVE:
        return job
    if job.state != JobState.PAUSED:
        raise NotAllowed(f"job {job_id} is {job.state}; only a paused job can be resumed")
    spec = job.spec
    next_fire = (
        schedules.next_fire(spec.schedule, now, bounds=spec.bounds)
        if isinstance(spec.schedule, Cron | Every)
        else schedules.first_fire(spec.schedule, created=job.created_at, bounds=spec.bounds)
    )
    if next_fire is None:
        return await _set_state(conn, job_id, JobState.COMPLETED, None, now)
    return await _set_state(conn, job_id, JobState.ACTIVE, next_fire, now)


async def _set_state(
    conn: Connection, job_id: JobId, state: JobState, next_fire: datetime | None, now: datetime
) -> Job:
    cursor = await conn.execute(
        "UPDATE jobs SET state = %s, next_fire_at = %s, updated_at = %s WHERE id = %s RETURNING *",
        (state, next_fire, now, job_id),
    )
    row = await cursor.fetchone()
    assert row is not None
    await notify(conn, JOBS_CHANNEL)
    return job_columns.from_row(row)


async def cancel(conn: Connection, job_id: JobId, *, now: datetime) -> Job | None:
    """Stops a job's future fires and cancels its queued runs; running ones finish."""
    cursor = await conn.execute(
        """
        UPDATE jobs SET state = CASE WHEN state IN ('active', 'paused') THEN 'cancelled'
                                     ELSE state END,
                        next_fire_at = NULL, updated_at = %(now)s
        WHERE id = %(id)s RETURNING *
        """,
        {"id": job_id, "now": now},
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    await conn.execute(
        "UPDATE runs SET state = 'cancelled', finished_at = %(now)s, reason = 'job cancelled'"
        " WHERE job_id = %(id)s AND state = 'queued'",
        {"id": job_id, "now": now},
    )
    return job_columns.from_row(row)


async def delete(conn: Connection, job_id: JobId, *, now: datetime) -> bool:
    """Removes a job with its history. A running run is asked to terminate first; its
    worker's late writes then find no row and change nothing."""
    cursor = await conn.execute(
        "SELECT id FROM runs WHERE job_id = %s AND state IN ('queued', 'running')", (job_id,)
    )
    active = [RunId(row["id"]) for row in await cursor.fetchall()]
    await request_cancel(conn, active, reason="job deleted", now=now)
    cursor = await conn.execute("DELETE FROM jobs WHERE id = %s RETURNING id", (job_id,))
    return await cursor.fetchone() is not None


async def next_due_at(conn: Connection) -> datetime | None:
    """The earliest next_fire_at of any job: when the producer has work next."""
    cursor = await conn.execute(
        "SELECT next_fire_at AS due FROM jobs WHERE next_fire_at IS NOT NULL"
        " ORDER BY next_fire_at LIMIT 1"
    )
    row = await cursor.fetchone()
    return row["due"] if row else None


async def count_overdue(conn: Connection, *, due_before: datetime) -> int:
    """Jobs that should have fired before `due_before` and have not: a producer is down or
    far behind."""
    cursor = await conn.execute(
        "SELECT count(*) AS overdue FROM jobs WHERE next_fire_at < %s", (due_before,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["overdue"])
