"""The job_revisions table read back: every spec a job has had, newest first.

jobs.create and jobs.update write a revision with each spec (job_columns.spec_json); this module
reads them, for ListJobRevisions. A revision keeps the names of the secrets, never their
values, so a spec read back has each secret's name with an empty value. Revisions written
before a field existed (resources, secret_env, kubernetes) read back with its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobId,
    JobSpec,
    Overlap,
    Resources,
    RetryPolicy,
    Task,
)
from hourglass.store import job_columns
from hourglass.store.db import Connection
from hourglass.store.job_columns import schedule_from_json


@dataclass(frozen=True, slots=True)
class Revision:
    """One spec a job has had: `number` 1 is the spec it was scheduled with."""

    number: int
    spec: JobSpec
    created_at: datetime


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def spec_from_json(data: dict[str, Any]) -> JobSpec:
    """A spec from its revision's JSON (what job_columns.spec_json wrote)."""
    schedule, bounds = schedule_from_json(data["schedule"])
    task = Task(
        command=tuple(data.get("command") or ()),
        args=tuple(data.get("args") or ()),
        env=dict(data.get("env") or {}),
        image=data.get("image") or "",
        working_dir=data.get("working_dir") or "",
        binary=data.get("binary") or "",
        resources=Resources(**(data.get("resources") or {})),
        # The names only were kept: a value never reaches the history.
        secret_env=dict.fromkeys(data.get("secret_env") or (), ""),
        kubernetes=job_columns.kubernetes(data.get("kubernetes")),
    )
    backoff = _seconds(data.get("retry_backoff_seconds"))
    return JobSpec(
        name=data.get("name") or "",
        task=task,
        schedule=schedule,
        bounds=bounds,
        retry=RetryPolicy(
            max_attempts=data.get("max_attempts") or 1,
            backoff=backoff if backoff is not None else RetryPolicy().backoff,
        ),
        timeout=_seconds(data.get("timeout_seconds")),
        overlap=Overlap(data.get("overlap") or Overlap.ALLOW),
        catch_up=CatchUp(
            CatchUpPolicy(data.get("catch_up") or CatchUpPolicy.ALL),
            _seconds(data.get("catch_up_window_seconds")),
        ),
    )


async def list_page(
    conn: Connection, job_id: JobId, *, limit: int, before: int | None = None
) -> list[Revision]:
    """A job's revisions newest first, from the primary key's order; `before` is the number
    of the last revision of the page before. The caller checks that the job is the
    caller's: this reads any job's history."""
    cursor = await conn.execute(
        """
        SELECT revision, spec, created_at FROM job_revisions
        WHERE job_id = %(job_id)s AND (%(before)s::integer IS NULL OR revision < %(before)s)
        ORDER BY revision DESC
        LIMIT %(limit)s
        """,
        {"job_id": job_id, "before": before, "limit": limit},
    )
    return [
        Revision(
            number=row["revision"], spec=spec_from_json(row["spec"]), created_at=row["created_at"]
        )
        for row in await cursor.fetchall()
    ]
