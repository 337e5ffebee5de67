"""Every component serves Prometheus metrics; after a scenario, each endpoint holds the counts
the database says it should."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def query(dsn: str, sql: str, *params: object) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def test_each_component_counts_what_happened(cluster_env: Processes, database_url: str) -> None:
    p = cluster_env
    ports = {name: free_port() for name in ("api", "producer", "claimer", "w1", "w2")}

    def metrics_of(name: str) -> list[str]:
        return ["--metrics-listen", f"127.0.0.1:{ports[name]}"]

    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"], *metrics_of("api"))
    p.start("claimer", "claimer", "--lease-ttl", "2", *metrics_of("claimer"))
    p.wait_for_log("api", "serving")
    p.wait_for_log("claimer", "leads")

    # Overdue: a job due 40 s ago while no producer runs.
    past = (datetime.now(UTC) - timedelta(seconds=40)).isoformat()
    overdue_job = p.cli("schedule", "--at", past, "--", "true").stdout.strip()
    # Missed: a job that fires every second, for ten seconds, while no producer runs for the
    # first seven; fires more than 1 s late are skipped. (Catch-up counts only fires after
    # the job was created, so the downtime has to be real.)
    created = datetime.now(UTC)
    p.cli(
        "schedule", "--every", "1s", "--end", (created + timedelta(seconds=10)).isoformat(),
        "--catch-up", "skip", "--catch-up-window", "1s", "--", "true",
    )  # fmt: skip
    for _ in range(50):
        if value(scrape(ports["claimer"]), "hourglass_overdue_jobs") == 1:
            break
        time.sleep(0.2)
    assert value(scrape(ports["claimer"]), "hourglass_overdue_jobs") == 1

    while datetime.now(UTC) < created + timedelta(seconds=7):  # the producer's downtime
        time.sleep(0.1)
    p.start("producer", "producer", *metrics_of("producer"))
    for name in ("w1", "w2"):
        p.start(name, "worker", "--lease-ttl", "2", "--worker-id", name, *metrics_of(name))
        p.wait_for_log(name, "holds lease")

    for _ in range(3):
        p.cli("schedule", "--after", "0s", "--", "true")
    p.cli(
        "schedule", "--after", "0s", "--max-attempts", "2", "--retry-backoff", "0s", "--", "false"
    )
    long_job = p.cli(
        "schedule", "--after", "0s", "--max-attempts", "2", "--", "sleep", "4"
    ).stdout.strip()
    schedule_calls = 7

    # The long run is held by one worker; kill that worker so that the claimer takes it back.
    holder = ""
    for _ in range(100):
        runs = p.cli_json("status", long_job).get("recentRuns", [])
        if runs and runs[0]["state"] == "RUN_STATE_RUNNING":
            holder = runs[0]["attempts"][0]["workerId"]
            break
        time.sleep(0.1)
    assert holder
    os.kill(p.running[holder].pid, signal.SIGKILL)
    p.killed.append(holder)
    survivor = "w2" if holder == "w1" else "w1"

    dsn = database_url
    for _ in range(300):
        busy = query(dsn, "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")
        if not busy and query(dsn, "SELECT count(*) FROM runs WHERE job_id = %s", long_job):
            break
        time.sleep(0.1)
    assert busy == 0, "runs did not finish"
    time.sleep(1.5)  # the leader's next sweep measures the gauges again

    producer, claimer, api = (
        scrape(ports["producer"]),
        scrape(ports["claimer"]),
        scrape(ports["api"]),
    )
    worker = scrape(ports[survivor])
    print(
        "producer fires:",
        value(producer, "hourglass_fires_total", outcome="queued"),
        "missed:",
        value(producer, "hourglass_missed_fires_total", policy="skip"),
    )

    # Producer: every queued run it recorded, and the missed fires of the skip job.
    assert value(producer, "hourglass_fires_total", outcome="queued") == query(
        dsn, "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND state <> 'skipped'"
    )
    assert (
        value(producer, "hourglass_missed_fires_total", policy="skip")
        == query(dsn, "SELECT sum(missed_fires) FROM jobs")
        >= 5
    )
    # Claimer: the one lost attempt, the gauges back to calm, the overdue job fired by now.
    # (A run the dead worker had claimed ahead and not yet started is also taken back, as
    # attempt="unspent": whether there was one depends on timing.)
    assert (
        value(claimer, "hourglass_takeovers_total", attempt="lost")
        == 1
        == query(dsn, "SELECT count(*) FROM attempts WHERE state = 'lost'")
    )
    assert value(claimer, "hourglass_claimer_leader") == 1
    assert value(claimer, "hourglass_queue_depth") == 0
    assert value(claimer, "hourglass_overdue_jobs") == 0
    # The surviving worker finished the taken-back run as attempt 2.
    assert value(worker, "hourglass_attempts_finished_total", state="succeeded") >= 1
    both = [scrape(ports[survivor])]
    finished = {
        state: sum(value(s, "hourglass_attempts_finished_total", state=state) for s in both)
        for state in ("succeeded", "failed")
    }
    # The killed worker's counters died with it; the database knows what it finished.
    by_killed = {
        state: query(
            dsn, "SELECT count(*) FROM attempts WHERE worker_id = %s AND state = %s", holder, state
        )
        for state in ("succeeded", "failed")
    }
    for state in ("succeeded", "failed"):
        assert finished[state] + by_killed[state] == query(
            dsn, "SELECT count(*) FROM attempts WHERE state = %s", state
        ), state
    assert value(worker, "hourglass_start_lateness_seconds_count") >= 1
    # API: every ScheduleJob call, answered OK.
    assert (
        value(api, "hourglass_api_request_seconds_count", method="ScheduleJob", code="OK")
        == schedule_calls
    )
    assert overdue_job
