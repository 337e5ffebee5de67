"""Short human descriptions of API messages, shared by the CLI's tables and the operator's
status columns."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import durations
from hourglass.v1 import scheduler_pb2 as pb


def schedule(message: pb.Schedule, when: Callable[[Timestamp], str]) -> str:
    """One line: "every 30s (jitter 5s)", "cron 0 2 * * * (Europe/Berlin) from ..."."""
    kind = message.WhichOneof("kind")
    text = "-"
    if kind == "at":
        text = f"at {when(message.at)}"
    elif kind == "after":
        text = f"after {durations.format(message.after.ToTimedelta())}"
    elif kind == "cron":
        zone = f" ({message.cron.time_zone})" if message.cron.time_zone else ""
        text = f"cron {message.cron.expression}{zone}"
    elif kind == "every":
        text = f"every {durations.format(message.every.interval.ToTimedelta())}"
        if message.every.HasField("jitter"):
            text += f" (jitter {durations.format(message.every.jitter.ToTimedelta())})"
    if message.HasField("start"):
        text += f" from {when(message.start)}"
    if message.HasField("end"):
        text += f" until {when(message.end)}"
    return text


def state(value: int, enum: str = "run") -> str:
    """RUN_STATE_TIMED_OUT -> "timed_out"; JOB_STATE_ACTIVE -> "active"."""
    name = (pb.RunState if enum == "run" else pb.JobState).Name(value)
    return name.split("_STATE_", 1)[1].lower()
