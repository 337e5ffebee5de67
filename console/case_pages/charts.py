"""Pure geometry of the case pages' charts, drawn as inline SVG by the templates (no chart
library, no script: the Content-Security-Policy allows neither inline script nor style, and
presentation attributes need neither). No I/O, so unit tests need no server."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

# At least 3:1 against the white page (WCAG 1.4.11), told apart by hue; each chart also
# has a legend or a table, so colour is never the only way to tell series apart.
COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#9a6700", "#bf3989", "#57606a")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class DayBars:
    bars: list[Bar]
    first: date
    last: date
    most: int
    total: int


def day_bars(
    days: Mapping[str, int], *, last: date, count: int, width: float, height: float
) -> DayBars:
    """One bar per UTC day of the `count` days up to `last` (days without visits too, so
    the bars keep their places), scaled to the busiest day; days outside are left out."""
    first = last - timedelta(days=count - 1)
    shown = [(first + timedelta(days=i)).isoformat() for i in range(count)]
    most = max((days.get(day, 0) for day in shown), default=0)
    slot = width / count
    bars = []
    for index, day in enumerate(shown):
        n = days.get(day, 0)
        tall = (n / most * (height - 1)) if most else 0.0
        # A day with visits is never thinner than a pixel, however quiet beside the busiest.
        tall = max(tall, 1.0) if n else 0.0
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.1, 2),
                y=round(height - tall, 2),
                width=round(slot * 0.8, 2),
                height=round(tall, 2),
                label=f"{day}: {n} visit{'s' if n != 1 else ''}",
            )
        )
    return DayBars(bars, first, last, most, sum(days.get(day, 0) for day in shown))


@dataclass(frozen=True)
class Line:
    label: str
    colour: str
    # The SVG polyline's points, "x,y x,y ...", and the dots drawn on a sparse series.
    points: str
    dots: list[tuple[float, float]]
    count: int


@dataclass(frozen=True)
class Plot:
    lines: list[Line]
    low: float
    high: float
    start_ms: int
    end_ms: int


# A series with at most this many points shows each as a dot (one point makes no line).
DOTS_UP_TO = 120


def plot(
    series: Sequence[tuple[str, Sequence[int], Sequence[float]]],
    *,
    start_ms: int,
    end_ms: int,
    width: float,
    height: float,
) -> Plot:
    """Each series as a polyline over [start_ms, end_ms] on x and the values' common range
    on y (a flat range is widened so that it has a height). Points outside are dropped."""
    kept = [
        (label, [(t, v) for t, v in zip(times, values, strict=False) if start_ms <= t <= end_ms])
        for label, times, values in series
    ]
    values = [v for _, points in kept for _, v in points if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1, high + 1
    span_t = max(end_ms - start_ms, 1)

    def at(t: int, v: float) -> tuple[float, float]:
        return (
            round((t - start_ms) / span_t * width, 2),
            round(height - (v - low) / (high - low) * height, 2),
        )

    lines = []
    for index, (label, points) in enumerate(kept):
        xy = [at(t, v) for t, v in points if math.isfinite(v)]
        lines.append(
            Line(
                label=label,
                colour=COLOURS[index % len(COLOURS)],
                points=" ".join(f"{x},{y}" for x, y in xy),
                dots=xy if len(xy) <= DOTS_UP_TO else [],
                count=len(xy),
            )
        )
    return Plot(lines, low, high, start_ms, end_ms)
