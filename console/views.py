"""Pure decisions behind the pages: schedules in words, the next fire times, state colours,
the sparkline and the runs timeline. No I/O, so unit tests need no server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from hourglass import describe, durations, schedules
from hourglass.v1 import scheduler_pb2 as pb

# Each state's colour, chosen for at least 3:1 contrast against the white page (WCAG 1.4.11
# for graphics) and told apart by hue; every picture also has a legend and a table.
COLOURS = {
    "queued": "#0969da",
    "running": "#8250df",
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "timed_out": "#bc4c00",
    "cancelled": "#57606a",
    "lost": "#9a6700",
    "skipped": "#6e7781",
}
# Drawn last, so a failure on top of a success in one pixel column stays visible.
DRAW_ORDER = (
    "skipped",
    "succeeded",
    "queued",
    "running",
    "cancelled",
    "lost",
    "timed_out",
    "failed",
)


def run_state(run: pb.Run | pb.Attempt) -> str:
    return describe.state(run.state) if run.state else "unknown"


def job_state(job: pb.Job) -> str:
    return describe.state(job.state, "job") if job.state else "unknown"


def instant(stamp: object) -> datetime | None:
    """A set protobuf Timestamp as an aware datetime; None for an unset one."""
    if not getattr(stamp, "seconds", 0) and not getattr(stamp, "nanos", 0):
        return None
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def zone(name: str) -> tzinfo:
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def zoned(when: datetime | None, where: tzinfo = UTC) -> str:
    """ "2026-03-29 03:00:00 CEST (+02:00)": the offset shows, so a DST change shows."""
    if when is None:
        return "-"
    local = when.astimezone(where)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({offset[:3]}:{offset[3:]})"


def schedule_words(schedule: pb.Schedule) -> str:
    """The schedule as a sentence: cron through cronsim's explain(), the rest as the CLI
    says it."""
    if schedule.WhichOneof("kind") != "cron":
        return describe.schedule(schedule, lambda t: zoned(instant(t)))
    expression = schedules.CRON_ALIASES.get(
        schedule.cron.expression.strip(), schedule.cron.expression
    )
    try:
        words = CronSim(expression, datetime.now(UTC)).explain()
    except (CronSimError, ValueError):
        return describe.schedule(schedule, lambda t: zoned(instant(t)))
    return words + f" ({schedule.cron.time_zone or 'UTC'})"


def domain_schedule(schedule: pb.Schedule) -> schedules.Schedule | None:
    kind = schedule.WhichOneof("kind")
    if kind == "cron":
        return schedules.Cron(schedule.cron.expression, schedule.cron.time_zone)
    if kind == "every":
        return schedules.Every(schedule.every.interval.ToTimedelta())
    return None


def next_fires(job: pb.Job, count: int = 10) -> list[datetime]:
    """The job's next `count` fire times, from its stored next fire on; fewer for a job that
    ends, none for one that will not fire (paused, done)."""
    first = instant(job.next_fire_at)
    if first is None:
        return []
    fires = [first]
    schedule = domain_schedule(job.spec.schedule)
    bounds = schedules.Bounds(end=instant(job.spec.schedule.end))
    while schedule is not None and len(fires) < count:
        following = schedules.next_fire(schedule, fires[-1], bounds=bounds)
        if following is None:
            break
        fires.append(following)
    return fires


def attempt_duration(attempt: pb.Attempt, now: datetime) -> str:
    started = instant(attempt.started_at)
    if started is None:
        return "-"
    finished = instant(attempt.finished_at) or now
    return durations.format(max(finished - started, timedelta(0)))


@dataclass(frozen=True)
class Bar:
    x: int
    colour: str
    label: str


def sparkline(runs: Sequence[pb.Run], *, bars: int = 20, step: int = 6) -> list[Bar]:
    """The newest `bars` runs as bars, oldest at the left; each bar names its run."""
    newest = sorted(runs, key=lambda r: r.scheduled_at.ToNanoseconds())[-bars:]
    return [
        Bar(
            x=index * step,
            colour=COLOURS.get(run_state(run), "#57606a"),
            label=f"{zoned(instant(run.scheduled_at))} {run_state(run)}",
        )
        for index, run in enumerate(newest)
    ]


_STATES = {value: describe.state(value) for value in pb.RunState.values() if value}


@dataclass(frozen=True)
class Lane:
    """One job's row of the timeline: one SVG path per state, each run a short tick at its
    fire time. Thousands of runs make a handful of elements, which is what keeps the
    picture fast at 10,000 runs."""

    job_id: str
    name: str
    y: int
    paths: list[tuple[str, str]]
    counts: dict[str, int]


@dataclass(frozen=True)
class Timeline:
    lanes: list[Lane]
    width: int
    height: int
    ticks: list[tuple[float, str]]
    total: int


LANE = 22


def timeline(
    lanes: Sequence[tuple[str, str, Sequence[pb.Run]]],
    *,
    start: datetime,
    end: datetime,
    width: int = 1000,
    where: tzinfo = UTC,
) -> Timeline:
    """Lays out (job id, name, runs) lanes over [start, end] in `width` user units."""
    span = max((end - start).total_seconds(), 1.0)
    low, high = start.timestamp(), end.timestamp()
    scale = width / span
    out: list[Lane] = []
    total = 0
    for index, (job_id, name, runs) in enumerate(lanes):
        y = index * LANE
        tick = f" {y + 3}v{LANE - 6}"
        ticks: dict[str, list[str]] = {}
        # Plain arithmetic on the Timestamp's fields: no datetime per run, which is most of
        # the cost at 10,000 runs.
        for run in runs:
            fired = run.scheduled_at.seconds + run.scheduled_at.nanos * 1e-9
            if not low <= fired <= high:
                continue
            ticks.setdefault(_STATES.get(run.state, "unknown"), []).append(
                f"M{(fired - low) * scale:.1f}{tick}"
            )
        counts = {state: len(marks) for state, marks in ticks.items()}
        total += sum(counts.values())
        paths = [(COLOURS[state], "".join(ticks[state])) for state in DRAW_ORDER if state in ticks]
        out.append(Lane(job_id=job_id, name=name, y=y, paths=paths, counts=counts))
    return Timeline(
        lanes=out,
        width=width,
        height=max(len(out), 1) * LANE,
        ticks=axis(start, end, width=width, where=where),
        total=total,
    )


def axis(start: datetime, end: datetime, *, width: int, where: tzinfo) -> list[tuple[float, str]]:
    """Five labelled instants along the window."""
    span = end - start
    marks = []
    for step in range(5):
        moment = start + span * step / 4
        fmt = "%H:%M" if span <= timedelta(days=1) else "%m-%d %H:%M"
        marks.append((width * step / 4, moment.astimezone(where).strftime(fmt)))
    return marks


# How far the API's clock may be behind the console's before a change made just before a
# page was drawn is taken for one made before it.
SKEW = 5.0


def changed_since(run: pb.Run, since: float | None) -> bool:
    """Whether the run may have changed after `since` (seconds since the epoch): it was
    created, an attempt started or it finished after then, less SKEW. A watch starts with
    the job's recent runs as they are; those that did not change since the page was drawn
    are already on it, and redrawing the page for them would draw it twice per visit.
    Unknown `since`: True."""
    if since is None:
        return True
    stamps = [run.created_at, run.started_at, run.finished_at]
    for attempt in run.attempts:
        stamps += [attempt.started_at, attempt.finished_at]
    latest = max(stamp.seconds + stamp.nanos * 1e-9 for stamp in stamps)
    return latest >= since - SKEW


def since(value: str) -> float | None:
    """The page's `since` parameter: when it was drawn, in seconds since the epoch."""
    try:
        found = float(value)
    except ValueError:
        return None
    return found if math.isfinite(found) and found > 0 else None


WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def window(name: str, now: datetime) -> tuple[str, datetime, datetime]:
    """A window picker's choice (unknown: 1h) as (name, start, end)."""
    name = name if name in WINDOWS else "1h"
    return name, now - timedelta(seconds=WINDOWS[name]), now
