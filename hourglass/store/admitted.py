"""ScheduleJob's common case in one statement: new jobs, within their namespace's quotas.

jobs.create under quotas.lock, admit_schedules and enforce_jobs costs nine statements, each
waiting on the last. Here PostgreSQL makes the same decisions in one statement, in autocommit:
one message out, one answer back, one commit. (A pipeline of BEGIN, the namespace's advisory
lock, the INSERT and COMMIT was one round trip too, but psycopg spent three times the CPU of
a single statement on it: 310 against 110 us a call, docs/benchmarks.md.)

The count is exact without the advisory lock. The statement first upserts the namespace's
row of namespace_counts without changing it: that locks the row, waiting for any transaction
that holds it, and returns its latest committed value whatever the statement's snapshot
(READ COMMITTED updates the newest version of a row). Every insert or delete of jobs changes
that row through the triggers of 0011, so until this commit nobody else can; the full path
and ScheduleJobs read it after their own insert, under the same row lock.

Several calls of one namespace may share the statement (api.group_commit): one lock, one
commit for all. They are admitted in order: the first max_jobs - count of those whose
schedule the rate quota allows. A job that is not stored (over a quota, a retried request id,
a job its manager has already) gets None, and the caller takes the full path alone
(jobs.create with the quota checks), which decides it and says why; the others are stored.
A job with a binary always takes the full path (the ownership check is there).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hourglass.domain import JobId, JobSpec
from hourglass.quota_rules import Quota
from hourglass.store.db import JOBS_CHANNEL, Connection
from hourglass.store.job_batch import COLUMNS, NewJob, documents, dumps

_DEFAULTS = Quota()

_INSERT = f"""
WITH counted AS (
    INSERT INTO namespace_counts AS c (namespace, jobs) VALUES (%(namespace)s, 0)
    ON CONFLICT (namespace) DO UPDATE SET jobs = c.jobs
    RETURNING jobs
),
quota AS (
    SELECT coalesce(q.max_jobs, %(default_max_jobs)s) AS max_jobs,
           coalesce(q.max_fires_per_second, %(default_rate)s) AS max_rate
    FROM (SELECT 1) AS one
    LEFT JOIN namespace_quotas q ON q.namespace = %(namespace)s
),
wanted AS (
    SELECT * FROM json_to_recordset(%(revisions)s::json)
        AS w(id uuid, spec jsonb, created_at timestamptz, rate float8, ord int)
),
chosen AS (
    SELECT ranked.id FROM (
        SELECT w.id, row_number() OVER (ORDER BY w.ord) AS k
        FROM wanted w, quota WHERE w.rate <= quota.max_rate) AS ranked, counted, quota
    WHERE counted.jobs + ranked.k <= quota.max_jobs
),
stored AS (
    INSERT INTO jobs ({COLUMNS}, created_at, updated_at, namespace)
    SELECT {COLUMNS}, created_at, created_at, %(namespace)s
    FROM json_populate_recordset(NULL::jobs, %(jobs)s::json)
    WHERE id IN (SELECT id FROM chosen)
    ON CONFLICT DO NOTHING
    RETURNING id
),
revisions AS (
    INSERT INTO job_revisions (job_id, revision, spec, created_at)
    SELECT w.id, 1, w.spec, w.created_at FROM wanted w JOIN stored s ON s.id = w.id
)
SELECT array_agg(id) AS ids,
       CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '') END AS notified
FROM stored
"""  # noqa: S608 - constant


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new job's documents, built before anything is locked: the Python per job runs
    outside the namespace's serialized section."""

    namespace: str
    id: uuid.UUID
    row: dict[str, Any]
    revision: dict[str, Any]


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
    """A new job ready to store, or None when only the full path can store it. `rate` is the
    most fires a second the quota must allow (quota_rules.admission_rate)."""
    if spec.task.binary:
        return None  # the ownership check (jobs.check_binary) is the full path's
    if not math.isfinite(rate):
        return None  # JSON has no infinity; check_rate on the full path decides
    job_id = uuid.uuid4()
    job = NewJob(
        spec=spec, request_id=request_id, request_digest=request_digest, managed_by=managed_by
    )
    row, revision = documents(job, job_id=job_id, now=now)
    # Each call's own time: calls batched together are stored as if each went alone.
    row["created_at"] = revision["created_at"] = now.isoformat()
    revision["rate"] = rate
    return Prepared(namespace, job_id, row, revision)


async def store(conn: Connection, batch: Sequence[Prepared]) -> list[JobId | None]:
    """Stores jobs of one namespace in one statement, admitted in order; gives each one's
    id, or None where nothing was stored for it (see the module's docstring). `conn` must be
    in autocommit and outside a transaction: the statement is its own."""
    namespace = batch[0].namespace
    assert all(p.namespace == namespace for p in batch), "one namespace per statement"
    revisions = []
    for ord_, prepared in enumerate(batch):
        prepared.revision["ord"] = ord_
        revisions.append(prepared.revision)
    cursor = await conn.execute(
        _INSERT,
        {
            "namespace": namespace,
            "jobs": dumps([prepared.row for prepared in batch]),
            "revisions": dumps(revisions),
            "channel": JOBS_CHANNEL,
            "default_max_jobs": _DEFAULTS.max_jobs,
            "default_rate": _DEFAULTS.max_fires_per_second,
        },
        prepare=True,
    )
    row = await cursor.fetchone()
    stored = set(row["ids"] or ()) if row else set()
    return [JobId(p.id) if p.id in stored else None for p in batch]


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
