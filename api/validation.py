"""Turns requests into domain values, or says which field is wrong and why.

Every check raises Invalid("<field path>", "<reason>"); the service answers it with
INVALID_ARGUMENT and the message "<field path>: <reason>", before anything is stored.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import ids, limits, schedules
from hourglass.api import convert, kube_task
from hourglass.artifacts import parse_digest
from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobId,
    JobSpec,
    Overlap,
    Resources,
    RetryPolicy,
    RunId,
    Task,
)
from hourglass.job_templates import TemplateError
from hourglass.schedules import After, At, Bounds, Cron, Every, Schedule
from hourglass.v1 import scheduler_pb2 as pb

MAX_NAME = 253
MAX_ARGV_ITEMS = 1024
MAX_ARGV_BYTES = 128 * 1024
MAX_ENV_ITEMS = 256
MAX_ENV_BYTES = 64 * 1024
MAX_REQUEST_ID = 256
MAX_ATTEMPTS = limits.MAX_ATTEMPTS
MAX_TIMEOUT = limits.MAX_TIMEOUT
MAX_BACKOFF = limits.MAX_BACKOFF
MAX_INTERVAL = limits.MAX_INTERVAL
# image and working_dir
MAX_TEXT = 4096
MAX_CRON_EXPRESSION = 1024
MAX_TIME_ZONE = 64
MAX_QUANTITY = 64
# Instants a request may name: from the Unix epoch to the year 9000. Later ones leave no room
# for the date arithmetic of fire times (Python's datetime ends with the year 9999).
EARLIEST = limits.EARLIEST
LATEST = limits.LATEST
MAX_DURATION_SECONDS = limits.MAX_DURATION_SECONDS
_MAX_NANOS = 999_999_999
# Computed once, not per timestamp of every request.
_EARLIEST_SECONDS = EARLIEST.timestamp()
_LATEST_SECONDS = LATEST.timestamp()
_DEFAULT_BACKOFF = RetryPolicy().backoff
_NO_RESOURCES = Resources()
# "sha256:" and 64 hex digits; anything much longer is not worth quoting back.
_MAX_DIGEST = 80


# A Kubernetes resource quantity: a number with an optional SI or binary suffix. ASCII digits
# only: \d alone would take any Unicode digit.
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", re.ASCII)


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


def id_range(value: str, field: str = "id_prefix") -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids a prefix filter spans; None when the filter is not given."""
    if not value:
        return None
    problem = ids.prefix_problem(value)
    if problem is not None:
        raise Invalid(field, f"{value[:64]!r} {problem}")
    return ids.prefix_range(value)


def name_filter(value: str, field: str = "name") -> str | None:
    if len(value) > MAX_NAME:
        raise Invalid(field, f"must be at most {MAX_NAME} characters")
    return value or None


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if value < 0:
        raise Invalid(field, "must not be negative")
    if value > maximum:
        raise Invalid(field, f"must be at most {maximum}")
    return value or default


def _duration(message: Duration, field: str) -> timedelta:
    if not -MAX_DURATION_SECONDS <= message.seconds <= MAX_DURATION_SECONDS:
        raise Invalid(field, "is out of range: at most 10000 years either way")
    if not -_MAX_NANOS <= message.nanos <= _MAX_NANOS:
        raise Invalid(f"{field}.nanos", f"must be between -{_MAX_NANOS} and {_MAX_NANOS}")
    if message.nanos and (message.seconds < 0) != (message.nanos < 0) and message.seconds:
        raise Invalid(field, "seconds and nanos must have the same sign")
    return message.ToTimedelta()


def timestamp(message: Timestamp, field: str) -> datetime:
    """An instant of a request, between EARLIEST and LATEST."""
    if not 0 <= message.nanos <= _MAX_NANOS:
        raise Invalid(f"{field}.nanos", f"must be between 0 and {_MAX_NANOS}")
    if not _EARLIEST_SECONDS <= message.seconds < _LATEST_SECONDS:
        raise Invalid(
            field,
            f"must be from {EARLIEST:%Y-%m-%dT%H:%M:%SZ} up to {LATEST:%Y-%m-%dT%H:%M:%SZ}",
        )
    return convert.from_timestamp(message)


def _text(value: str, field: str, maximum: int) -> str:
    """A string that is stored as it is: bounded, and without NUL (PostgreSQL refuses it)."""
    if len(value) > maximum:
        raise Invalid(field, f"must be at most {maximum} characters")
    if "\x00" in value:
        raise Invalid(field, "must not contain NUL characters")
    return value


def map_key(name: str) -> str:
    """A map key as a field path shows it: quoted, and cut short when long."""
    return repr(name[:64])


