"""`hourglass worker --processes N`: N whole workers under one command, stopped together."""

from __future__ import annotations

import signal
import time

from tests.acceptance.conftest import Processes
from tests.acceptance.test_etcd_failover import query, schedule_now


def test_worker_processes_share_the_runs_and_stop_together(cluster_env: Processes) -> None:
    p = cluster_env
    dsn = p.env["HOURGLASS_DATABASE_URL"]
    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    parent = p.start(
        "worker", "worker", "--processes", "2", "--concurrency", "2", "--worker-id", "wp"
    )
    p.wait_for_log("api", "serving")
    p.wait_for_log("worker", "worker wp-0 holds lease")
    p.wait_for_log("worker", "worker wp-1 holds lease")
    for _ in range(8):
        schedule_now(p.env["HOURGLASS_SERVER"], "sleep 1")
    deadline = time.monotonic() + 60
    while True:
        rows = query(dsn, "SELECT state, count(*) AS n FROM runs GROUP BY state")
        if {r["state"]: r["n"] for r in rows} == {"succeeded": 8}:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    workers = query(dsn, "SELECT DISTINCT worker_id FROM attempts ORDER BY worker_id")
    assert [w["worker_id"] for w in workers] == ["wp-0", "wp-1"], workers

    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 0, p.log("worker")
    assert p.log("worker").count("holds lease") == 2
