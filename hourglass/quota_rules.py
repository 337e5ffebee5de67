"""What a namespace's quotas allow, as plain functions: how many jobs and queued runs it may
have, how fast one job may fire (admission), and how the producer paces and holds back a
namespace's fires (a generic cell rate algorithm).

The quotas are the one multi-tenant rule among the scheduling decisions: they answer to an
administrator (`hourglass quota set`) rather than to a job's own policies, and they carry
their own defaults and error. So they live apart from hourglass.policies, like the store
keeps their rows in hourglass.store.quotas. Nothing here does I/O or reads a clock, so every
rule is tested without a server (tests/unit/test_policies.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hourglass import schedules
from hourglass.schedules import After, At, Cron, Every, Schedule

# --- quotas --------------------------------------------------------------------------------

# Defaults for a namespace without its own row in namespace_quotas. Generous: they stop a
# runaway tenant, not normal use; `hourglass quota set` changes them per namespace.
DEFAULT_MAX_JOBS = 100_000
DEFAULT_MAX_QUEUED_RUNS = 100_000
DEFAULT_MAX_FIRES_PER_SECOND = 1000.0
# The default max_running_runs: as good as unlimited, so a namespace may keep every slot of
# every worker busy, unless an administrator reserves slots for the others by lowering it.
DEFAULT_MAX_RUNNING_RUNS = 100_000
# The producer lets a namespace's fires start at once up to one second's worth of its rate;
# later ones wait their turn (their available_at moves on), they are not dropped.
BURST = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Quota:
    max_jobs: int = DEFAULT_MAX_JOBS
    max_queued_runs: int = DEFAULT_MAX_QUEUED_RUNS
    max_fires_per_second: float = DEFAULT_MAX_FIRES_PER_SECOND
    max_running_runs: int = DEFAULT_MAX_RUNNING_RUNS

    def __post_init__(self) -> None:
        if self.max_jobs < 0:
            raise ValueError("max_jobs: must not be negative")
        if self.max_queued_runs < 0:
            raise ValueError("max_queued_runs: must not be negative")
        if not (self.max_fires_per_second > 0 and math.isfinite(self.max_fires_per_second)):
            raise ValueError("max_fires_per_second: must be a positive number")
        if self.max_running_runs < 0:
            raise ValueError("max_running_runs: must not be negative")


class QuotaExceeded(Exception):
    """A request would take a namespace over one of its quotas; nothing was stored."""

    def __init__(self, *, namespace: str, quota: str, limit: float, detail: str) -> None:
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        super().__init__(
            f"namespace {namespace!r} is limited to {quota}={shown}: {detail}"
            " (an administrator can change it with `hourglass quota set`)"
        )
        self.quota = quota
        self.limit = limit


def check_jobs(quota: Quota, *, namespace: str, count: int) -> None:
    """`count` is the namespace's jobs with the new ones included."""
    if count > quota.max_jobs:
        raise QuotaExceeded(
            namespace=namespace,
            quota="max_jobs",
            limit=quota.max_jobs,
            detail=f"this request would make {count} jobs; delete jobs it no longer needs",
        )


def check_queued(quota: Quota, *, namespace: str, count: int) -> None:
    """`count` is the namespace's queued runs with the new ones included."""
    if count > quota.max_queued_runs:
        raise QuotaExceeded(
            namespace=namespace,
            quota="max_queued_runs",
            limit=quota.max_queued_runs,
            detail=f"this request would make {count} runs queued; wait for them to start",
        )


# A cron rate is estimated from this many upcoming fires (only when its ceiling, one fire a
# minute or, with a seconds field, a second, is above the quota).
_CRON_SAMPLE = 8


def max_rate(schedule: Schedule, *, now: datetime) -> float:
    """The most fires per second a schedule makes: one over an interval, one over a cron's
    shortest gap between upcoming fires, zero for a one-shot job."""
    match schedule:
        case At() | After():
            return 0.0
        case Every(interval=interval):
            return 1 / interval.total_seconds()
        case Cron():
            gaps = []
            fire = schedule.next_after(now)
            for _ in range(_CRON_SAMPLE):
                if fire is None:
                    break
                following = schedule.next_after(fire)
                if following is None:
                    break
                gaps.append((following - fire).total_seconds())
                fire = following
            return 1 / min(gaps) if gaps else 0.0


def cron_ceiling(schedule: Cron) -> float:
    """The most fires per second any cron expression of this shape can make."""
    text = schedules.CRON_ALIASES.get(schedule.expression.strip(), schedule.expression)
    return 1.0 if len(text.split()) == 6 else 1 / 60


def admission_rate(schedule: Schedule, *, now: datetime) -> float:
    """A bound on the fires per second a schedule makes that is cheap to know: its max_rate,
    but for a cron the ceiling of its shape (computing its max_rate walks upcoming fires).
    A quota of at least this admits the schedule (check_rate); below it, only check_rate can
    tell."""
    if isinstance(schedule, Cron):
        return cron_ceiling(schedule)
    return max_rate(schedule, now=now)


def check_rate(quota: Quota, *, namespace: str, schedule: Schedule, now: datetime) -> None:
    """Admission control: one job alone may not fire faster than its namespace may."""
    if isinstance(schedule, Cron) and cron_ceiling(schedule) <= quota.max_fires_per_second:
        return
    rate = max_rate(schedule, now=now)
    if rate > quota.max_fires_per_second:
        raise QuotaExceeded(
            namespace=namespace,
            quota="max_fires_per_second",
            limit=quota.max_fires_per_second,
            detail=f"the schedule fires up to {rate:g} times a second",
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    """The producer's verdict on a namespace's queued fires of one cycle, in order: when each
    may start (None: held back by the queued-runs quota), and the pacing state after them."""

    available: list[datetime | None]
    paced: int
    held_back: int
    tat: datetime
    reason: str = ""


def admit_fires(
    available: Sequence[datetime],
    *,
    quota: Quota,
    queued: int,
    tat: datetime | None,
    now: datetime,
) -> Admitted:
    """Applies a namespace's quotas to the fires one producer cycle would queue for it.

    Queued runs: fires beyond max_queued_runs (counting the `queued` runs already waiting)
    are held back: the caller records them as skipped with the reason, and counts them.
    Fires per second: a generic cell rate algorithm (GCRA) paces the rest. Up to one
    second's worth start when they are due; each later one becomes available one interval
    (1 / rate) after the one before. `tat` is the theoretical arrival time the last cycle
    left. A paced fire is late, never lost: at-least-once holds.
    """
    interval = timedelta(seconds=1 / quota.max_fires_per_second)
    burst = max(1.0, quota.max_fires_per_second * BURST.total_seconds())
    tolerance = interval * (burst - 1)
    room = max(quota.max_queued_runs - queued, 0)
    state = tat if tat is not None else now
    out: list[datetime | None] = []
    paced = held = 0
    for at in available:
        if room <= 0:
            out.append(None)
            held += 1
            continue
        room -= 1
        arrival = max(at, now)
        state = max(state, arrival)
        start = max(arrival, state - tolerance)
        state += interval
        if start > arrival:
            paced += 1
            out.append(start)
        else:  # on time: it keeps its own availability, and with it its place in the queue
            out.append(at)
    reason = (
        f"namespace quota max_queued_runs={quota.max_queued_runs} reached: fire held back"
        if held
        else ""
    )
    return Admitted(out, paced, held, state, reason)
