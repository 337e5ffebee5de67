"""A job's row, both ways: the columns a spec is stored in (and the JSON document of its
revision), and a row read back as a Job. `jobs` stores whole specs; the claim in `runs` reads
only the task and retry columns a worker needs to run an attempt; `job_batch` writes the same
documents in bulk. One module, so that what is written and what is read cannot drift apart."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hourglass import job_templates
from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    Job,
    JobId,
    JobSpec,
    JobState,
    KubernetesJob,
    Overlap,
    Resources,
    RetryPolicy,
    Task,
)
from hourglass.schedules import After, At, Bounds, Cron, Every, Schedule


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


def schedule_to_json(schedule: Schedule, bounds: Bounds | None = None) -> dict[str, Any]:
    bounds = bounds or Bounds()
    data: dict[str, Any]
    match schedule:
        case At(at=at):
            data = {"kind": "at", "at": at.isoformat()}
        case After(delay=delay):
            data = {"kind": "after", "delay_seconds": delay.total_seconds()}
        case Cron(expression=expression, time_zone=time_zone):
            data = {"kind": "cron", "expression": expression, "time_zone": time_zone}
        case Every(interval=interval, jitter=jitter):
            data = {
                "kind": "every",
                "interval_seconds": interval.total_seconds(),
                "jitter_seconds": jitter.total_seconds(),
            }
    if bounds.start:
        data["start"] = bounds.start.isoformat()
    if bounds.end:
        data["end"] = bounds.end.isoformat()
    return data


def schedule_from_json(data: dict[str, Any]) -> tuple[Schedule, Bounds]:
    schedule: Schedule
    match data["kind"]:
        case "at":
            schedule = At(datetime.fromisoformat(data["at"]))
        case "after":
            schedule = After(timedelta(seconds=data["delay_seconds"]))
        case "cron":
            schedule = Cron(data["expression"], data["time_zone"])
        case "every":
            schedule = Every(
                timedelta(seconds=data["interval_seconds"]),
                timedelta(seconds=data.get("jitter_seconds", 0)),
            )
        case kind:
            raise ValueError(f"unknown schedule kind {kind!r}")
    bounds = Bounds(
        start=datetime.fromisoformat(data["start"]) if data.get("start") else None,
        end=datetime.fromisoformat(data["end"]) if data.get("end") else None,
    )
    return schedule, bounds


def _spec(row: dict[str, Any]) -> JobSpec:
    schedule, bounds = schedule_from_json(row["schedule"])
    return JobSpec(
        name=row["name"],
        task=task(row),
        schedule=schedule,
        bounds=bounds,
        retry=retry(row),
        timeout=row["timeout"],
        overlap=Overlap(row["overlap"]),
        catch_up=CatchUp(CatchUpPolicy(row["catch_up"]), row["catch_up_window"]),
    )


def from_row(row: dict[str, Any]) -> Job:
    """A job from its row of the jobs table."""
    return Job(
        id=JobId(row["id"]),
        spec=_spec(row),
        state=JobState(row["state"]),
        next_fire_at=row["next_fire_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        missed_fires=row["missed_fires"],
        revision=row["revision"],
        namespace=row["namespace"],
        managed_by=row["managed_by"],
    )


def spec_params(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "command": list(spec.task.command),
        "args": list(spec.task.args),
        "env": Jsonb(spec.task.env),
        "image": spec.task.image,
        "working_dir": spec.task.working_dir,
        "binary": spec.task.binary or None,
        "resources": Jsonb(resources_json(spec.task.resources)),
        "secret_env": Jsonb(spec.task.secret_env),
        "kubernetes": _kubernetes(spec),
        "schedule": Jsonb(schedule_to_json(spec.schedule, spec.bounds)),
        "max_attempts": spec.retry.max_attempts,
        "backoff": spec.retry.backoff,
        "timeout": spec.timeout,
        "overlap": spec.overlap.value,
        "catch_up": spec.catch_up.policy.value,
        "catch_up_window": spec.catch_up.window,
    }


def _kubernetes(spec: JobSpec) -> Jsonb | None:
    column = kubernetes_json(spec.task.kubernetes)
    return None if column is None else Jsonb(column)


# Resources' fields, read once: dataclasses.asdict deep-copied every value, a fifth of
# ScheduleJobs' time per job (docs/benchmarks.md).
_RESOURCE_FIELDS = tuple(field.name for field in dataclasses.fields(Resources))


def resources_json(resources: Resources) -> dict[str, str]:
    return {name: value for name in _RESOURCE_FIELDS if (value := getattr(resources, name))}


def spec_json(spec: JobSpec, params: dict[str, Any] | None = None) -> Jsonb:
    """A job revision as stored in job_revisions: the spec columns, as JSON. `params`:
    spec_params(spec), when the caller has it already."""
    params = params if params is not None else spec_params(spec)
    return Jsonb(
        {
            **{k: v for k, v in params.items() if not isinstance(v, Jsonb | timedelta)},
            "env": spec.task.env,
            "resources": params["resources"].obj,
            # The names only: a secret's value is never kept in the history.
            "secret_env": sorted(spec.task.secret_env),
            # The template holds references to Secrets, never their values.
            "kubernetes": params["kubernetes"].obj if params["kubernetes"] else None,
            "schedule": params["schedule"].obj,
            "retry_backoff_seconds": spec.retry.backoff.total_seconds(),
            "timeout_seconds": spec.timeout.total_seconds() if spec.timeout else None,
            "catch_up_window_seconds": (
                spec.catch_up.window.total_seconds() if spec.catch_up.window else None
            ),
        }
    )
