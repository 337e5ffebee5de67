"""Load: many jobs in the table, thousands of fires within a minute, one worker killed
part-way; every fire still reaches a terminal state and runs at least once, and every
duplicate execution is explained by a lost attempt.

Full size (100,000 jobs, 10,000 fires) with HOURGLASS_LOAD=full; CI runs a tenth of it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import psycopg

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes, Shared

FULL = os.environ.get("HOURGLASS_LOAD") == "full"
JOBS = 100_000 if FULL else 10_000
FIRES = 10_000 if FULL else 1_000
SPREAD = 60 if FULL else 20  # seconds over which the fires fall due


def batches(
    requests: list[pb.ScheduleJobRequest], size: int = 10_000
) -> list[list[pb.ScheduleJobRequest]]:
    return [requests[i : i + size] for i in range(0, len(requests), size)]


def test_load_with_a_worker_killed_part_way(
    cluster_env: Processes, database_url: str, shared: Shared
) -> None:
    p = cluster_env
    ledger = shared.file("ledger")
    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("claimer", "claimer", "--lease-ttl", "2")
    for name in ("w1", "w2"):
        p.start(name, "worker", "--lease-ttl", "2", "--worker-id", name, "--concurrency", "32")
    p.wait_for_log("api", "serving")
    for name in ("w1", "w2"):
        p.wait_for_log(name, "holds lease")

    start = datetime.now(UTC) + timedelta(seconds=10)
    # Each run records its execution, then takes a moment, so that workers hold runs.
    command = ["sh", "-c", f'echo "$HOURGLASS_RUN_ID $HOURGLASS_ATTEMPT" >> {ledger}; sleep 0.2']
    requests = []
    for index in range(FIRES):  # one-shot jobs due at spread times
        request = pb.ScheduleJobRequest(
            spec=pb.JobSpec(task=pb.Task(command=command), max_attempts=3)
        )
        request.spec.schedule.at.FromDatetime(start + timedelta(seconds=SPREAD * index / FIRES))
        requests.append(request)
    for _ in range(JOBS - FIRES):  # the rest of the table: jobs that do not fire in the test
        request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["true"])))
        request.spec.schedule.cron.expression = "0 0 1 1 *"
        requests.append(request)
    loaded = time.monotonic()
    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        for batch in batches(requests):
            stub.ScheduleJobs(pb.ScheduleJobsRequest(requests=batch), timeout=120)
    print(f"{JOBS} jobs scheduled in {time.monotonic() - loaded:.1f}s")

    # Part-way through the fires, one worker dies while it holds runs.
    while datetime.now(UTC) < start + timedelta(seconds=SPREAD / 2):
        time.sleep(0.2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(500):
            (held,) = conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM attempts WHERE worker_id = 'w1' AND state = 'running'"
            ).fetchone()
            if held:
                break
            time.sleep(0.01)
    os.kill(p.running["w1"].pid, signal.SIGKILL)
    p.killed.append("w1")
    print(f"killed w1 while it held {held} runs")

    deadline = time.monotonic() + SPREAD + 120
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            fired, active = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state IN ('queued', 'running')) FROM runs"
            ).fetchone()  # type: ignore[misc]
            if fired == FIRES and active == 0:
                break
            assert time.monotonic() < deadline, f"fired {fired} of {FIRES}, {active} still active"
            time.sleep(0.5)
        states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
        lost_runs = {
            str(run_id)
            for (run_id,) in conn.execute(
                "SELECT DISTINCT run_id FROM attempts WHERE state = 'lost'"
            )
        }
        attempts = dict(
            conn.execute("SELECT state, count(*) FROM attempts GROUP BY state").fetchall()
        )
        run_ids = {str(run_id) for (run_id,) in conn.execute("SELECT id FROM runs")}

    executions = Counter(line.split()[0] for line in ledger.read_text().splitlines())
    duplicates = {run for run, times in executions.items() if times > 1}
    print(
        f"load: jobs={JOBS} fires={FIRES} executions={sum(executions.values())} "
        f"duplicates={len(duplicates)} (runs with a lost attempt: {len(lost_runs)}) "
        f"run states={states} attempt states={attempts}"
    )
    assert states == {"succeeded": FIRES}, "every fire reached a terminal state, and succeeded"
    assert set(executions) == run_ids, "no fire is missing from the ledger"
    assert duplicates <= lost_runs, "every duplicate execution followed a lost attempt"
    assert attempts.get("lost", 0) >= 1, "the killed worker held runs when it died"
