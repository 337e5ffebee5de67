"""Forms to API requests, and the API's field-named errors back to the form's inputs.

The console checks almost nothing itself: it builds the request and lets the API judge it, so
a form shows the same "<field>: <reason>" the CLI prints, next to the input it is about.
Only what cannot even be put into a request (a duration or an instant that does not parse,
a command that is not shell words) is refused here, in the same words, naming the API's
field.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import durations
from hourglass.console.views import zone
from hourglass.v1 import scheduler_pb2 as pb

KINDS = ("every", "cron", "after", "at")
# API field (without "spec.") -> the form input it belongs to; the first prefix that matches.
_INPUTS = (
    ("schedule.cron.time_zone", "time_zone"),
    ("schedule", "schedule"),
    ("task", "command"),
    ("name", "name"),
    ("max_attempts", "max_attempts"),
    ("from", "from"),
    ("to", "to"),
)


class FormError(ValueError):
    """A value the console could not put into a request: the API field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def input_for(field: str) -> str:
    """The form input an API field path is about; "form" when none is."""
    bare = field.removeprefix("spec.")
    for prefix, name in _INPUTS:
        if bare == prefix or bare.startswith(prefix + ".") or bare.startswith(prefix + "["):
            return name
    return "form"


def parse_instant(text: str, field: str, zone_name: str = "") -> Timestamp:
    """An ISO instant; one without an offset is read in `zone_name` (UTC when empty)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FormError(field, f"{text!r} is not an instant such as 2026-01-31T09:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(zone_name))
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def schedule_request(form: Mapping[str, str]) -> pb.ScheduleJobRequest:
    """The request a "schedule a job" form asks for; FormError for what cannot be sent."""
    spec = pb.JobSpec(name=form.get("name", "").strip())
    try:
        spec.task.command.extend(shlex.split(form.get("command", "")))
    except ValueError as exc:
        raise FormError("spec.task.command", f"is not shell words: {exc}") from None
    kind = form.get("schedule_kind", "every")
    value = form.get("schedule", "").strip()
    if kind not in KINDS:
        raise FormError("spec.schedule", f"kind must be one of {', '.join(KINDS)}")
    if kind == "cron":
        spec.schedule.cron.expression = value
        spec.schedule.cron.time_zone = form.get("time_zone", "").strip()
    elif kind == "at":
        spec.schedule.at.CopyFrom(
            parse_instant(value, "spec.schedule.at", form.get("time_zone", ""))
        )
    else:
        try:
            delta = durations.parse(value)
        except (ValueError, OverflowError) as exc:
            field = "spec.schedule.every.interval" if kind == "every" else "spec.schedule.after"
            raise FormError(field, str(exc) or f"{value!r} is not a duration") from None
        if kind == "every":
            spec.schedule.every.interval.FromTimedelta(delta)
        else:
            spec.schedule.after.FromTimedelta(delta)
    attempts = form.get("max_attempts", "").strip()
    if attempts:
        try:
            number = int(attempts)
        except ValueError:
            raise FormError("spec.max_attempts", f"{attempts!r} is not a number") from None
        if not 0 <= number < 2**31:
            raise FormError("spec.max_attempts", "must be between 1 and 100 (0 means 1)")
        spec.max_attempts = number
    # One request id per submitted form: a double click schedules one job.
    request_id = form.get("request_id", "") or str(uuid.uuid4())
    return pb.ScheduleJobRequest(request_id=request_id, spec=spec)


def backfill_request(job_id: str, form: Mapping[str, str], zone_name: str) -> pb.BackfillRequest:
    request = pb.BackfillRequest(job_id=job_id)
    for name in ("from", "to"):
        text = form.get(name, "").strip()
        if text:
            getattr(request, name).CopyFrom(parse_instant(text, name, zone_name))
    return request
