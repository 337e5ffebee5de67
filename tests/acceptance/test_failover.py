"""Each component as its own process on one database and one etcd; workers die and stall.

Every job appends "<run id> <attempt> <token>" to a ledger file when it starts, so the test
counts executions from outside hourglass and compares them with what the database says.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import Processes, Shared

TTL = 3


def start_cluster(p: Processes, *, ttl: int = TTL) -> None:
    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("claimer", "claimer", "--lease-ttl", str(ttl))
    for name in ("w1", "w2"):
        p.start(name, "worker", "--lease-ttl", str(ttl), "--worker-id", name)
    p.wait_for_log("api", "serving")
    p.wait_for_log("claimer", "leads")
    for name in ("w1", "w2"):
        p.wait_for_log(name, "holds lease")


def wait_for(
    p: Processes, job_id: str, check: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Polls GetJobStatus (through the CLI) until `check(run)` holds for the job's run."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runs = p.cli_json("status", job_id).get("recentRuns", [])
        if runs:
            run = runs[0]
            if check(run):
                return run
        time.sleep(0.2)
    raise AssertionError(f"run never reached the expected state; last seen: {run}")


def ledger_lines(ledger: Path) -> list[list[str]]:
    return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []


def schedule_ledger_job(p: Processes, ledger: Path, seconds: int) -> str:
    command = (
        f'echo "$HOURGLASS_RUN_ID $HOURGLASS_ATTEMPT $HOURGLASS_FENCING_TOKEN" >> {ledger};'
        f' sleep {seconds}; echo "done $HOURGLASS_ATTEMPT"'
    )
    return p.cli(
        "schedule", "--after", "0s", "--max-attempts", "2", "--", "sh", "-c", command
    ).stdout.strip()


def holder_of(run: dict[str, Any], attempt: int) -> str:
    return str(run["attempts"][attempt - 1]["workerId"])


def test_sigkill_of_a_worker_mid_run_loses_nothing(cluster_env: Processes, shared: Shared) -> None:
    p = cluster_env
    start_cluster(p)
    ledger = shared.file("ledger")
    job_id = schedule_ledger_job(p, ledger, seconds=20)

    running = wait_for(p, job_id, lambda r: r["state"] == "RUN_STATE_RUNNING", 15)
    victim = holder_of(running, 1)
    survivor = {"w1": "w2", "w2": "w1"}[victim]
    os.kill(p.running[victim].pid, signal.SIGKILL)
    p.killed.append(victim)
    killed_at = time.monotonic()

    wait_for(
        p, job_id, lambda r: r.get("attempt") == 2 and r["state"] == "RUN_STATE_RUNNING", TTL + 10
    )
    taken_over_after = time.monotonic() - killed_at
    print(f"attempt 2 started {taken_over_after:.1f}s after the SIGKILL (lease TTL {TTL}s)")
    assert taken_over_after <= TTL + 5

    run = wait_for(p, job_id, lambda r: r["state"] == "RUN_STATE_SUCCEEDED", 40)
    first, second = run["attempts"]
    assert (first["number"], first["state"], first["workerId"]) == (1, "RUN_STATE_LOST", victim)
    assert (second["number"], second["state"], second["workerId"]) == (
        2,
        "RUN_STATE_SUCCEEDED",
        survivor,
    )
    assert second["stdoutTail"] == "done 2\n"
    assert int(second["fencingToken"]) > int(first["fencingToken"])
    # Two executions, and the database explains the second: attempt 1 was lost.
    assert ledger_lines(ledger) == [
        [run["id"], "1", first["fencingToken"]],
        [run["id"], "2", second["fencingToken"]],
    ]


def test_a_stalled_worker_resumed_after_its_lease_changes_nothing(
    cluster_env: Processes, shared: Shared
) -> None:
    p = cluster_env
    start_cluster(p, ttl=2)
    ledger = shared.file("ledger")
    job_id = schedule_ledger_job(p, ledger, seconds=3)

    running = wait_for(p, job_id, lambda r: r["state"] == "RUN_STATE_RUNNING", 15)
    zombie = holder_of(running, 1)
    taker = {"w1": "w2", "w2": "w1"}[zombie]
    os.kill(p.running[zombie].pid, signal.SIGSTOP)  # paused past its lease; its job goes on

    finished = wait_for(p, job_id, lambda r: r["state"] == "RUN_STATE_SUCCEEDED", 30)
    assert holder_of(finished, 2) == taker
    time.sleep(1)  # the zombie's own child has long finished by now
    before = p.cli_json("status", job_id)

    os.kill(p.running[zombie].pid, signal.SIGCONT)
    # On waking, the zombie either writes its result first, which the fencing token refuses,
    # or its heartbeat sees the lease gone first and it abandons the attempt unwritten: which
    # comes first is a race between two events that wake it at once. Both must change nothing.
    deadline = time.monotonic() + 15
    while not any(text in p.log(zombie) for text in ("result refused", "abandoning")):
        assert time.monotonic() < deadline, p.log(zombie)
        time.sleep(0.05)
    p.wait_for_log(zombie, "lost", timeout=15)
    after = p.cli_json("status", job_id)

    assert after == before, "the zombie changed the database"
    first, second = after["recentRuns"][0]["attempts"]
    assert first["state"] == "RUN_STATE_LOST" and first["workerId"] == zombie
    assert second["state"] == "RUN_STATE_SUCCEEDED" and second["workerId"] == taker
    assert second["stdoutTail"] == "done 2\n"
    assert p.running[zombie].poll() is None, "a zombie stops its runs, it does not crash"
    assert [line[1] for line in ledger_lines(ledger)] == ["1", "2"]
