"""A job row's task and retry columns as domain values: read back by `jobs` (the whole spec)
and by the claim in `runs` (what a worker needs to run an attempt), from the same columns."""

from __future__ import annotations

from typing import Any

from hourglass.domain import Resources, RetryPolicy, Task


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
    )


def retry(row: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(max_attempts=row["max_attempts"], backoff=row["retry_backoff"])
