"""Checks of everything a sender gives, before anything is stored: pure, so each rule has a
unit test, and the gRPC and HTTP faces refuse the same things with the same words.

A batch is refused whole ("<field>: <reason>", the field spelled as the request spells it,
e.g. `series[3].values[17]`): a sender learns what to fix, and nothing of a refused batch is
stored. Checks per point run in C where they can (min/max of a list, `all(map(isfinite))`),
because they sit on the ingest path of every point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hourglass.cases import Invalid

MAX_POINTS = 100_000  # per batch
MAX_LINES = 10_000
MAX_LINE_BYTES = 64 * 1024
MAX_LABELS = 32
MAX_NAME = 128
MAX_VALUE = 2048
FUTURE_MS = 10 * 60 * 1000  # a point may be this far ahead of the server's clock
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

__all__ = ["Invalid", "Labels", "canonical", "check_labels", "check_logs", "check_points"]

Labels = tuple[tuple[str, str], ...]


def check_labels(labels: Sequence[tuple[str, str]], where: str) -> Labels:
    """The labels sorted by name (one series, however the sender ordered them)."""
    if not labels:
        raise Invalid(f"{where}.labels", "a series needs at least one label")
    if len(labels) > MAX_LABELS:
        raise Invalid(f"{where}.labels", f"at most {MAX_LABELS} labels")
    seen: set[str] = set()
    for index, (name, value) in enumerate(labels):
        field = f"{where}.labels[{index}]"
        if not LABEL_NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise Invalid(
                f"{field}.name",
                f"{name[:MAX_NAME]!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*,"
                f" at most {MAX_NAME} bytes)",
            )
        if name.startswith("__") and name != "__name__":
            raise Invalid(f"{field}.name", f"{name!r}: names starting with __ are reserved")
        if name in seen:
            raise Invalid(f"{field}.name", f"{name!r} appears twice")
        seen.add(name)
        if not value:
            raise Invalid(f"{field}.value", "must not be empty (leave the label out)")
        if len(value.encode()) > MAX_VALUE:
            raise Invalid(f"{field}.value", f"at most {MAX_VALUE} bytes")
        if "\0" in value:
            raise Invalid(f"{field}.value", "must not contain NUL")
        if name == "__name__" and not METRIC_NAME.fullmatch(value):
            raise Invalid(
                f"{field}.value", f"{value!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
            )
    return tuple(sorted((name, value) for name, value in labels))


def canonical(labels: Labels) -> str:
    """One spelling per label set: the key of the series in the label index."""
    return "{" + ",".join(f"{name}={value!r}" for name, value in labels) + "}"


def _times(stamps: Sequence[int], *, low: int, high: int, field: str, unit: str) -> None:
    if not stamps:
        raise Invalid(field, "a series needs at least one point")
    if min(stamps) < low or max(stamps) > high:
        bad = next(i for i, at in enumerate(stamps) if not low <= at <= high)
        raise Invalid(
            f"{field}[{bad}]",
            f"{stamps[bad]} is out of range ({low} to {high} unix {unit}: not older than the"
            " retention, at most 10 minutes ahead)",
        )


@dataclass(frozen=True, slots=True)
class Window:
    """The timestamps accepted now, in unix milliseconds."""

    oldest_ms: int
    newest_ms: int

    @classmethod
    def at(cls, now_ms: int, retention_s: int) -> Window:
        return cls(now_ms - retention_s * 1000, now_ms + FUTURE_MS)


def check_points(
    series: Sequence[tuple[Sequence[tuple[str, str]], Sequence[int], Sequence[float]]],
    window: Window,
) -> tuple[list[Labels], int]:
    """Each series' sorted labels, and the number of points; Invalid for the first fault."""
    total = sum(len(stamps) for _, stamps, _ in series)
    if total > MAX_POINTS:
        raise Invalid("series", f"{total} points in one batch; at most {MAX_POINTS}")
    if not series:
        raise Invalid("series", "the batch is empty")
    out = []
    for index, (labels, stamps, values) in enumerate(series):
        where = f"series[{index}]"
        out.append(check_labels(labels, where))
        if len(stamps) != len(values):
            raise Invalid(
                f"{where}.values",
                f"{len(values)} values for {len(stamps)} timestamps_ms; give one per timestamp",
            )
        _times(stamps, low=window.oldest_ms, high=window.newest_ms,
               field=f"{where}.timestamps_ms", unit="ms")  # fmt: skip
        if not all(map(math.isfinite, values)):
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise Invalid(f"{where}.values[{bad}]", f"{values[bad]} is not a finite number")
    return out, total


def check_logs(
    streams: Sequence[tuple[Sequence[tuple[str, str]], Sequence[int], Sequence[str]]],
    window: Window,
) -> tuple[list[Labels], int]:
    """As check_points, for log streams (timestamps in nanoseconds)."""
    total = sum(len(stamps) for _, stamps, _ in streams)
    if total > MAX_LINES:
        raise Invalid("streams", f"{total} lines in one batch; at most {MAX_LINES}")
    if not streams:
        raise Invalid("streams", "the batch is empty")
    out = []
    for index, (labels, stamps, lines) in enumerate(streams):
        where = f"streams[{index}]"
        out.append(check_labels(labels, where))
        if len(stamps) != len(lines):
            raise Invalid(
                f"{where}.lines",
                f"{len(lines)} lines for {len(stamps)} timestamps_ns; give one per timestamp",
            )
        _times(stamps, low=window.oldest_ms * 1_000_000, high=window.newest_ms * 1_000_000,
               field=f"{where}.timestamps_ns", unit="ns")  # fmt: skip
        for number, line in enumerate(lines):
            if len(line) > MAX_LINE_BYTES // 4 and len(line.encode()) > MAX_LINE_BYTES:
                raise Invalid(f"{where}.lines[{number}]", f"at most {MAX_LINE_BYTES} bytes")
    return out, total
