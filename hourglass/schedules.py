"""When jobs fire: the four schedule kinds and the arithmetic of their fire times.

A schedule answers one question, `next_after(instant)`: the first fire strictly later than
the instant, or None when it never fires again. The producer stores the answer as the job's
next_fire_at, so a schedule's progress lives in PostgreSQL, never in a process's memory.

Cron expressions are evaluated by cronsim in the job's IANA time zone. Across DST changes it
follows cronie (Debian's cron): a local time skipped by spring-forward fires at the first
valid instant after it, and a local time repeated by fall-back fires once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

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
MIN_INTERVAL = timedelta(milliseconds=100)


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
    """Repeatedly, one interval apart, the first fire one interval after the job is stored."""

    interval: timedelta

    def first(self, created: datetime) -> datetime | None:
        return created + self.interval

    def next_after(self, instant: datetime) -> datetime | None:
        return instant + self.interval


Schedule = At | After | Cron | Every


def next_fire(schedule: Schedule, last_fire: datetime) -> datetime | None:
    """The fire after `last_fire`; for an interval, one interval after it (drift-free)."""
    return schedule.next_after(last_fire)


def validate(schedule: Schedule, *, now: datetime) -> None:
    """Raises ValueError("<field>: <reason>") for a schedule that can never work."""
    match schedule:
        case At(at=at):
            if at.tzinfo is None:
                raise ValueError("schedule.at: must carry a time zone")
        case After(delay=delay):
            if delay < timedelta(0):
                raise ValueError(f"schedule.after: must not be negative, got {delay}")
            if delay > timedelta(days=3650):
                raise ValueError("schedule.after: must be at most ten years")
        case Cron(expression=expression, time_zone=time_zone):
            if time_zone not in ("", "UTC"):
                try:
                    ZoneInfo(time_zone)
                except (ZoneInfoNotFoundError, ValueError):
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
        case Every(interval=interval):
            if interval < MIN_INTERVAL:
                raise ValueError(
                    f"schedule.every.interval: must be at least {MIN_INTERVAL.total_seconds()}s"
                )


def describe(schedule: Schedule) -> str:
    """One short line for tables: "every 2s", "cron */5 * * * * (Europe/Berlin)"."""
    from hourglass import durations

    match schedule:
        case At(at=at):
            return f"at {at.isoformat()}"
        case After(delay=delay):
            return f"after {durations.format(delay)}"
        case Cron(expression=expression, time_zone=time_zone):
            return f"cron {expression}" + (f" ({time_zone})" if time_zone else "")
        case Every(interval=interval):
            return f"every {durations.format(interval)}"
