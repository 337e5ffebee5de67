"""Between a ScheduledJob resource and the hourglass API: its spec as a JobSpec, a job's state
as the resource's status, and the runs that finished as Kubernetes events.

Plain functions on plain data, so that they can be tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import describe, durations, job_templates
from hourglass.v1 import scheduler_pb2 as pb

GROUP = "hourglass.io"
VERSION = "v1"
PLURAL = "scheduledjobs"
KIND = "ScheduledJob"

# The API's limit on a job's name (validation.MAX_NAME).
MAX_NAME = 253
# The API's default delay before the first retry (domain.RetryPolicy).
DEFAULT_BACKOFF = timedelta(seconds=1)

OVERLAPS = {
    "allow": pb.OVERLAP_POLICY_ALLOW,
    "skip": pb.OVERLAP_POLICY_SKIP,
    "buffer_one": pb.OVERLAP_POLICY_BUFFER_ONE,
    "replace": pb.OVERLAP_POLICY_REPLACE,
}
CATCH_UPS = {
    "all": pb.CATCH_UP_POLICY_ALL,
    "latest": pb.CATCH_UP_POLICY_LATEST,
    "skip": pb.CATCH_UP_POLICY_SKIP,
}
RESOURCE_FIELDS = {
    "cpuRequest": "cpu_request",
    "cpuLimit": "cpu_limit",
    "memoryRequest": "memory_request",
    "memoryLimit": "memory_limit",
}
HISTORY_FIELDS = {
    "successfulJobsHistoryLimit": "successful_jobs_history_limit",
    "failedJobsHistoryLimit": "failed_jobs_history_limit",
}
# Terminal run states, with the event each one is reported as: (type, reason).
RUN_EVENTS = {
    pb.RUN_STATE_SUCCEEDED: ("Normal", "RunSucceeded"),
    pb.RUN_STATE_FAILED: ("Warning", "RunFailed"),
    pb.RUN_STATE_TIMED_OUT: ("Warning", "RunTimedOut"),
    pb.RUN_STATE_CANCELLED: ("Normal", "RunCancelled"),
    pb.RUN_STATE_SKIPPED: ("Normal", "RunSkipped"),
}


class SpecError(ValueError):
    """A spec the CRD schema should have refused; names the field like the API does."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def request_id(uid: str, generation: int) -> str:
    """The idempotency key of ScheduleJob for one generation of one resource: a retried
    handler gets the job it created before instead of a second one."""
    return f"{uid}/{generation}"


def job_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"[:MAX_NAME]


def _duration(value: Any, field: str) -> Duration:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a duration string such as 30s, not {value!r}")
    try:
        delta = durations.parse(value)
    except ValueError as exc:
        raise SpecError(field, str(exc)) from None
    message = Duration()
    message.FromTimedelta(delta)
    return message


def _timestamp(value: Any, field: str) -> Timestamp:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise SpecError(field, f"{value!r} is not an RFC 3339 date-time") from None
    else:
        raise SpecError(field, f"must be an RFC 3339 date-time, not {value!r}")
    if moment.tzinfo is None:
        raise SpecError(field, f"{value!r} needs a time zone offset, e.g. Z or +01:00")
    message = Timestamp()
    message.FromDatetime(moment.astimezone(UTC))
    return message


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(field, "must be a list of strings")
    return list(value)


