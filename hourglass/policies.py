"""The scheduling decisions, as plain functions: which late fires run (catch-up), what a fire
does beside a job's active runs (overlap), whether a failed attempt is tried again (requeue),
and which locked runs a worker may start (exclusivity, and each namespace's share of a
claim). What a namespace's quotas allow is decided in hourglass.quota_rules.

Nothing here does I/O or reads a clock: the store reads the rows, asks these functions, and
writes the answers, so every rule can be tested without a server (tests/unit/).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from hourglass import schedules
from hourglass.domain import CatchUpPolicy, JobId, JobSpec, Overlap, RetryPolicy, RunId
from hourglass.quota_rules import DEFAULT_MAX_RUNNING_RUNS
from hourglass.schedules import Cron, Every

__all__ = [
    "MAX_FIRES_PER_JOB_PER_CYCLE",
    "Active",
    "Candidate",
    "DueFires",
    "OnFire",
    "Requeue",
    "Share",
    "Waiting",
    "capped",
    "claim_shares",
    "claimable",
    "due_fires",
    "exclusive",
    "jobs_to_lock",
    "on_fire",
    "recounted",
]

# How many fires of one job a single producer cycle records at most; a job that missed more
# (a long outage with the "all" catch-up) gets the rest in the next cycles.
MAX_FIRES_PER_JOB_PER_CYCLE = 1000


# --- catch-up ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueFires:
    """What a due job does now: the fire times to record, how many fires the catch-up policy
    dropped, and the job's next fire time (None: it never fires again)."""

    times: list[datetime]
    missed: int
    next_fire: datetime | None


def due_fires(spec: JobSpec, *, first: datetime, now: datetime, created: datetime) -> DueFires:
    """Which of the fires from `first` (the job's next_fire_at) up to now run under the job's
    catch-up policy.

    Catch-up begins at creation: fires of a recurring job from before `created` did not
    happen and are neither run nor counted as missed. New jobs never have such a first fire
    (schedules.first_fire); this also holds for rows written before that rule existed.
    """
    schedule, bounds, catch_up = spec.schedule, spec.bounds, spec.catch_up
    if isinstance(schedule, Cron | Every) and first < created:
        moved = schedules.first_at_or_after(schedule, created, anchor=first, bounds=bounds)
        if moved is None:
            return DueFires([], 0, None)
        first = moved
    if first > now:
        return DueFires([], 0, first)
    if catch_up.policy == CatchUpPolicy.LATEST:
        latest, count = schedules.latest_at_or_before(schedule, now, since=first, bounds=bounds)
        return DueFires([latest], count - 1, schedules.next_fire(schedule, latest, bounds=bounds))
    tolerance = catch_up.tolerance()
    missed = 0
    fire: datetime | None = first
    if tolerance is not None and now - first > tolerance:
        # Jump over the fires that are too late without listing them one by one.
        cutoff = now - tolerance
        latest_missed, missed = schedules.latest_at_or_before(
            schedule, cutoff, since=first, bounds=bounds
        )
        if latest_missed >= cutoff:  # it is on time after all
            missed -= 1
            fire = latest_missed
        else:
            fire = schedules.next_fire(schedule, latest_missed, bounds=bounds)
    times: list[datetime] = []
    while fire is not None and fire <= now and len(times) < MAX_FIRES_PER_JOB_PER_CYCLE:
        times.append(fire)
        fire = schedules.next_fire(schedule, fire, bounds=bounds)
    return DueFires(times, missed, fire)


# --- overlap -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Active:
    """A job's runs that are not finished yet."""

    queued: tuple[RunId, ...] = ()
    running: tuple[RunId, ...] = ()


@dataclass(frozen=True, slots=True)
class OnFire:
    """What one fire does: queue a run (skip_reason empty) or record a skipped one; cancel
    the runs it replaces; and the job's active runs after it."""

    skip_reason: str
    replaces: tuple[RunId, ...]
    active: Active


def on_fire(overlap: Overlap, active: Active, run_id: RunId) -> OnFire:
    """The overlap policy for a fire whose run would be `run_id`, given the job's active
    runs (including those queued by earlier fires of the same cycle)."""
    if overlap == Overlap.SKIP and (active.queued or active.running):
        return OnFire("overlap policy skip: an earlier run is still active", (), active)
    if overlap == Overlap.BUFFER_ONE and active.queued:
        return OnFire("overlap policy buffer_one: a run is already waiting", (), active)
    replaces: tuple[RunId, ...] = ()
    if overlap == Overlap.REPLACE:
        replaces = (*active.queued, *active.running)
        active = Active()
    return OnFire("", replaces, Active((*active.queued, run_id), active.running))


