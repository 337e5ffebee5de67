"""Prometheus metrics of every component, in one place so that their names stay consistent.

Each process serves its own registry on `--metrics-listen HOST:PORT` (hourglass.health
serves it, with the liveness and readiness paths). Counters are counted
where the event happens (the producer counts fires, the worker results, the claimer
takeovers); the gauges that describe the whole system (queue depth, overdue jobs) are
measured by the leading claimer, so that they are measured once, not once per process.

A job that should have fired and did not is visible as `hourglass_overdue_jobs`, not only as
the absence of its runs.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

fires = Counter(
    "hourglass_fires_total",
    "Fires recorded by the producer, by what became of them (queued, skipped by overlap,"
    " held_back by a queued-runs quota).",
    ["outcome"],
)
missed_fires = Counter(
    "hourglass_missed_fires_total",
    "Fires a catch-up policy dropped because they were too late, by policy.",
    ["policy"],
)
claims = Counter("hourglass_claims_total", "Runs claimed by this worker.")
runs_finished = Counter(
    "hourglass_attempts_finished_total",
    "Attempts this worker finished, by final state of the attempt.",
    ["state"],
)
lateness = Histogram(
    "hourglass_start_lateness_seconds",
    "From a run's scheduled time (plus jitter) to the moment its worker started it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
fenced_writes = Counter(
    "hourglass_fenced_writes_total",
    "Results this worker tried to write after it no longer held the run (refused).",
)
lease_losses = Counter("hourglass_lease_losses_total", "Leases this process lost.")
takeovers = Counter(
    "hourglass_takeovers_total",
    "Runs the claimer took back from a dead or stalled worker, by what became of the attempt: "
    "lost (it had started, so it counts against max_attempts) or unspent (claimed ahead and "
    "never started, so the run went back to the queue as it was).",
    ["attempt"],
)
queue_depth = Gauge(
    "hourglass_queue_depth", "Runs queued and ready to start now (measured by the leader)."
)
running_runs = Gauge("hourglass_running_runs", "Runs running now (measured by the leader).")
overdue_jobs = Gauge(
    "hourglass_overdue_jobs",
    "Active jobs whose next fire is more than 30 s in the past: fires that should have "
    "happened and did not (measured by the leader).",
)
leader = Gauge("hourglass_claimer_leader", "1 while this claimer leads, else 0.")
api_latency = Histogram(
    "hourglass_api_request_seconds",
    "gRPC API calls by method and status code.",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
lock_acquisitions = Counter(
    "hourglass_lock_acquisitions_total",
    "Acquire calls of the Locks API, by outcome (acquired, busy).",
    ["outcome"],
)
lock_releases = Counter("hourglass_lock_releases_total", "Locks released by their holder.")
lock_wakeups = Counter(
    "hourglass_lock_wakeups_total",
    "Waiters woken because the key before theirs in a lock's queue went away: one per "
    "release while someone waits (no thundering herd).",
)
