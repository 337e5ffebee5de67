"""The whole service stops for ten minutes and comes back: each catch-up policy runs exactly
the fires it promises, and no schedule silently stops firing.

Every hourglass process runs under libfaketime, so "ten minutes later" is a restart with the
clock of every process moved ten minutes ahead, not ten minutes of waiting. PostgreSQL and
etcd keep real time; hourglass takes its notion of now from its own processes, so that is all
it takes. Each job appends its HOURGLASS_SCHEDULED_AT to a ledger: the executions counted from
outside.
"""

from __future__ import annotations

import glob
import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.acceptance.conftest import Processes, Shared

INTERVAL = 30  # seconds between fires
# Seconds the service is "down": ten minutes and a quarter, so that the restart falls between
# two fires and the policies differ (the latest missed fire is then more than skip's 10 s
# grace late).
DOWNTIME = 615


def faketime_library() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        if os.environ.get("HOURGLASS_REQUIRE_FAKETIME") == "1":
            pytest.fail("libfaketime is missing: apt-get install libfaketime")
        pytest.skip("libfaketime is not installed (apt-get install libfaketime)")
    return found[0]


def start_service(p: Processes, suffix: str) -> None:
    p.start(f"api{suffix}", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start(f"producer{suffix}", "producer")
    p.start(f"claimer{suffix}", "claimer", "--lease-ttl", "2")
    p.start(f"worker{suffix}", "worker", "--lease-ttl", "2")
    p.wait_for_log(f"api{suffix}", "serving")
    p.wait_for_log(f"worker{suffix}", "holds lease")


def stop_service(p: Processes, suffix: str) -> None:
    for name in ("api", "producer", "claimer", "worker"):
        p.running[f"{name}{suffix}"].terminate()
    for name in ("api", "producer", "claimer", "worker"):
        assert p.running[f"{name}{suffix}"].wait(20) == 0, p.log(f"{name}{suffix}")


def ledger(path: Path) -> list[datetime]:
    if not path.exists():
        return []
    return sorted(datetime.fromisoformat(line) for line in path.read_text().split())


def grid_steps(times: list[datetime], start: datetime) -> list[int]:
    return [round((t - start).total_seconds() / INTERVAL) for t in times]


def test_each_catch_up_policy_runs_exactly_the_fires_it_promises(
    cluster_env: Processes, shared: Shared
) -> None:
    p = cluster_env
    books = shared.folder
    library = faketime_library()
    start_service(p, "")
    first_fire = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    policies = {
        "all": ["--catch-up", "all"],
        "latest": ["--catch-up", "latest"],
        "skip": ["--catch-up", "skip"],
        "window": ["--catch-up", "all", "--catch-up-window", "2m"],
    }
    jobs = {}
    for name, options in policies.items():
        book = shared.file(f"{name}.ledger")
        jobs[name] = p.cli(
            "schedule",
            "--every",
            f"{INTERVAL}s",
            "--start",
            first_fire.isoformat(),
            *options,
            "--",
            "sh",
            "-c",
            f'echo "$HOURGLASS_SCHEDULED_AT" >> {book}',
        ).stdout.strip()

    # Up: each job fires once, on time.
    deadline = time.monotonic() + 20
    while any(len(ledger(books / f"{n}.ledger")) < 1 for n in policies):
        assert time.monotonic() < deadline, "the first fires did not run"
        time.sleep(0.2)
    stop_service(p, "")

    # Down for ten minutes: every process comes back with its clock 600 s ahead.
    p.env.update(LD_PRELOAD=library, FAKETIME=f"+{DOWNTIME}", FAKETIME_DONT_FAKE_MONOTONIC="1")
    start_service(p, "-after")
    back_at = datetime.now(UTC) + timedelta(seconds=DOWNTIME)

    # Wait until every job has run its first on-time fire after the restart.
    def settled() -> bool:
        return (
            all(
                (ts := ledger(books / f"{n}.ledger"))
                and ts[-1] >= back_at - timedelta(seconds=INTERVAL)
                for n in policies
            )
            and len(ledger(books / "all.ledger")) >= DOWNTIME // INTERVAL
        )

    deadline = time.monotonic() + 60
    while not settled():
        assert time.monotonic() < deadline, {
            n: len(ledger(books / f"{n}.ledger")) for n in policies
        }
        time.sleep(0.5)
    missed = {}
    for name, job_id in jobs.items():
        missed[name] = int(p.cli_json("status", job_id)["job"].get("missedFires", 0))
    stop_service(p, "-after")
    steps = {name: grid_steps(ledger(books / f"{name}.ledger"), first_fire) for name in policies}
    print("fires run (steps of 30s after the first):", steps)
    print("missed fires:", missed)
    # Where each policy must resume, from the (fake) instant of the restart: the latest fire
    # at or before it, the first fire at most 10 s late, the first fire at most 2 min late.
    restart = (back_at - first_fire).total_seconds() / INTERVAL
    expected_resume = {
        "all": 1,
        "latest": math.floor(restart),
        "skip": math.ceil(restart - 10 / INTERVAL),
        "window": math.ceil(restart - 120 / INTERVAL),
    }
    for name, ran in steps.items():
        assert ran == sorted(set(ran)), f"{name}: a fire ran twice"
        assert ran[0] == 0, f"{name}: the first fire did not run"
        # From the resumption point on, every fire runs, on the grid, without a gap.
        assert ran[1] == expected_resume[name], (name, ran, expected_resume[name])
        assert ran[1:] == list(range(ran[1], ran[1] + len(ran) - 1)), f"{name}: a gap"
        # Whatever did not run is counted on the job, never silent.
        assert missed[name] == ran[1] - 1, f"{name}: {missed[name]} missed vs {ran[1] - 1}"