def _env(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(key): str(item) for key, item in value.items()}
    env: dict[str, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or not item.get("name"):
            raise SpecError(f"{field}[{index}].name", "is required")
        env[str(item["name"])] = str(item.get("value", ""))
    return env


def _schedule(value: Mapping[str, Any]) -> pb.Schedule:
    field = "spec.schedule"
    kinds = [kind for kind in ("at", "after", "cron", "every") if kind in value]
    if len(kinds) != 1:
        raise SpecError(field, "set exactly one of at, after, cron or every")
    schedule = pb.Schedule()
    match kinds[0]:
        case "at":
            schedule.at.CopyFrom(_timestamp(value["at"], f"{field}.at"))
        case "after":
            schedule.after.CopyFrom(_duration(value["after"], f"{field}.after"))
        case "cron":
            cron = value["cron"] or {}
            schedule.cron.expression = str(cron.get("expression", "")).strip()
            schedule.cron.time_zone = str(cron.get("timeZone", "")).strip()
        case "every":
            every = value["every"] or {}
            if "interval" not in every:
                raise SpecError(f"{field}.every.interval", "is required")
            schedule.every.interval.CopyFrom(
                _duration(every["interval"], f"{field}.every.interval")
            )
            if "jitter" in every:
                jitter = _duration(every["jitter"], f"{field}.every.jitter")
                if jitter.ToTimedelta():
                    schedule.every.jitter.CopyFrom(jitter)
    if "start" in value:
        schedule.start.CopyFrom(_timestamp(value["start"], f"{field}.start"))
    if "end" in value:
        schedule.end.CopyFrom(_timestamp(value["end"], f"{field}.end"))
    return schedule


def _task(value: Mapping[str, Any]) -> pb.Task:
    field = "spec.task"
    resources = value.get("resources") or {}
    return pb.Task(
        command=_strings(value.get("command"), f"{field}.command"),
        args=_strings(value.get("args"), f"{field}.args"),
        env=_env(value.get("env"), f"{field}.env"),
        image=str(value.get("image", "")),
        working_dir=str(value.get("workingDir", "")),
        binary=str(value.get("binary", "")),
        # Always present, as the API returns it, so that a stored spec compares equal.
        resources=pb.Resources(
            **{wire: str(resources.get(name, "")).strip() for name, wire in RESOURCE_FIELDS.items()}
        ),
    )


def _kubernetes(namespace: str, name: str, uid: str, spec: Mapping[str, Any]) -> pb.KubernetesJob:
    """Where the ScheduledJob's Jobs go (its namespace), who owns them (it), how they are
    shaped (its jobTemplate) and how many finished ones are kept."""
    message = pb.KubernetesJob(namespace=namespace)
    if uid:
        message.owner_name, message.owner_uid = name, uid
    template = spec.get("jobTemplate")
    if template is not None:
        if not isinstance(template, Mapping):
            raise SpecError("spec.jobTemplate", "must be a batch/v1 JobTemplateSpec")
        message.job_template = job_templates.canonical(template)
    for field, wire in HISTORY_FIELDS.items():
        if spec.get(field) is not None:
            setattr(message, wire, int(spec[field]))
    return message


def job_spec(namespace: str, name: str, spec: Mapping[str, Any], *, uid: str = "") -> pb.JobSpec:
    """The JobSpec that a ScheduledJob's spec asks for. Raises SpecError for what the CRD
    schema refuses anyway (a resource stored before the schema was installed, say); what
    only the API knows (a cron expression, a time zone, a job template's rules) is left to
    the API to judge. With the resource's `uid`, its Jobs run in its namespace, owned by it."""
    schedule = spec.get("schedule")
    if not isinstance(schedule, Mapping):
        raise SpecError("spec.schedule", "is required: set one of at, after, cron or every")
    task = spec.get("task")
    if task is None and spec.get("jobTemplate") is not None:
        task = {}
    if not isinstance(task, Mapping):
        raise SpecError("spec.task", "is required: give task.command, or a jobTemplate")
    message = pb.JobSpec(
        name=job_name(namespace, name),
        task=_task(task),
        schedule=_schedule(schedule),
        max_attempts=int(spec.get("maxAttempts", 1)),
    )
    if "timeout" in spec:
        message.timeout.CopyFrom(_duration(spec["timeout"], "spec.timeout"))
    message.retry_backoff.CopyFrom(
        _duration(spec["retryBackoff"], "spec.retryBackoff")
        if "retryBackoff" in spec
        else Duration(seconds=int(DEFAULT_BACKOFF.total_seconds()))
    )
    overlap = spec.get("overlap", "allow")
    if overlap not in OVERLAPS:
        raise SpecError("spec.overlap", f"unknown policy {overlap!r}: use {', '.join(OVERLAPS)}")
    message.overlap = OVERLAPS[overlap]
    catch_up = spec.get("catchUp") or {}
    policy = catch_up.get("policy", "all")
    if policy not in CATCH_UPS:
        raise SpecError(
            "spec.catchUp.policy", f"unknown policy {policy!r}: use {', '.join(CATCH_UPS)}"
        )
    message.catch_up.policy = CATCH_UPS[policy]
    if uid or spec.get("jobTemplate") is not None:
        message.task.kubernetes.CopyFrom(_kubernetes(namespace, name, uid, spec))
    if "window" in catch_up:
        message.catch_up.window.CopyFrom(_duration(catch_up["window"], "spec.catchUp.window"))
    return message


def same_spec(stored: pb.JobSpec, desired: pb.JobSpec) -> bool:
    """Whether the job already runs the desired spec, so that UpdateJob (which adds a
    revision and plans the next fire anew) can be skipped. `job_spec` fills in every default
    the API fills in, so equal messages mean equal specs; a difference the API would
    normalize away only costs one needless UpdateJob."""
    return stored == desired


def _rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _precise(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _when(message: Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def describe_schedule(schedule: pb.Schedule) -> str:
    """One line for the Schedule column: "every 30s", "cron 0 2 * * * (Europe/Berlin)"."""
    return describe.schedule(schedule, lambda message: _rfc3339(_when(message)))


def state_name(value: int, enum: str = "run") -> str:
    """RUN_STATE_TIMED_OUT -> "timed_out"; JOB_STATE_ACTIVE -> "active"."""
    return describe.state(value, enum)


def _exit_code(run: pb.Run) -> int | None:
    for attempt in reversed(run.attempts):
        if attempt.HasField("exit_code"):
            return attempt.exit_code
    return None


def run_status(run: pb.Run) -> dict[str, Any]:
    status: dict[str, Any] = {
        "id": run.id,
        "state": state_name(run.state),
        "scheduledAt": _rfc3339(_when(run.scheduled_at)),
        "attempt": run.attempt,
        "finishedAt": _rfc3339(_when(run.finished_at)) if run.HasField("finished_at") else None,
        "exitCode": _exit_code(run),
    }
    return status


def rfc3339(message: Timestamp) -> str:
    """A protobuf instant as the status writes it."""
    return _rfc3339(_when(message))


@dataclass(frozen=True)
class RunEvent:
    type: str  # Normal or Warning
    reason: str
    message: str


def _run_message(run: pb.Run) -> str:
    text = f"run {run.id} (fire of {_rfc3339(_when(run.scheduled_at))}) {state_name(run.state)}"
    if run.attempt > 1:
        text += f" after {run.attempt} attempts"
    code = _exit_code(run)
    if code is not None:
        text += f", exit code {code}"
    if run.reason:
        text += f": {run.reason}"
    elif run.attempts and run.attempts[-1].error:
        text += f": {run.attempts[-1].error}"
    return text


def run_message(run: pb.Run) -> str:
    """One finished run in words, for events and conditions."""
    return _run_message(run)


def finished_runs(runs: Iterable[pb.Run], since: str | None) -> tuple[list[RunEvent], str | None]:
    """Events for the runs that reached a terminal state after `since` (a watermark this
    function returned before, or None: every finished run), oldest first, and the new
    watermark."""
    after = datetime.fromisoformat(since) if since else None
    done = [
        run
        for run in runs
        if run.state in RUN_EVENTS
        and run.HasField("finished_at")
        and (after is None or _when(run.finished_at) > after)
    ]
    done.sort(key=lambda run: (_when(run.finished_at), run.id))
    events = [RunEvent(*RUN_EVENTS[run.state], _run_message(run)) for run in done]
    watermark = _precise(_when(done[-1].finished_at)) if done else since
    return events, watermark


def watermark(moment: Timestamp) -> str:
    return _precise(_when(moment))


def ready_condition(
    previous: Iterable[Mapping[str, Any]] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The conditions list with Ready set; lastTransitionTime changes only when the status
    does, so that a refresh that changes nothing writes nothing."""
    status = "True" if ready else "False"
    others: list[dict[str, Any]] = []
    since = _rfc3339((now or datetime.now(UTC)).replace(microsecond=0))
    for condition in previous or ():
        if condition.get("type") == "Ready":
            if condition.get("status") == status and condition.get("lastTransitionTime"):
                since = str(condition["lastTransitionTime"])
        else:
            others.append(dict(condition))
    ready_now = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    return [ready_now, *others]