def exclusive(overlap: Overlap) -> bool:
    """Whether at most one run of a job with this policy may run at a time."""
    return overlap in (Overlap.BUFFER_ONE, Overlap.REPLACE)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued run a worker has locked, in claim order."""

    run_id: RunId
    job_id: JobId
    exclusive: bool


def jobs_to_lock(candidates: Iterable[Candidate]) -> list[JobId]:
    """The exclusive jobs among the candidates, each once: the worker takes a per-job lock on
    each before it looks again for their running runs."""
    return list(dict.fromkeys(c.job_id for c in candidates if c.exclusive))


def claimable(
    candidates: Sequence[Candidate], *, locked: set[JobId], running: set[JobId]
) -> list[RunId]:
    """Of the candidates, the runs the worker may start: every run of a job without
    exclusivity; for an exclusive job, only its first candidate, and only if this worker
    holds the job's lock and the job has no running run (looked up after taking the lock)."""
    chosen: list[RunId] = []
    seen: set[JobId] = set()
    for candidate in candidates:
        if candidate.exclusive:
            if candidate.job_id in seen or candidate.job_id not in locked:
                continue
            if candidate.job_id in running:
                continue
            seen.add(candidate.job_id)
        chosen.append(candidate.run_id)
    return chosen


@dataclass(frozen=True, slots=True)
class Waiting:
    """A namespace with runs available now: how many it runs, and its oldest waiting run."""

    namespace: str
    running: int
    oldest: datetime
    # Its quota max_running_runs: it gets no share while it runs that many.
    max_running: int = DEFAULT_MAX_RUNNING_RUNS


@dataclass(frozen=True, slots=True)
class Share:
    """A namespace a claim takes runs from, and how many it may lock at most."""

    namespace: str
    running: int
    share: int


def capped(waiting: Sequence[Waiting]) -> list[str]:
    """The waiting namespaces with a max_running_runs of their own (below the default): a
    claim counts their running runs again under a lock on each, so that the cap is exact."""
    return sorted(w.namespace for w in waiting if w.max_running < DEFAULT_MAX_RUNNING_RUNS)


def recounted(
    waiting: Sequence[Waiting], *, capped: Sequence[str], running: dict[str, int]
) -> list[Waiting]:
    """`waiting` with the running runs of the capped namespaces counted under their locks
    (`running`); a capped namespace whose lock another claim holds is left out this time."""
    chosen = set(capped)
    return [
        dataclasses.replace(w, running=running[w.namespace]) if w.namespace in chosen else w
        for w in waiting
        if w.namespace not in chosen or w.namespace in running
    ]


def claim_shares(waiting: Sequence[Waiting], *, limit: int) -> list[Share]:
    """Which namespaces a claim of `limit` runs draws from, and how many runs each may offer.

    Every namespace with runs available gets an equal share of the limit (rounded up), so
    that a claim locks about `limit` rows. When more namespaces wait than the claim has room
    for, the ones running the fewest runs come first, then the ones waiting longest; the
    rest wait for the next claim, which sees the counts this one changed.

    A namespace running its max_running_runs gets no share, and one close to it no more than
    the room it has left; what it leaves is shared among the others. (The counts are those
    the claim's snapshot sees: two workers claiming at the same moment may each fill the same
    room, so the cap can be passed by one claim's share until those runs end.)
    """
    if limit <= 0:
        return []
    open_ = [w for w in waiting if w.running < w.max_running]
    chosen = sorted(open_, key=lambda w: (w.running, w.oldest, w.namespace))[:limit]
    shares: dict[str, int] = {}
    rest, budget = chosen, limit
    while rest:
        fair = math.ceil(budget / len(rest))
        tight = [w for w in rest if w.max_running - w.running < fair]
        if not tight:
            shares.update((w.namespace, fair) for w in rest)
            break
        for w in tight:
            shares[w.namespace] = w.max_running - w.running
            budget -= shares[w.namespace]
        rest = [w for w in rest if w.max_running - w.running >= fair]
    return [Share(w.namespace, w.running, shares[w.namespace]) for w in chosen]


# --- requeue -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requeue:
    """The verdict on an attempt that did not succeed: try again at `at`, or stop."""

    at: datetime | None

    @staticmethod
    def decide(retry: RetryPolicy, *, attempt: int, now: datetime) -> Requeue:
        if attempt >= retry.max_attempts:
            return Requeue(at=None)
        return Requeue(at=now + retry.delay_before(attempt + 1))
