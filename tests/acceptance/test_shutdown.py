"""SIGTERM lets a worker finish what it can and hand back the rest at once: it stops claiming,
waits for its attempts up to the grace, and revokes its lease so that the claimer need not
wait for the TTL to run out."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Processes, Shared

TTL = 30  # long on purpose: a hand-back that waited for it would be obvious


def run_of(p: Processes, job_id: str) -> dict[str, Any]:
    runs = p.cli_json("status", job_id).get("recentRuns", [])
    return runs[0] if runs else {}


def wait_for(p: Processes, job_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_of(p, job_id)
        if run.get("state") == state:
            return run
        time.sleep(0.1)
    raise AssertionError(f"never {state}: {run_of(p, job_id)}")


def test_sigterm_finishes_short_runs_and_hands_back_long_ones(
    cluster_env: Processes, shared: Shared
) -> None:
    p = cluster_env
    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("claimer", "claimer", "--lease-ttl", str(TTL))
    p.start("w1", "worker", "--lease-ttl", str(TTL), "--worker-id", "w1", "--shutdown-grace", "3")
    p.wait_for_log("api", "serving")
    p.wait_for_log("w1", "holds lease")

    # The short run lasts until the test says so (after SIGTERM): a run of a fixed length
    # could end before a busy machine's CLI saw it running.
    release = shared.file("release")
    wait = f"while [ ! -s {release} ]; do sleep 0.05; done"
    short = p.cli("schedule", "--after", "0s", "--", "sh", "-c", wait).stdout.strip()
    long = p.cli(
        "schedule", "--after", "0s", "--max-attempts", "2", "--", "sleep", "60"
    ).stdout.strip()
    wait_for(p, short, "RUN_STATE_RUNNING")
    wait_for(p, long, "RUN_STATE_RUNNING")

    stopped_at = time.monotonic()
    p.running["w1"].send_signal(signal.SIGTERM)
    release.write_text("go")
    later = p.cli("schedule", "--after", "0s", "--", "true").stdout.strip()  # must not be taken
    assert p.running["w1"].wait(15) == 0
    took = time.monotonic() - stopped_at
    print(f"worker exited {took:.1f}s after SIGTERM (grace 3s)")
    assert took < 3 + 5

    # The short run finished on the stopping worker; the new one was never claimed.
    finished = run_of(p, short)
    assert (
        finished["state"] == "RUN_STATE_SUCCEEDED" and finished["attempts"][0]["workerId"] == "w1"
    )
    assert run_of(p, later)["state"] == "RUN_STATE_QUEUED"

    # The long run was handed back: the claimer requeued it long before the 30 s TTL.
    requeued = wait_for(p, long, "RUN_STATE_QUEUED", timeout=10)
    print(f"long run requeued {time.monotonic() - stopped_at:.1f}s after SIGTERM (TTL {TTL}s)")
    assert time.monotonic() - stopped_at < TTL / 2
    assert requeued["attempt"] == 2 and requeued["attempts"][0]["state"] == "RUN_STATE_LOST"

    # Another worker takes both over.
    p.start("w2", "worker", "--lease-ttl", str(TTL), "--worker-id", "w2", "--shutdown-grace", "1")
    wait_for(p, later, "RUN_STATE_SUCCEEDED")
    assert wait_for(p, long, "RUN_STATE_RUNNING")["attempts"][1]["workerId"] == "w2"


@pytest.fixture
def processes_env(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(
        logs=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    )
    yield procs
    procs.stop_all()


def test_sigterm_stops_a_component_that_cannot_reach_its_database(processes_env: Processes) -> None:
    p = processes_env
    p.start("producer", "producer", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    p.wait_for_log("producer", "error connecting")  # it keeps trying, as it should...
    p.running["producer"].send_signal(signal.SIGTERM)
    assert p.running["producer"].wait(10) == 0  # ...and still stops when told to
    assert "stopped before the database could be reached" in p.log("producer")
