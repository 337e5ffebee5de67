"""Scenario console: how long the console's Runs page takes to render N runs in headless
Chromium (Debian's, driven by Playwright), beside the same page with no runs.

JOBS jobs each get N / JOBS runs over the last hour through Backfill on a real `hourglass
api` (no worker runs them: they stay queued, which changes the colours, not the work of
drawing them). A real `hourglass console` serves the page. The figure is the median, over
ROUNDS loads, of navigation start to the load event (server rendering included), read from
the browser's Navigation Timing. Target: <= 1 s at 10,000 runs (issue 16). Beside it, the
CPU time the API, the console and PostgreSQL spend per load, which a busy shared machine
disturbs much less than the wall time.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.env import Bench, CpuMeter, Process, load, port, say
from bench.report import Row
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

JOBS = 20
ROUNDS = 7
CHROMIUM = os.environ.get("HOURGLASS_CHROMIUM", "/usr/bin/chromium")


def _stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def _fill(address: str, runs: int) -> int:
    """JOBS jobs firing every second, each backfilled over the last runs/JOBS seconds."""
    per_job = runs // JOBS
    now = datetime.now(UTC).replace(microsecond=0)
    queued = 0
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        for index in range(JOBS):
            spec = pb.JobSpec(name=f"bench-{index:02d}", task=pb.Task(command=["true"]))
            spec.schedule.every.interval.FromTimedelta(timedelta(seconds=1))
            spec.schedule.start.CopyFrom(_stamp(now - timedelta(seconds=per_job + 5)))
            job = stub.ScheduleJob(pb.ScheduleJobRequest(spec=spec), timeout=30)
            stub.PauseJob(pb.PauseJobRequest(job_id=job.job_id), timeout=30)
            answer = stub.Backfill(
                pb.BackfillRequest(
                    job_id=job.job_id,
                    to=_stamp(now - timedelta(seconds=1)),
                    **{"from": _stamp(now - timedelta(seconds=per_job))},
                ),
                timeout=120,
            )
            queued += answer.queued
    return queued


def _measure(url: str) -> tuple[list[float], list[float]]:
    """Milliseconds from navigation start to the load event of each of ROUNDS loads, and
    of each the part the console's server took (request sent to first byte)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    timings: list[float] = []
    server: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{url}/signin")
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{url}/jobs")
        for _ in range(ROUNDS + 1):  # the first load warms caches and is not counted
            page.goto(f"{url}/runs?window=1h", wait_until="load")
            entry: dict[str, Any] = page.evaluate(
                "JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))"
            )
            timings.append(entry["loadEventEnd"] - entry["startTime"])
            server.append(entry["responseStart"] - entry["requestStart"])
        shown = page.locator("[data-runs-total]").inner_text()
        browser.close()
    say(f"console: the page says {shown} runs")
    return timings[1:], server[1:]


def _measure_cpu(
    bench: Bench, url: str, *, api: Process, console: Process
) -> tuple[list[float], list[float], float]:
    """_measure's figures, and the CPU milliseconds per load that the API, the console and
    PostgreSQL spent on it (their live streams included): on a shared machine, steadier
    than the time a load takes."""
    meter = CpuMeter(bench).start(api=api.pid, console=console.pid)
    timings, server = _measure(url)
    spent = meter.stop()
    cpu = sum(spent[name] for name in ("api", "console", "postgres")) * 1000 / (ROUNDS + 1)
    return timings, server, cpu


def run(bench: Bench, runs: int) -> list[Row]:
    address = f"127.0.0.1:{port()}"
    console_port = port()
    url = f"http://127.0.0.1:{console_port}"
    env = bench.env(bench.database("bench_console"))
    api = bench.hourglass("api-console", "api", env, "--listen", address, "--insecure")
    console = bench.start(
        "console",
        [*_hourglass(), "console", "--server", address, "--listen", f"127.0.0.1:{console_port}"],
        env,
    )
    console.wait_for("hourglass console: serving")
    try:
        say("console: the Runs page with no runs")
        empty_timings, _, empty_cpu = _measure_cpu(bench, url, api=api, console=console)
        empty = statistics.median(empty_timings)
        say(f"console: backfilling {runs} runs over {JOBS} jobs")
        started = time.monotonic()
        queued = _fill(address, runs)
        say(f"console: {queued} runs queued in {time.monotonic() - started:.1f}s; measuring")
        full, server, cpu = _measure_cpu(bench, url, api=api, console=console)
    finally:
        bench.stop(console)
        bench.stop(api)
    median = statistics.median(full)
    bench.notes["console"] = {
        "runs": queued, "load_ms": full, "server_ms": server, "empty_ms": empty,
        "cpu_ms_per_load": cpu, "empty_cpu_ms_per_load": empty_cpu,
    }  # fmt: skip
    return [
        Row(
            "console",
            f"Runs page with {queued:,} runs, load",
            median,
            "ms",
            baseline=empty,
            baseline_name="the same page, no runs",
            better="lower",
            target="<= 1000 ms",
            met=median <= 1000,
            note=f"median of {ROUNDS}, headless Chromium 1280x800, {JOBS} jobs; of it the"
            f" console's server {statistics.median(server):.0f} ms (fetching the runs from the"
            f" API included); {load()}",
        ),
        Row(
            "console",
            f"Runs page with {queued:,} runs, server CPU per load",
            cpu,
            "ms",
            baseline=empty_cpu,
            baseline_name="the same page, no runs",
            better="lower",
            note="CPU time of the API, the console and PostgreSQL over the loads above, per"
            " load (the page's live streams included): steadier than wall time on a shared"
            " machine",
        ),
    ]


def _hourglass() -> list[str]:
    import sys

    return [sys.executable, "-m", "hourglass.cli.main"]
