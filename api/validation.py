"""Turns requests into domain values, or says which field is wrong and why.

Every check raises Invalid("<field path>", "<reason>"); the service answers it with
INVALID_ARGUMENT and the message "<field path>: <reason>", before anything is stored.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from hourglass import schedules
from hourglass.api import convert
from hourglass.domain import JobId, JobSpec, RetryPolicy, Task
from hourglass.schedules import After, At, Cron, Every, Schedule
from hourglass.v1 import scheduler_pb2 as pb

MAX_NAME = 253
MAX_ARGV_ITEMS = 1024
MAX_ARGV_BYTES = 128 * 1024
MAX_ENV_ITEMS = 256
MAX_ENV_BYTES = 64 * 1024
MAX_REQUEST_ID = 256
MAX_ATTEMPTS = 100
MAX_TIMEOUT = timedelta(days=7)
MAX_BACKOFF = timedelta(hours=1)


class Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def job_id(value: str, field: str = "job_id") -> JobId:
    if not value:
        raise Invalid(field, "is required")
    try:
        return JobId(uuid.UUID(value))
    except ValueError:
        raise Invalid(field, f"{value[:64]!r} is not a job id (a UUID)") from None


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if value < 0:
        raise Invalid(field, "must not be negative")
    if value > maximum:
        raise Invalid(field, f"must be at most {maximum}")
    return value or default


def _duration(message: Duration, field: str) -> timedelta:
    if message.nanos and (message.seconds < 0) != (message.nanos < 0) and message.seconds:
        raise Invalid(field, "seconds and nanos must have the same sign")
    return message.ToTimedelta()


def _task(message: pb.Task) -> Task:
    if not message.command:
        raise Invalid("task.command", "is required: give the program to run")
    if not message.command[0].strip():
        raise Invalid("task.command[0]", "must not be empty")
    argv = [*message.command, *message.args]
    if len(argv) > MAX_ARGV_ITEMS:
        raise Invalid(
            "task.args", f"command and args have {len(argv)} items; at most {MAX_ARGV_ITEMS}"
        )
    for name, items in (("task.command", message.command), ("task.args", message.args)):
        for index, item in enumerate(items):
            if "\x00" in item:
                raise Invalid(f"{name}[{index}]", "must not contain NUL characters")
    if sum(len(item.encode()) for item in argv) > MAX_ARGV_BYTES:
        raise Invalid("task.args", f"command and args exceed {MAX_ARGV_BYTES} bytes")
    if len(message.env) > MAX_ENV_ITEMS:
        raise Invalid("task.env", f"has {len(message.env)} variables; at most {MAX_ENV_ITEMS}")
    for key, value in message.env.items():
        if not key or "=" in key or "\x00" in key:
            raise Invalid(f"task.env[{key!r}]", "a variable name must be non-empty, without '='")
        if "\x00" in value:
            raise Invalid(f"task.env[{key!r}]", "must not contain NUL characters")
    if sum(len(k.encode()) + len(v.encode()) for k, v in message.env.items()) > MAX_ENV_BYTES:
        raise Invalid("task.env", f"exceeds {MAX_ENV_BYTES} bytes")
    return Task(
        command=tuple(message.command),
        args=tuple(message.args),
        env=dict(message.env),
        image=message.image,
        working_dir=message.working_dir,
    )


def _schedule(message: pb.Schedule, *, now: datetime) -> Schedule:
    kind = message.WhichOneof("kind")
    schedule: Schedule
    match kind:
        case None:
            raise Invalid("schedule", "is required: set one of at, after, cron or every")
        case "at":
            schedule = At(convert.from_timestamp(message.at))
        case "after":
            schedule = After(_duration(message.after, "schedule.after"))
        case "cron":
            if not message.cron.expression.strip():
                raise Invalid("schedule.cron.expression", "is required")
            schedule = Cron(message.cron.expression.strip(), message.cron.time_zone.strip())
        case "every":
            if not message.every.HasField("interval"):
                raise Invalid("schedule.every.interval", "is required")
            schedule = Every(_duration(message.every.interval, "schedule.every.interval"))
        case _:
            raise Invalid("schedule", f"unknown kind {kind!r}")
    try:
        schedules.validate(schedule, now=now)
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise Invalid(field, reason) from None
    return schedule


def job_spec(request: pb.ScheduleJobRequest, *, now: datetime) -> JobSpec:
    if len(request.request_id) > MAX_REQUEST_ID:
        raise Invalid("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    if len(request.name) > MAX_NAME:
        raise Invalid("name", f"must be at most {MAX_NAME} characters")
    if not request.HasField("task"):
        raise Invalid("task", "is required: give at least task.command")
    task = _task(request.task)
    if not request.HasField("schedule"):
        raise Invalid("schedule", "is required: set one of at, after, cron or every")
    schedule = _schedule(request.schedule, now=now)
    if not 0 <= request.max_attempts <= MAX_ATTEMPTS:
        raise Invalid("max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 means 1)")
    timeout = None
    if request.HasField("timeout"):
        timeout = _duration(request.timeout, "timeout")
        if timeout <= timedelta(0):
            raise Invalid("timeout", "must be positive")
        if timeout > MAX_TIMEOUT:
            raise Invalid("timeout", f"must be at most {MAX_TIMEOUT.days} days")
    backoff = RetryPolicy().backoff
    if request.HasField("retry_backoff"):
        backoff = _duration(request.retry_backoff, "retry_backoff")
        if not timedelta(0) <= backoff <= MAX_BACKOFF:
            raise Invalid("retry_backoff", "must be between 0s and 1h")
    return JobSpec(
        name=request.name or task.command[0].rsplit("/", 1)[-1],
        task=task,
        schedule=schedule,
        retry=RetryPolicy(max_attempts=request.max_attempts or 1, backoff=backoff),
        timeout=timeout,
    )
