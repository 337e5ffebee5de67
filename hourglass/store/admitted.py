"""ScheduleJob's common case in one round trip: new jobs, within their namespace's quotas.

jobs.create under quotas.lock, admit_schedules and enforce_jobs costs nine statements, each
waiting on the last; a ScheduleJob spent most of its time on those round trips
(docs/benchmarks.md). Here the same decisions are made by PostgreSQL, in one pipeline:

    BEGIN; the namespace's advisory lock; per job, one INSERT of the job and its first
    revision, made only if the quotas allow it; COMMIT

Several calls of one namespace may share the transaction (api.group_commit): the lock is
taken and the commit flushed once for all of them. Each INSERT reads the namespace's count
from namespace_counts, which the INSERTs before it in the transaction have already raised
(a trigger on jobs keeps it, 0011): jobs are admitted in order, and the ones past max_jobs
are left out while the others are stored. The INSERTs' snapshots are taken after the lock is
held, so the count includes every job committed by a request that held the lock before: it
is as exact as enforce_jobs'.

Anything but the plain case (a retried request id, a job a manager adopts, a quota that
would refuse, a binary to check) stores nothing here and gives None: the caller then takes
the full path (jobs.create with the quota checks), which decides it and says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hourglass import schedules
from hourglass.domain import JobId, JobSpec, JobState
from hourglass.policies import Quota
from hourglass.store.db import JOBS_CHANNEL, Connection
from hourglass.store.jobs import _spec_json, _spec_params
from hourglass.store.quotas import NAMESPACE_LOCK

_DEFAULTS = Quota()
_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

# Typed placeholders: an INSERT ... SELECT does not infer parameter types from the columns.
_INSERT = """
WITH quota AS (
    SELECT coalesce(q.max_jobs, %(default_max_jobs)s::int) AS max_jobs,
           coalesce(q.max_fires_per_second, %(default_rate)s::float8) AS max_rate
    FROM (SELECT 1) AS one
    LEFT JOIN namespace_quotas q ON q.namespace = %(namespace)s::text
),
held AS (
    SELECT coalesce(
        (SELECT jobs FROM namespace_counts WHERE namespace = %(namespace)s::text), 0) AS n
),
stored AS (
    INSERT INTO jobs (id, name, request_id, request_digest, command, args, env, image,
                      working_dir, binary_digest, resources, secret_env, kubernetes,
                      namespace, managed_by, schedule, max_attempts,
                      retry_backoff, timeout, overlap, catch_up, catch_up_window, state,
                      next_fire_at, created_at, updated_at)
    SELECT %(id)s::uuid, %(name)s::text, %(request_id)s::text, %(digest)s::bytea,
           %(command)s::text[], %(args)s::text[], %(env)s::jsonb, %(image)s::text,
           %(working_dir)s::text, NULL, %(resources)s::jsonb, %(secret_env)s::jsonb,
           %(kubernetes)s::jsonb, %(namespace)s::text, %(managed_by)s::text,
           %(schedule)s::jsonb, %(max_attempts)s::int, %(backoff)s::interval,
           %(timeout)s::interval, %(overlap)s::text, %(catch_up)s::text,
           %(catch_up_window)s::interval, %(state)s::text, %(next_fire_at)s::timestamptz,
           %(now)s::timestamptz, %(now)s::timestamptz
    FROM quota, held
    WHERE held.n < quota.max_jobs AND %(rate)s::float8 <= quota.max_rate
    ON CONFLICT DO NOTHING
    RETURNING id
),
revision AS (
    INSERT INTO job_revisions (job_id, revision, spec, created_at)
    SELECT id, 1, %(revision)s::jsonb, %(now)s::timestamptz FROM stored
)
SELECT id, pg_notify(%(channel)s::text, '') FROM stored
"""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new job's INSERT, built before any lock is held: the Python per job runs outside
    the namespace's serialized section."""

    namespace: str
    params: dict[str, Any]


def prepare(
    *,
    spec: JobSpec,
    rate: float,
    now: datetime,
    namespace: str,
    request_id: str = "",
    request_digest: bytes = b"",
    managed_by: str = "",
) -> Prepared | None:
    """The INSERT for a new job, or None when only the full path can store it. `rate` is the
    most fires a second the quota must allow (policies.admission_rate)."""
    if spec.task.binary:
        return None  # the ownership check (jobs._check_binary) is the full path's
    first = schedules.first_fire(spec.schedule, created=now, bounds=spec.bounds)
    spec_params = _spec_params(spec)
    return Prepared(
        namespace,
        {
            **spec_params,
            "id": uuid.uuid4(),
            "namespace": namespace,
            "managed_by": managed_by,
            "request_id": request_id or None,
            "digest": request_digest or None,
            "state": (JobState.ACTIVE if first else JobState.COMPLETED).value,
            "next_fire_at": first,
            "now": now,
            "revision": _spec_json(spec, spec_params),
            "rate": rate,
            "channel": JOBS_CHANNEL,
            "default_max_jobs": _DEFAULTS.max_jobs,
            "default_rate": _DEFAULTS.max_fires_per_second,
        },
    )


async def store(conn: Connection, batch: Sequence[Prepared]) -> list[JobId | None]:
    """Stores jobs of one namespace in one transaction and one round trip, admitted in
    order; gives each one's id, or None where nothing was stored for it (see the module's
    docstring). `conn` must be outside a transaction: this makes its own."""
    namespaces = {prepared.namespace for prepared in batch}
    assert len(namespaces) == 1, "one namespace per transaction: one lock"
    async with conn.pipeline(), conn.transaction():
        await conn.execute(_LOCK, (NAMESPACE_LOCK, namespaces.pop()), prepare=True)
        cursors = [await conn.execute(_INSERT, prepared.params, prepare=True) for prepared in batch]
    stored: list[JobId | None] = []
    for cursor in cursors:
        row = await cursor.fetchone()
        stored.append(None if row is None else JobId(row["id"]))
    return stored


async def create(
    conn: Connection,
    *,
    spec: JobSpec,
    rate: float,
    now: datetime,
    namespace: str,
    request_id: str = "",
    request_digest: bytes = b"",
    managed_by: str = "",
) -> JobId | None:
    """One job alone: prepare, then store."""
    prepared = prepare(
        spec=spec,
        rate=rate,
        now=now,
        namespace=namespace,
        request_id=request_id,
        request_digest=request_digest,
        managed_by=managed_by,
    )
    return None if prepared is None else (await store(conn, [prepared]))[0]