def _task(message: pb.Task) -> Task:
    """Each field is read from the message once: a protobuf container read again costs a new
    wrapper, and a map's items() goes through Python (a third of ScheduleJobs' validation)."""
    field = "spec.task"
    command, args = tuple(message.command), tuple(message.args)
    env, secret_env = dict(message.env), dict(message.secret_env)
    binary = ""
    if message.binary:
        if len(message.binary) > _MAX_DIGEST:
            raise Invalid(f"{field}.binary", "is not a digest: expected 'sha256:<64 hex digits>'")
        try:
            binary = parse_digest(message.binary)
        except ValueError as exc:
            raise Invalid(f"{field}.binary", str(exc)) from None
        if command:
            raise Invalid(
                f"{field}.command", "must be empty with a binary: pass its arguments as args"
            )
    elif not command and not message.kubernetes.job_template:
        raise Invalid(
            f"{field}.command",
            "is required: give the program to run (or a binary, or a Kubernetes job template)",
        )
    elif command and not command[0].strip():
        raise Invalid(f"{field}.command[0]", "must not be empty")
    argv = command + args
    if len(argv) > MAX_ARGV_ITEMS:
        raise Invalid(
            f"{field}.args", f"command and args have {len(argv)} items; at most {MAX_ARGV_ITEMS}"
        )
    joined = "".join(argv)
    if "\x00" in joined:
        for name, items in (("command", command), ("args", args)):
            for index, item in enumerate(items):
                if "\x00" in item:
                    raise Invalid(f"{field}.{name}[{index}]", "must not contain NUL characters")
    # UTF-8 is concatenative: the bytes of the whole are the sum of the items' bytes.
    if len(joined.encode()) > MAX_ARGV_BYTES:
        raise Invalid(f"{field}.args", f"command and args exceed {MAX_ARGV_BYTES} bytes")
    _variables(env, f"{field}.env", too_many=f"has {len(env)} variables; at most {MAX_ENV_ITEMS}")
    _variables(
        secret_env,
        f"{field}.secret_env",
        too_many=f"has more than {MAX_ENV_ITEMS} variables",
        also_in=env,
    )
    kubernetes = None
    if message.HasField("kubernetes"):
        try:
            kubernetes = kube_task.kubernetes(message, field)
        except TemplateError as error:
            raise Invalid(error.field, error.reason) from None
    resources = _NO_RESOURCES
    if message.HasField("resources"):
        values = {}
        for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            value = getattr(message.resources, name).strip()
            if len(value) > MAX_QUANTITY:
                raise Invalid(
                    f"{field}.resources.{name}", f"must be at most {MAX_QUANTITY} characters"
                )
            if value and not _QUANTITY.fullmatch(value):
                raise Invalid(
                    f"{field}.resources.{name}",
                    f"{value[:32]!r} is not a Kubernetes quantity (e.g. 250m, 1, 512Mi, 2Gi)",
                )
            values[name] = value
        resources = Resources(**values)
    return Task(
        command=command,
        args=args,
        env=env,
        image=_text(message.image, f"{field}.image", MAX_TEXT),
        working_dir=_text(message.working_dir, f"{field}.working_dir", MAX_TEXT),
        binary=binary,
        resources=resources,
        secret_env=secret_env,
        kubernetes=kubernetes,
    )


def _variables(
    variables: dict[str, str], field: str, *, too_many: str, also_in: dict[str, str] | None = None
) -> None:
    """env's rules (secret_env's too, where a name must not be in env as well): bounded,
    names without '=' or NUL, values without NUL. The reasons never quote a value."""
    if not variables:
        return
    if len(variables) > MAX_ENV_ITEMS:
        raise Invalid(field, too_many)
    for key, value in variables.items():
        if not key or "=" in key or "\x00" in key:
            raise Invalid(
                f"{field}[{map_key(key)}]", "a variable name must be non-empty, without '=' or NUL"
            )
        if "\x00" in value:
            raise Invalid(f"{field}[{map_key(key)}]", "must not contain NUL characters")
        if also_in is not None and key in also_in:
            raise Invalid(f"{field}[{map_key(key)}]", "is also in env; give it once")
    if sum(len(k.encode()) + len(v.encode()) for k, v in variables.items()) > MAX_ENV_BYTES:
        raise Invalid(field, f"exceeds {MAX_ENV_BYTES} bytes")


