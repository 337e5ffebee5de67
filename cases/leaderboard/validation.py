"""Turns Leaderboard requests into plain values, or says which field is wrong and why.

Every check raises Invalid("<field path>", "<reason>"); the gRPC service answers it with
INVALID_ARGUMENT and "<field path>: <reason>", the HTTP face with 400 and a JSON body naming
the field, before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Invalid as Invalid
from hourglass.cases.leaderboard import buckets
from hourglass.cases.leaderboard.board import MAX_AHEAD, Batch, digest
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb

MAX_EVENTS = 10_000
MAX_KEY_BYTES = 256
MAX_BATCH_ID = 128
MAX_WEIGHT = 1_000_000_000
MAX_K = 1000
# 0001-01-01 .. 9999-12-31, as google.protobuf.Timestamp allows.
MIN_SECONDS, MAX_SECONDS = -62135596800, 253402300799

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Window:
    event_type: str
    k: int
    start: int
    end: int


def event_type(value: str, field: str = "event_type") -> str:
    if not value:
        raise Invalid(field, "is required")
    if not _EVENT_TYPE.fullmatch(value):
        raise Invalid(field, "must be 1 to 64 of A-Z a-z 0-9 _ . : -")
    return value


def seconds(stamp: Timestamp, field: str) -> int:
    if not MIN_SECONDS <= stamp.seconds <= MAX_SECONDS:
        raise Invalid(field, "is out of range (years 1 to 9999)")
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise Invalid(f"{field}.nanos", "must be in [0, 999999999]")
    return int(stamp.seconds)


def record(request: pb.RecordEventsRequest, *, now: int, horizon: int) -> Batch:
    """A batch to count; events must fall in [horizon, now + 1h)."""
    batch_id = request.batch_id
    if not batch_id:
        raise Invalid("batch_id", "is required (an idempotency key, unique per batch)")
    if len(batch_id) > MAX_BATCH_ID:
        raise Invalid("batch_id", f"must be at most {MAX_BATCH_ID} characters")
    if _CONTROL.search(batch_id):
        raise Invalid("batch_id", "must not contain control characters")
    kind = event_type(request.event_type)
    if not request.events:
        raise Invalid("events", "give at least one event")
    if len(request.events) > MAX_EVENTS:
        raise Invalid("events", f"at most {MAX_EVENTS} events per batch")
    latest = now + MAX_AHEAD
    events: list[tuple[str, int, int]] = []
    append = events.append
    for i, event in enumerate(request.events):
        key = event.key
        weight = event.weight or 1
        stamp = event.timestamp
        instant = stamp.seconds
        # The common case in one test; the precise reason only when something is off.
        if (
            not key
            or (len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES)
            or "\0" in key
            or not 0 < weight <= MAX_WEIGHT
            or not horizon <= instant < latest
            or not 0 <= stamp.nanos < 1_000_000_000
        ):
            _explain(i, event, now=now, horizon=horizon)
        append((key, weight, instant))
    return Batch(
        batch_id=batch_id,
        event_type=kind,
        events=events,
        digest=digest(batch_id, kind, events),
    )


def _explain(i: int, event: pb.Event, *, now: int, horizon: int) -> None:
    field = f"events[{i}]"
    if not event.key:
        raise Invalid(f"{field}.key", "is required")
    if len(event.key.encode()) > MAX_KEY_BYTES:
        raise Invalid(f"{field}.key", f"must be at most {MAX_KEY_BYTES} bytes of UTF-8")
    if "\0" in event.key:
        raise Invalid(f"{field}.key", "must not contain NUL")
    if not 0 <= event.weight <= MAX_WEIGHT:
        raise Invalid(f"{field}.weight", f"must be between 1 and {MAX_WEIGHT} (0 means 1)")
    if not event.HasField("timestamp"):
        raise Invalid(f"{field}.timestamp", "is required")
    instant = seconds(event.timestamp, f"{field}.timestamp")
    if instant < horizon:
        raise Invalid(
            f"{field}.timestamp",
            f"is older than the retention (events before {_iso(horizon)} no longer count)",
        )
    if instant >= now + MAX_AHEAD:
        raise Invalid(f"{field}.timestamp", "is more than an hour ahead of the server's clock")
    raise AssertionError(f"{field}: refused for no reason")  # pragma: no cover


def window(
    *, event_type_: str, k: int, start: int, end: int, smallest: int, type_field: str = "event_type"
) -> Window:
    kind = event_type(event_type_, type_field)
    if not 1 <= k <= MAX_K:
        raise Invalid("k", f"must be between 1 and {MAX_K}")
    name = buckets.spell(smallest)
    if start % smallest:
        raise Invalid("start", f"must be aligned to the smallest bucket ({name})")
    if end % smallest:
        raise Invalid("end", f"must be aligned to the smallest bucket ({name})")
    if end <= start:
        raise Invalid("end", "must be after start")
    return Window(kind, k, start, end)


def fetch(request: pb.FetchLeaderboardRequest, *, smallest: int) -> Window:
    if not request.HasField("start"):
        raise Invalid("start", "is required")
    if not request.HasField("end"):
        raise Invalid("end", "is required")
    start = seconds(request.start, "start")
    end = seconds(request.end, "end")
    if request.start.nanos:
        raise Invalid(
            "start", f"must be aligned to the smallest bucket ({buckets.spell(smallest)})"
        )
    if request.end.nanos:
        raise Invalid("end", f"must be aligned to the smallest bucket ({buckets.spell(smallest)})")
    return window(
        event_type_=request.event_type, k=request.k, start=start, end=end, smallest=smallest
    )


def _iso(instant: int) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat().replace("+00:00", "Z")
