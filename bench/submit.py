"""Scenario 3, submit: ScheduleJob calls per second over gRPC, from 1 client and from 8
concurrent clients (separate processes, each with its own channel), against a real
`hourglass api` process.

Each request is what `hourglass schedule` sends: a fresh request_id (idempotency key), a
one-shot job of /bin/true (due in 2099, so nothing fires).

Baselines, same call counts and client processes:
  - grpc.health.v1.Health/Check on the same API process: the floor of the RPC stack (Python
    client, grpc.aio server, one event loop) with no store work at all;
  - single-row INSERTs, one transaction each, straight through psycopg into `bench_jobs`
    (`LIKE jobs INCLUDING ALL`: the same columns and indexes): the floor of the store.
The table's ratio is against the health check (see docs/benchmarks.md for why); the INSERT
floor gets its own row.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench.env import BENCH, HOURGLASS, Bench, CpuMeter, Process, load, port, say
from bench.profiling import Profiler
from bench.report import Row

# Jobs per ScheduleJobs call.
BATCH = 1_000


def has_batch() -> bool:
    """Whether the API has the batch call (ScheduleJobs)."""
    from hourglass.v1 import scheduler_pb2 as pb

    return "ScheduleJobs" in pb.DESCRIPTOR.services_by_name["JobScheduler"].methods_by_name


def clients(
    bench: Bench,
    mode: str,
    count: int,
    calls: int,
    args: dict[str, Any],
    server: Process | None = None,
) -> tuple[float, dict[str, float]]:
    """Runs `count` client processes of `calls` each, started together. Returns calls/s and
    the CPU ms per call of the clients, the server process (if any) and PostgreSQL."""
    meter = CpuMeter(bench).start(**({"api": server.pid} if server else {}))
    start_at = time.time() + 3.0  # time for the processes to import, connect and warm up
    popens = [
        subprocess.Popen(
            [*BENCH, mode, json.dumps({**args, "calls": calls, "start_at": start_at})],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=bench.work,
            env=bench.helper_env(),
        )
        for _ in range(count)
    ]
    results = []
    for popen in popens:
        out, _ = popen.communicate(timeout=600)
        if popen.returncode != 0:
            raise RuntimeError(f"{mode} client failed ({popen.returncode})")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    first = min(r["start"] for r in results)
    last = max(r["end"] for r in results)
    if first > start_at + 0.5:
        say(f"  WARNING: {mode} clients started {first - start_at:.1f}s late")
    spent = meter.stop()
    total = sum(r["calls"] for r in results)
    # The clients' CPU includes their start-up (imports); it is a small share at these counts.
    cpu = {"clients": sum(r["cpu"]["self"] for r in results) * 1000 / total}
    if server is not None:
        cpu["api"] = spent["api"] * 1000 / total
    cpu["postgres"] = spent["postgres"] * 1000 / total
    cpu["machine busy"] = spent["machine busy"] / spent["machine total"]
    return total / (last - first), cpu


def start_api(bench: Bench, name: str) -> tuple[Process, str, str, str]:
    """A migrated database, a real token, and `hourglass api`: (process, dsn, address, token)."""
    dsn = bench.database(f"bench_{name}")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_jobs (LIKE jobs INCLUDING ALL)")
    env = bench.env(dsn)
    # A real token, made the way an operator makes one; every call sends it.
    made = subprocess.run(
        [*HOURGLASS, "token", "create", "--namespace", "bench", "--name", "bench"],
        capture_output=True,
        text=True,
        env=env,
        cwd=bench.work,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"hourglass token create failed: {made.stderr.strip()}")
    token = made.stdout.strip().splitlines()[0]
    listen = f"127.0.0.1:{port()}"
    api = bench.hourglass(f"{name}-api", "api", env, "--listen", listen)
    return api, dsn, listen, token


def profile(bench: Bench, calls: int, profiler: Profiler) -> None:
    """8 clients of ScheduleJob with py-spy on the API process (not part of the table)."""
    say(f"profile: api serving {calls * 4:,} ScheduleJob calls from 8 clients under py-spy")
    api, _, listen, token = start_api(bench, "submit_profiled")
    try:
        profiler.attach(api)
        clients(
            bench, "rpc", 8, calls * 4 // 8, {"target": listen, "kind": "schedule", "token": token}
        )
    finally:
        profiler.detach()
        bench.stop(api)


def run(bench: Bench, calls: int) -> list[Row]:
    say(f"submit: {calls:,} ScheduleJob calls from 1 client, {calls * 4:,} from 8; {load()}")
    api, dsn, listen, token = start_api(bench, "submit")
    rows: list[Row] = []
    results: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    try:
        for count in (1, 8):
            per_client = calls if count == 1 else calls * 4 // count
            total = per_client * count
            for kind in ("health", "schedule"):
                label = "ScheduleJob" if kind == "schedule" else "health Check"
                say(f"  {count} client(s): {total:,} {label} calls")
                rate, used = clients(
                    bench,
                    "rpc",
                    count,
                    per_client,
                    {"target": listen, "kind": kind, "token": token},
                    server=api,
                )
                results[f"{kind} x{count}"] = rate
                cpu[f"{kind} x{count}"] = used
                say(f"  {count} client(s): {label} {rate:,.0f} calls/s; {_cpu(used)}")
            say(f"  {count} client(s): {total:,} single-row INSERTs through psycopg")
            rate, used = clients(bench, "inserts", count, per_client, {"dsn": dsn})
            results[f"insert x{count}"] = rate
            cpu[f"insert x{count}"] = used
            say(f"  {count} client(s): INSERT {rate:,.0f}/s; {_cpu(used)}")
            schedule = results[f"schedule x{count}"]
            who = "1 client" if count == 1 else f"{count} clients"
            rows.append(
                Row(
                    "submit",
                    f"ScheduleJob, {who} vs RPC floor",
                    schedule,
                    "calls/s",
                    results[f"health x{count}"],
                    "health Check",
                )
            )
            rows.append(
                Row(
                    "submit",
                    f"ScheduleJob, {who} vs store floor",
                    schedule,
                    "calls/s",
                    results[f"insert x{count}"],
                    "1-row INSERT, psycopg",
                )
            )
        if not has_batch():
            rows.append(
                Row("submit", "batch (ScheduleJobs)", None, "jobs/s", note="n/a - no ScheduleJobs")
            )
        else:
            batches = max(3, calls // 100)
            say(f"  1 client: {batches} ScheduleJobs calls of {BATCH:,} jobs")
            rate, used = clients(
                bench,
                "rpc",
                1,
                batches,
                {"target": listen, "kind": "batch", "token": token, "batch": BATCH},
                server=api,
            )
            results["batch x1"] = rate
            cpu["batch x1"] = used
            say(f"  1 client: ScheduleJobs {rate:,.0f} jobs/s; {_cpu(used)}")
            say(f"  1 client: {batches} transactions that COPY {BATCH:,} rows through psycopg")
            floor, floor_cpu = clients(bench, "inserts", 1, batches, {"dsn": dsn, "batch": BATCH})
            results["copy x1"] = floor
            cpu["copy x1"] = floor_cpu
            say(f"  1 client: COPY {floor:,.0f} rows/s; {_cpu(floor_cpu)}")
            rows.append(
                Row(
                    "submit",
                    f"ScheduleJobs (batches of {BATCH:,}), 1 client vs store floor",
                    rate,
                    "jobs/s",
                    floor,
                    f"COPY {BATCH:,} rows per transaction",
                )
            )
            rows.append(
                Row(
                    "submit",
                    f"ScheduleJobs (batches of {BATCH:,}) vs ScheduleJob, 1 client",
                    rate,
                    "jobs/s",
                    results["schedule x1"],
                    "ScheduleJob, 1 client",
                )
            )
    finally:
        bench.stop(api)
    bench.notes["submit"] = {"rates": results, "cpu_ms_per_call": cpu}
    used, floor = cpu["schedule x8"], cpu["insert x8"]
    rows.append(
        Row(
            "submit",
            "ScheduleJob, 8 clients: server CPU ms per call (api + PostgreSQL)",
            used.get("api", 0) + used["postgres"],
            "ms",
            floor["postgres"],
            "PostgreSQL per INSERT",
            better="lower",
            note=f"ScheduleJob: {_cpu(used)}; INSERT: {_cpu(floor)}",
        )
    )
    return rows


def _cpu(used: dict[str, float]) -> str:
    parts = [f"{k} {v:.2f}" for k, v in used.items() if k != "machine busy"]
    return f"CPU ms/call {', '.join(parts)}; machine {used['machine busy']:.0%} busy"
