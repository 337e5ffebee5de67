"""When jobs fire: the four schedule kinds and the arithmetic of their fire times.

A schedule answers one question, `next_after(instant)`: the first fire strictly later than
the instant, or None when it never fires again. The producer stores the answer as the job's
next_fire_at, so a schedule's progress lives in PostgreSQL, never in a process's memory.

Cron expressions are evaluated by cronsim in the job's IANA time zone. Across DST changes it
follows cronie (Debian's cron): a local time skipped by spring-forward fires at the first
valid instant after it, and a local time repeated by fall-back fires once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from hourglass import durations, limits

# Nicknames as cron(8) documents them.
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_INTERVAL = limits.MIN_INTERVAL


@dataclass(frozen=True, slots=True)
class At:
    """Once, at an instant."""

    at: datetime

    def first(self, created: datetime) -> datetime | None:
        return self.at

    def next_after(self, instant: datetime) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class After:
    """Once, a delay after the job was stored."""

    delay: timedelta

    def first(self, created: datetime) -> datetime | None:
        return created + self.delay

    def next_after(self, instant: datetime) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str
    time_zone: str = ""

    def zone(self) -> tzinfo:
        return ZoneInfo(self.time_zone) if self.time_zone not in ("", "UTC") else UTC

    def first(self, created: datetime) -> datetime | None:
        return self.next_after(created)

    def next_after(self, instant: datetime) -> datetime | None:
        local = instant.astimezone(self.zone())
        expression = CRON_ALIASES.get(self.expression.strip(), self.expression)
        # cronsim works in whole seconds and returns the first match strictly after the
        # instant truncated to a second; a match equal to the instant itself is skipped.
        for fire in CronSim(expression, local):
            if fire > instant:
                return fire.astimezone(UTC)
        return None  # pragma: no cover - CronSim iterates forever


@dataclass(frozen=True, slots=True)
class Every:
    """Repeatedly, one interval apart, the first fire one interval after the job is stored.

    Fire times stay on the grid the first fire sets, whatever happens to the runs; jitter
    delays when each run may start, not the fire time it records.
    """

    interval: timedelta
    jitter: timedelta = timedelta(0)

    def first(self, created: datetime) -> datetime | None:
        return created + self.interval

    def next_after(self, instant: datetime) -> datetime | None:
        return instant + self.interval

    def delay(self) -> timedelta:
        """A random start delay in [0, jitter)."""
        if not self.jitter:
            return timedelta(0)
        return self.jitter * random.random()


Schedule = At | After | Cron | Every


@dataclass(frozen=True, slots=True)
class Bounds:
    """Optional instants before which a job does not fire, and after which it is done."""

    start: datetime | None = None
    end: datetime | None = None

    def clip(self, fire: datetime | None) -> datetime | None:
        if fire is None or (self.end is not None and fire > self.end):
            return None
        return fire


def first_fire(schedule: Schedule, *, created: datetime, bounds: Bounds) -> datetime | None:
    """A new job's first fire time, within its bounds.

    A recurring job never fires before it existed: a start in the past anchors an interval's
    grid, and the first fire is the first grid point at or after `created`. (Counting from a
    start in 1976 made a 100 ms interval "miss" half a century of fires, all queued at once
    by the default catch-up.) Backfill is the way to run past fires.
    """
    start = bounds.start
    if start is None or (start <= created and not isinstance(schedule, Every)):
        return bounds.clip(schedule.first(created))
    if isinstance(schedule, Every):
        # An interval anchored at its start: fires at start, start + interval, ...
        return bounds.clip(grid_at_or_after(start, schedule.interval, created))
    if isinstance(schedule, Cron):
        return bounds.clip(schedule.next_after(start - timedelta(microseconds=1)))
    first = schedule.first(created)
    return bounds.clip(first if first is not None and first >= start else None)


def grid_at_or_after(anchor: datetime, interval: timedelta, instant: datetime) -> datetime:
    """The first point of the grid anchor + k * interval (k >= 0) at or after `instant`,
    computed directly, however many points lie between."""
    if instant <= anchor:
        return anchor
    return anchor + -((anchor - instant) // interval) * interval


def first_at_or_after(
    schedule: Schedule, instant: datetime, *, anchor: datetime, bounds: Bounds
) -> datetime | None:
    """Of a recurring schedule whose fires include `anchor`, the first fire at or after
    `instant`, within bounds."""
    if isinstance(schedule, Every):
        return bounds.clip(grid_at_or_after(anchor, schedule.interval, instant))
    if instant <= anchor:
        return bounds.clip(anchor)
    return bounds.clip(schedule.next_after(instant - timedelta(microseconds=1)))


def next_fire(schedule: Schedule, last_fire: datetime, *, bounds: Bounds) -> datetime | None:
    """The fire after `last_fire`, within bounds; for an interval, one interval after it
    (drift-free)."""
    return bounds.clip(schedule.next_after(last_fire))


def latest_at_or_before(
    schedule: Schedule, instant: datetime, *, since: datetime, bounds: Bounds
) -> tuple[datetime, int]:
    """Of the fires in [since, instant] (`since` being a fire time), the latest and how many
    there are, without listing them all: arithmetic for intervals, a backwards cron walk."""
    if bounds.end is not None:
        instant = max(min(instant, bounds.end), since)
    if isinstance(schedule, Every) and schedule.interval > timedelta(0):
        steps = (instant - since) // schedule.interval
        return since + steps * schedule.interval, steps + 1
    if isinstance(schedule, Cron):
        local = instant.astimezone(schedule.zone())
        expression = CRON_ALIASES.get(schedule.expression.strip(), schedule.expression)
        latest_utc = since
        for candidate in CronSim(expression, local + timedelta(seconds=1), reverse=True):
            if candidate <= instant:
                latest_utc = max(candidate.astimezone(UTC), since)
                break
        count, fire = 1, since
        while count < _COUNT_LIMIT:
            following = next_fire(schedule, fire, bounds=bounds)
            if following is None or following > latest_utc:
                break
            fire, count = following, count + 1
        return latest_utc, count
    return since, 1


# Counting the missed fires of a cron schedule stops here (a per-second cron down for a day
# has 86,400); the count is then a lower bound.
_COUNT_LIMIT = 100_000


def validate(schedule: Schedule, *, now: datetime) -> None:
    """Raises ValueError("<field>: <reason>") for a schedule that can never work."""
    match schedule:
        case At(at=at):
            if at.tzinfo is None:
                raise ValueError("schedule.at: must carry a time zone")
        case After(delay=delay):
            if delay < timedelta(0):
                raise ValueError(f"schedule.after: must not be negative, got {delay}")
            if delay > limits.MAX_AFTER:
                raise ValueError("schedule.after: must be at most ten years")
        case Cron(expression=expression, time_zone=time_zone):
            if time_zone not in ("", "UTC"):
                try:
                    ZoneInfo(time_zone)
                except (ZoneInfoNotFoundError, ValueError, OSError):
                    raise ValueError(
                        f"schedule.cron.time_zone: unknown IANA time zone {time_zone!r}"
                    ) from None
            text = CRON_ALIASES.get(expression.strip(), expression)
            fields = len(text.split())
            if fields not in (5, 6):
                raise ValueError(
                    f"schedule.cron.expression: {expression!r} has {fields} fields; "
                    "use 5 (minute hour day month weekday) or 6 (seconds first)"
                )
            try:
                CronSim(text, now)
            except CronSimError as exc:
                raise ValueError(f"schedule.cron.expression: {expression!r}: {exc}") from None
        case Every(interval=interval, jitter=jitter):
            if interval < MIN_INTERVAL:
                raise ValueError(
                    f"schedule.every.interval: must be at least {MIN_INTERVAL.total_seconds()}s"
                )
            if not timedelta(0) <= jitter <= interval:
                raise ValueError("schedule.every.jitter: must be between 0 and the interval")


def validate_bounds(schedule: Schedule, bounds: Bounds) -> None:
    if bounds.start and bounds.end and bounds.end <= bounds.start:
        raise ValueError("schedule.end: must be after schedule.start")
    if isinstance(schedule, At | After) and (bounds.start or bounds.end):
        raise ValueError("schedule.start: bounds apply to cron and every schedules only")


def describe(schedule: Schedule) -> str:
    """One short line for tables: "every 2s", "cron */5 * * * * (Europe/Berlin)"."""
    match schedule:
        case At(at=at):
            return f"at {at.isoformat()}"
        case After(delay=delay):
            return f"after {durations.format(delay)}"
        case Cron(expression=expression, time_zone=time_zone):
            return f"cron {expression}" + (f" ({time_zone})" if time_zone else "")
        case Every(interval=interval, jitter=jitter):
            spread = f" (jitter {durations.format(jitter)})" if jitter else ""
            return f"every {durations.format(interval)}{spread}"
