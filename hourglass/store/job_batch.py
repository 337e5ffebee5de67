"""ScheduleJobs' store side: many new jobs in one statement, their rows sent as one JSON
document. (hourglass.api.bulk_submit sends a call's chunks, one statement each, on a pipeline
so that PostgreSQL inserts one while the API builds the next.)

A binary COPY made psycopg dump every value of every row in turn (25 columns, five of them
JSON, each its own json.dumps), and building the parameters and the revision took as long
again: three quarters of ScheduleJobs' CPU per job (docs/benchmarks.md). Here each job is
one plain dict, the batch is dumped by one orjson call (Rust), and PostgreSQL expands it
(json_populate_recordset) into the jobs and job_revisions rows of one INSERT: the per-value
work is C on both sides.

The values are written as psycopg writes them for jobs.create (an interval as str(timedelta),
an instant in ISO form), so a job stored here reads back exactly as one stored alone; the
revision is the same document as job_columns.spec_json's (tests/integration/test_job_batch.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from hourglass import schedules
from hourglass.domain import JobId, JobSpec, JobState
from hourglass.store import job_columns
from hourglass.store.db import JOBS_CHANNEL, Connection, notify
from hourglass.store.job_columns import resources_json, schedule_to_json
from hourglass.store.jobs import RequestConflict, check_binary


@dataclass(frozen=True, slots=True)
class NewJob:
    spec: JobSpec
    request_id: str = ""
    request_digest: bytes = b""
    # ScheduleJob's adoption key (ScheduleJobs refuses one).
    managed_by: str = ""


# The jobs columns the document gives, per job; namespace and the times are the batch's.
COLUMNS = (
    "id, name, request_id, request_digest, command, args, env, image, working_dir,"
    " binary_digest, resources, secret_env, kubernetes, schedule, max_attempts, retry_backoff,"
    " timeout, overlap, catch_up, catch_up_window, state, next_fire_at, managed_by"
)
# The revisions' FOREIGN KEY to jobs is checked at the end of the statement, when the jobs
# of the first INSERT are there.
_INSERT = f"""
WITH stored AS (
    INSERT INTO jobs ({COLUMNS}, namespace, created_at, updated_at)
    SELECT {COLUMNS}, %(namespace)s, %(now)s, %(now)s
    FROM json_populate_recordset(NULL::jobs, %(jobs)s::json)
)
INSERT INTO job_revisions (job_id, revision, spec, created_at)
SELECT id, 1, spec, %(now)s FROM json_to_recordset(%(revisions)s::json) AS r(id uuid, spec jsonb)
"""  # noqa: S608 - constant


def dumps(documents: list[dict[str, Any]]) -> str:
    """A batch's documents as one JSON text, compact, UTF-8 left as it is.

    orjson, not json: the same text in a tenth of the time (json.dumps was a quarter of
    ScheduleJobs' Python per job, docs/benchmarks.md). orjson writes a NaN or an infinity as
    null where json refused it: every float here is a timedelta's seconds, finite, or
    admitted's rate, which prepare() checks is finite."""
    return orjson.dumps(documents).decode()


def _interval(value: timedelta | None) -> str | None:
    """An interval as psycopg's text dumper writes it ("1 day 2:03:04.5"), days as days."""
    return None if value is None else str(value).replace(",", "")


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def documents(
    job: NewJob, *, job_id: uuid.UUID, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's row and its first revision, as plain JSON values."""
    spec, task = job.spec, job.spec.task
    first = schedules.first_fire(spec.schedule, created=now, bounds=spec.bounds)
    resources = resources_json(task.resources)
    kubernetes = job_columns.kubernetes_json(task.kubernetes)
    schedule = schedule_to_json(spec.schedule, spec.bounds)
    command, args = list(task.command), list(task.args)
    ident = str(job_id)
    # The StrEnum members themselves: json writes them as their text, without .value's
    # descriptor call.
    overlap, catch_up = spec.overlap, spec.catch_up.policy
    row = {
        "id": ident,
        "name": spec.name,
        "request_id": job.request_id or None,
        "request_digest": "\\x" + job.request_digest.hex() if job.request_digest else None,
        "command": command,
        "args": args,
        "env": task.env,
        "image": task.image,
        "working_dir": task.working_dir,
        "binary_digest": task.binary or None,
        "resources": resources,
        "secret_env": task.secret_env,
        "kubernetes": kubernetes,
        "schedule": schedule,
        "max_attempts": spec.retry.max_attempts,
        "retry_backoff": _interval(spec.retry.backoff),
        "timeout": _interval(spec.timeout),
        "overlap": overlap,
        "catch_up": catch_up,
        "catch_up_window": _interval(spec.catch_up.window),
        "state": JobState.ACTIVE if first else JobState.COMPLETED,
        "next_fire_at": first.isoformat() if first else None,
        "managed_by": job.managed_by,
    }
    # job_columns.spec_json's document: the spec's plain columns (an absent timeout or window
    # shows as null), the JSON ones, secrets by name only, durations in seconds.
    revision: dict[str, Any] = {
        "name": spec.name,
        "command": command,
        "args": args,
        "image": task.image,
        "working_dir": task.working_dir,
        "binary": task.binary or None,
        "max_attempts": spec.retry.max_attempts,
        "overlap": overlap,
        "catch_up": catch_up,
        "env": task.env,
        "resources": resources,
        "secret_env": sorted(task.secret_env),
        "kubernetes": kubernetes,
        "schedule": schedule,
        "retry_backoff_seconds": spec.retry.backoff.total_seconds(),
        "timeout_seconds": _seconds(spec.timeout),
        "catch_up_window_seconds": _seconds(spec.catch_up.window),
    }
    if spec.timeout is None:
        revision["timeout"] = None
    if spec.catch_up.window is None:
        revision["catch_up_window"] = None
    return row, {"id": ident, "spec": revision}


@dataclass(frozen=True, slots=True)
class Lookup:
    """The stored jobs of some request ids, asked for and not yet read. On a connection in
    pipeline mode the question goes out at once and the answer is read when needed, so
    ScheduleJobs validates its next chunk while PostgreSQL looks the ids up."""

    cursor: psycopg.AsyncCursor[dict[str, Any]] | None

    async def found(self) -> dict[str, tuple[JobId, bytes]]:
        """Each stored request id's job: its id and request digest."""
        if self.cursor is None:
            return {}
        return {
            row["request_id"]: (JobId(row["id"]), row["request_digest"])
            for row in await self.cursor.fetchall()
        }


async def look_up(conn: Connection, request_ids: Collection[str], *, namespace: str) -> Lookup:
    """Asks for the namespace's jobs stored under these request ids. The ids go as one JSON
    array: psycopg's list dumper took a microsecond an id, serialized with the rest of a
    call."""
    if not request_ids:
        return Lookup(None)
    cursor = await conn.execute(
        "SELECT request_id, id, request_digest FROM jobs WHERE namespace = %s"
        " AND request_id = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
        (namespace, orjson.dumps(list(request_ids)).decode()),
    )
    return Lookup(cursor)


async def existing(
    conn: Connection, request_ids: Collection[str], *, namespace: str
) -> dict[str, tuple[JobId, bytes]]:
    """The jobs of the namespace stored under these request ids: id and request digest."""
    return await (await look_up(conn, request_ids, namespace=namespace)).found()


def resolve(
    new: Iterable[NewJob], stored: dict[str, tuple[JobId, bytes]]
) -> tuple[list[JobId], list[tuple[JobId, NewJob]]]:
    """Each job's id, in order, and the jobs to insert with their new ids: a request id
    stored with the same digest gives back its job (a safe retry); with another digest it
    raises RequestConflict, for the first such job."""
    ids: list[JobId] = []
    fresh: list[tuple[JobId, NewJob]] = []
    for job in new:
        if job.request_id in stored:
            job_id, stored_digest = stored[job.request_id]
            if stored_digest != job.request_digest:
                raise RequestConflict(job.request_id, job_id)
        else:
            job_id = JobId(uuid.uuid4())
            fresh.append((job_id, job))
        ids.append(job_id)
    return ids, fresh


async def insert(
    conn: Connection, fresh: list[tuple[JobId, NewJob]], *, namespace: str, now: datetime
) -> None:
    """Sends the INSERT of `fresh` (from resolve), in the caller's transaction.

    On a connection in pipeline mode this returns once the statement is sent, not once it
    has run: ScheduleJobs builds its next chunk while PostgreSQL inserts this one (see
    hourglass.api.bulk_submit). A failure then shows at the pipeline's next result."""
    if not fresh:
        return
    rows: list[dict[str, Any]] = []
    revisions: list[dict[str, Any]] = []
    for job_id, job in fresh:
        row, revision = documents(job, job_id=job_id, now=now)
        rows.append(row)
        revisions.append(revision)
    await conn.execute(
        _INSERT,
        {"namespace": namespace, "now": now, "jobs": dumps(rows), "revisions": dumps(revisions)},
    )


async def create_many(
    conn: Connection, new: list[NewJob], *, namespace: str, now: datetime
) -> list[JobId]:
    """Stores many jobs in the caller's transaction, in one statement; returns their ids in
    order.

    A request id seen before with the same digest gives back its job (a safe retry); with
    another digest it raises RequestConflict. A concurrent batch inserting the same request id
    makes the INSERT fail on the unique key: the caller's transaction rolls back, and a retry
    finds the other batch's job.
    """
    wanted = {job.request_id for job in new if job.request_id}
    stored = await existing(conn, wanted, namespace=namespace)
    await check_binary(conn, [job.spec for job in new], namespace=namespace)
    ids, fresh = resolve(new, stored)
    if fresh:
        await insert(conn, fresh, namespace=namespace, now=now)
        await notify(conn, JOBS_CHANNEL)
    return ids
