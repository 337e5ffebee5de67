"""A job row's task and retry columns as domain values: read back by `jobs` (the whole spec)
and by the claim in `runs` (what a worker needs to run an attempt), from the same columns."""

from __future__ import annotations

import json
from typing import Any

from hourglass import job_templates
from hourglass.domain import KubernetesJob, Resources, RetryPolicy, Task


def task(row: dict[str, Any]) -> Task:
    return Task(
        command=tuple(row["command"]),
        args=tuple(row["args"]),
        env=dict(row["env"]),
        image=row["image"],
        working_dir=row["working_dir"],
        binary=row["binary_digest"] or "",
        resources=Resources(**row["resources"]),
        secret_env=dict(row["secret_env"]),
        kubernetes=kubernetes(row["kubernetes"]),
    )


def kubernetes_json(value: KubernetesJob | None) -> dict[str, Any] | None:
    """The `kubernetes` column: the template as a JSON object, so that it can be queried."""
    if value is None:
        return None
    return {
        "jobTemplate": json.loads(value.job_template) if value.job_template else None,
        "namespace": value.namespace,
        "ownerName": value.owner_name,
        "ownerUid": value.owner_uid,
        "successfulJobsHistoryLimit": value.successful_jobs_history_limit,
        "failedJobsHistoryLimit": value.failed_jobs_history_limit,
    }


def kubernetes(column: dict[str, Any] | None) -> KubernetesJob | None:
    if column is None:
        return None
    template = column.get("jobTemplate")
    return KubernetesJob(
        job_template=job_templates.canonical(template) if template is not None else "",
        namespace=column.get("namespace") or "",
        owner_name=column.get("ownerName") or "",
        owner_uid=column.get("ownerUid") or "",
        successful_jobs_history_limit=column.get("successfulJobsHistoryLimit"),
        failed_jobs_history_limit=column.get("failedJobsHistoryLimit"),
    )


def retry(row: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(max_attempts=row["max_attempts"], backoff=row["retry_backoff"])