def _schedule(message: pb.Schedule, *, now: datetime) -> tuple[Schedule, Bounds]:
    kind = message.WhichOneof("kind")
    field = "spec.schedule"
    schedule: Schedule
    match kind:
        case None:
            raise Invalid(field, "is required: set one of at, after, cron or every")
        case "at":
            schedule = At(timestamp(message.at, f"{field}.at"))
        case "after":
            schedule = After(_duration(message.after, f"{field}.after"))
        case "cron":
            expression = message.cron.expression.strip()
            if not expression:
                raise Invalid(f"{field}.cron.expression", "is required")
            _text(expression, f"{field}.cron.expression", MAX_CRON_EXPRESSION)
            zone = message.cron.time_zone.strip()
            _time_zone(zone, f"{field}.cron.time_zone")
            schedule = Cron(expression, zone)
        case "every":
            if not message.every.HasField("interval"):
                raise Invalid(f"{field}.every.interval", "is required")
            schedule = Every(
                _duration(message.every.interval, f"{field}.every.interval"),
                _duration(message.every.jitter, f"{field}.every.jitter"),
            )
            if schedule.interval > MAX_INTERVAL:
                raise Invalid(f"{field}.every.interval", "must be at most ten years")
        case _:
            raise Invalid(field, f"unknown kind {kind!r}")
    bounds = Bounds(
        start=timestamp(message.start, f"{field}.start") if message.HasField("start") else None,
        end=timestamp(message.end, f"{field}.end") if message.HasField("end") else None,
    )
    try:
        schedules.validate(schedule, now=now)
        schedules.validate_bounds(schedule, bounds)
    except ValueError as exc:
        path, _, reason = str(exc).partition(": ")
        raise Invalid(f"spec.{path}", reason) from None
    return schedule, bounds


def _time_zone(name: str, field: str) -> None:
    """An IANA name that zoneinfo can load. It may raise more than ZoneInfoNotFoundError: a
    directory ("America") or a name too long for the file system is an OSError."""
    if name in ("", "UTC"):
        return
    try:
        if len(name) > MAX_TIME_ZONE:
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(field, f"unknown IANA time zone {name[:MAX_TIME_ZONE]!r}") from None


_OVERLAPS = {v: k for k, v in convert.OVERLAPS.items()}
_CATCH_UPS = {v: k for k, v in convert.CATCH_UPS.items()}


def job_spec(message: pb.JobSpec, *, now: datetime) -> JobSpec:
    _text(message.name, "spec.name", MAX_NAME)
    if not message.HasField("task"):
        raise Invalid("spec.task", "is required: give at least task.command")
    task = _task(message.task)
    if not message.HasField("schedule"):
        raise Invalid("spec.schedule", "is required: set one of at, after, cron or every")
    schedule, bounds = _schedule(message.schedule, now=now)
    if not 0 <= message.max_attempts <= MAX_ATTEMPTS:
        raise Invalid("spec.max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 means 1)")
    timeout = None
    if message.HasField("timeout"):
        timeout = _duration(message.timeout, "spec.timeout")
        if timeout <= timedelta(0):
            raise Invalid("spec.timeout", "must be positive")
        if timeout > MAX_TIMEOUT:
            raise Invalid("spec.timeout", f"must be at most {MAX_TIMEOUT.days} days")
    backoff = _DEFAULT_BACKOFF
    if message.HasField("retry_backoff"):
        backoff = _duration(message.retry_backoff, "spec.retry_backoff")
        if not timedelta(0) <= backoff <= MAX_BACKOFF:
            raise Invalid("spec.retry_backoff", "must be between 0s and 1h")
    if message.overlap and message.overlap not in _OVERLAPS:
        raise Invalid("spec.overlap", f"unknown overlap policy {message.overlap}")
    if message.catch_up.policy and message.catch_up.policy not in _CATCH_UPS:
        raise Invalid("spec.catch_up.policy", f"unknown catch-up policy {message.catch_up.policy}")
    window = None
    if message.catch_up.HasField("window"):
        window = _duration(message.catch_up.window, "spec.catch_up.window")
        if window <= timedelta(0):
            raise Invalid("spec.catch_up.window", "must be positive")
    name = message.name or (task.command[0].rsplit("/", 1)[-1] if task.command else "binary")
    name = name[:MAX_NAME]
    return JobSpec(
        name=name,
        task=task,
        schedule=schedule,
        bounds=bounds,
        retry=RetryPolicy(max_attempts=message.max_attempts or 1, backoff=backoff),
        timeout=timeout,
        overlap=_OVERLAPS.get(message.overlap, Overlap.ALLOW),
        catch_up=CatchUp(_CATCH_UPS.get(message.catch_up.policy, CatchUpPolicy.ALL), window),
    )


def request_id(value: str) -> str:
    return _text(value, "request_id", MAX_REQUEST_ID)


def manager(value: str, field: str = "manager") -> str:
    """A manager's name (ScheduleJobRequest.managed_by, and the requests that change a job)."""
    return _text(value, field, MAX_NAME)


def run_id(value: str) -> RunId:
    if not value:
        raise Invalid("run_id", "is required")
    try:
        return RunId(uuid.UUID(value))
    except ValueError:
        raise Invalid("run_id", f"{value[:64]!r} is not a run id (a UUID)") from None


def time_range(
    start: Timestamp, end: Timestamp, *, has_start: bool, has_end: bool
) -> tuple[datetime, datetime]:
    if not has_start:
        raise Invalid("from", "is required")
    if not has_end:
        raise Invalid("to", "is required")
    first, last = timestamp(start, "from"), timestamp(end, "to")
    if last < first:
        raise Invalid("to", "must not be before from")
    return first, last
