"""Scenario 1, drain: N runs of /bin/true already due; how fast do they all become terminal?

hourglass: N one-shot jobs whose runs are queued and due (inserted with SQL), then a worker
process (`--concurrency 8`) is started and we time from the commit that queues the runs to
the last run's finished_at. A second variant inserts N due *jobs* instead (no runs) and starts
the producer and the worker: the whole pipeline, fire to result. With `--processes P`, once
more with a worker of P processes.

Peer and baselines, in the same run, on the same PostgreSQL and at the same concurrency, each
run before and after hourglass (the mean is what hourglass is compared with):
  pgqueuer (bench/peers.py): its QueueManager in drain mode over N queued jobs;
  a minimal SKIP LOCKED loop claiming 100 rows per transaction (spawn, mark done in batches);
  the plainest SKIP LOCKED loop: 8 loops, each claiming, running and marking one row;
  the raw spawn rate of /bin/true from asyncio, with the executor's options.
All spawn through the pidfd child watcher, as the worker does.

Besides wall-clock rates, CPU time per run (worker + its children + PostgreSQL + etcd, read
from /proc) is compared with the loops' and pgqueuer's: on a shared machine it is the steadier
figure, and it says where a run's cost lands.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.env import REPO, Bench, CpuMeter, Process, load, say
from bench.profiling import Profiler
from bench.report import Row

CONCURRENCY = 8  # issue 17's workload; the worker runs with --concurrency 8
# Every spawner here uses the pidfd child watcher, as the worker does on Python 3.11.
WATCHER = "pidfd"
PGQUEUER = "1.6"
TARGET_PGQUEUER = 1.5
TARGET_BATCH = 0.8
TARGET_CPU = 1.2
SANDBOXED_RUNS = 1_000
# Text like HOURGLASS_SCHEDULED_AT of a timestamptz (for a one-shot job's schedule JSON).
ISO = "to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def insert_due(dsn: str, n: int, *, queued: bool) -> float:
    """N one-shot jobs of /bin/true due a minute ago. queued: with their runs queued (the
    worker's work); else as due jobs (the producer's work). Returns the commit time."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, name, command, schedule, state, next_fire_at, created_at,
                              updated_at)
            SELECT gen_random_uuid(), 'drain', ARRAY['/bin/true'],
                   jsonb_build_object('kind', 'at', 'at', """  # noqa: S608 - constant SQL
            + ISO
            + """),
                   CASE WHEN %(queued)s THEN 'completed' ELSE 'active' END,
                   CASE WHEN %(queued)s THEN NULL ELSE t END, now(), now()
            FROM (SELECT now() - interval '1 minute' + i * interval '1 microsecond' AS t
                  FROM generate_series(1, %(n)s) AS i) AS due
            """,
            {"n": n, "queued": queued},
        )
        if queued:
            conn.execute(
                """
                INSERT INTO runs (id, job_id, namespace, scheduled_at, state, attempt,
                                  available_at, created_at)
                SELECT gen_random_uuid(), id, namespace, created_at - interval '1 minute',
                       'queued', 1, created_at - interval '1 minute', now()
                FROM jobs WHERE name = 'drain'
                """
            )
        conn.execute("ANALYZE jobs")
        conn.execute("ANALYZE runs")
        conn.execute("NOTIFY hourglass_runs" if queued else "NOTIFY hourglass_jobs")
        conn.commit()
        return time.time()


def wait_drained(dsn: str, n: int, t0: float, label: str, timeout: float) -> dict[str, Any]:
    """Polls until no run is queued or running and no job is due; returns the figures."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        last = 0.0
        while True:
            row = conn.execute(
                """
                SELECT (SELECT count(*) FROM runs WHERE state IN ('queued', 'running')),
                       (SELECT count(*) FROM runs),
                       (SELECT count(*) FROM jobs WHERE next_fire_at IS NOT NULL)
                """
            ).fetchone()
            assert row is not None
            active, created, unfired = row
            done = created - active
            now = time.time()
            if active == 0 and unfired == 0 and created >= n:
                break
            if now - last >= 2:
                last = now
                say(
                    f"  {label}: {done:,}/{n:,} terminal ({done / (now - t0):,.0f} runs/s), "
                    f"{active:,} queued or running, {unfired:,} jobs not fired yet; {load()}"
                )
            if now - t0 > timeout:
                raise RuntimeError(f"{label}: not drained after {timeout:.0f}s")
            time.sleep(0.25)
        return _figures(conn, n, t0)


def _figures(conn: Any, n: int, t0: float) -> dict[str, Any]:
    row = conn.execute(
        """
        SELECT extract(epoch FROM max(r.finished_at)),
               count(*) FILTER (WHERE r.state = 'succeeded'),
               count(*),
               count(DISTINCT a.fencing_token),
               -- queued -> claimed (the run's due time is before t0, so from t0)
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at)
                   - extract(epoch FROM r.created_at)),
               -- claimed -> process exited (spawn, run, reap)
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at
                   - a.started_at)),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.updated_at
                   - a.finished_at))
        FROM runs r JOIN attempts a ON a.run_id = r.id
        """
    ).fetchone()
    last_finish, succeeded, total, claims, _, execute, write = row
    seconds = float(last_finish) - t0
    return {
        "seconds": seconds,
        "rate": n / seconds,
        "succeeded": succeeded,
        "total": total,
        "claims": claims,
        "execute_p50": float(execute or 0),
        "result_write_p50": float(write or 0),
    }


def _per_run_ms(spent: dict[str, float], n: int, names: list[str]) -> dict[str, float]:
    return {name: spent.get(name, 0.0) * 1000 / n for name in names}


def run_hourglass(
    bench: Bench,
    n: int,
    *,
    pipeline: bool,
    profiler: Profiler | None = None,
    variant: str = "",
    launcher: list[str] | None = None,
    launcher_env: dict[str, str] | None = None,
    worker_args: tuple[str, ...] = (),
    sandboxed: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """`workers` worker processes of CONCURRENCY / workers slots each; `sandboxed=False` runs
    them through bench.patched --unsandboxed (the peers' and loops' conditions)."""
    name = "pipeline" if pipeline else "worker"
    if not sandboxed and launcher is None:
        launcher, launcher_env = unsandboxed_launcher(bench)
    suffix = "_profiled" if profiler else (f"_{variant}" if variant else "")
    dsn = bench.database(f"bench_drain_{name}{suffix}")
    env = {**bench.env(dsn), **(launcher_env or {})}
    processes: dict[str, Process] = {}
    if pipeline:
        processes["producer"] = bench.hourglass(f"drain-{name}{suffix}-producer", "producer", env)
    for i in range(workers):
        processes["worker" if i == 0 else f"worker{i}"] = bench.hourglass(
            f"drain-{name}{suffix}-worker{i or ''}",
            "worker",
            env,
            "--concurrency",
            str(CONCURRENCY // workers),
            *worker_args,
            launcher=launcher,
        )
    if profiler is not None:
        for process in processes.values():
            profiler.attach(process)
    say(f"  hourglass {name}: queueing {n:,} due {'jobs' if pipeline else 'runs'}")
    meter = CpuMeter(bench).start(**{k: p.pid for k, p in processes.items()})
    t0 = insert_due(dsn, n, queued=not pipeline)
    try:
        figures = wait_drained(dsn, n, t0, f"hourglass {name}", timeout=max(600, n / 20))
        spent = meter.stop()
    finally:
        if profiler is not None:
            profiler.detach()
        for process in processes.values():
            bench.stop(process)
    if figures["succeeded"] != n:
        say(f"  WARNING: {figures['succeeded']:,} of {figures['total']:,} runs succeeded")
    for i in range(1, workers):  # several worker processes count as one
        spent["worker"] += spent.pop(f"worker{i}")
        spent["worker children"] += spent.pop(f"worker{i} children")
    parts = ["worker", "worker children", "postgres", "etcd"] + (["producer"] if pipeline else [])
    figures["cpu_ms"] = _per_run_ms(spent, n, parts)
    figures["machine"] = spent["machine busy"] / spent["machine total"]
    say(
        f"  hourglass {name}: {figures['rate']:,.0f} runs/s ({figures['seconds']:.1f}s, "
        f"{figures['claims']:,} claim transactions; median claim->exit "
        f"{figures['execute_p50'] * 1000:.1f} ms, exit->result committed "
        f"{figures['result_write_p50'] * 1000:.1f} ms); CPU ms/run "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["cpu_ms"].items())
        + f"; machine {figures['machine']:.0%} busy"
    )
    return figures


def unsandboxed_launcher(bench: Bench) -> tuple[list[str], dict[str, str]]:
    """`python -m bench.patched --unsandboxed --`, with a PYTHONPATH holding only a link to
    bench/ (after any given one), so hourglass is still imported as installed."""
    shim = bench.work / "shim"
    if not shim.exists():
        shim.mkdir()
        (shim / "bench").symlink_to(REPO / "bench")
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(shim)) if p)
    return [sys.executable, "-m", "bench.patched", "--unsandboxed", "--"], {"PYTHONPATH": path}


def run_skiplocked(bench: Bench, dsn: str, n: int, watcher: str, *, batch: int) -> dict[str, Any]:
    """The SKIP LOCKED loop claiming `batch` rows per transaction (1: `concurrency` loops,
    each claiming, running and marking one row at a time)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_queue")
        conn.execute(
            "CREATE TABLE bench_queue (id bigint PRIMARY KEY, state text NOT NULL,"
            " available_at timestamptz NOT NULL, finished_at timestamptz)"
        )
        conn.execute("CREATE INDEX ON bench_queue (available_at) WHERE state = 'queued'")
        conn.execute(
            "INSERT INTO bench_queue SELECT i, 'queued', now() - interval '1 minute', NULL"
            " FROM generate_series(1, %s) AS i",
            (n,),
        )
        conn.execute("VACUUM ANALYZE bench_queue")
    meter = CpuMeter(bench).start()
    result = bench.baseline(
        "skiplocked" if batch > 1 else "skiplocked-one",
        {
            "dsn": dsn,
            "n": n,
            "batch": batch,
            "concurrency": CONCURRENCY,
            "argv": ["/bin/true"],
            "watcher": watcher,
        },
    )
    spent = meter.stop()
    spent["loop"], spent["loop children"] = result["cpu"]["self"], result["cpu"]["children"]
    result["cpu_ms"] = _per_run_ms(spent, n, ["loop", "loop children", "postgres", "etcd"])
    result["machine"] = spent["machine busy"] / spent["machine total"]
    say(
        f"  SKIP LOCKED loop, {batch} per claim: {result['rate']:,.0f} runs/s; CPU ms/run "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms"].items())
        + f"; machine {result['machine']:.0%} busy"
    )
    return result


def run_pgqueuer(bench: Bench, n: int, watcher: str) -> dict[str, Any]:
    """pgqueuer draining N queued jobs in its own database (bench/peers.py)."""
    dsn = bench.database("bench_drain_pgqueuer")
    bench.baseline("pgqueuer-queue", {"dsn": dsn, "n": n}, module="bench.peers")
    meter = CpuMeter(bench).start()
    result = bench.baseline(
        "pgqueuer-drain",
        {"dsn": dsn, "n": n, "concurrency": CONCURRENCY, "argv": ["/bin/true"], "watcher": watcher},
        module="bench.peers",
    )
    spent = meter.stop()
    spent["pgqueuer"], spent["pgqueuer children"] = result["cpu"]["self"], result["cpu"]["children"]
    result["cpu_ms"] = _per_run_ms(spent, n, ["pgqueuer", "pgqueuer children", "postgres", "etcd"])
    result["machine"] = spent["machine busy"] / spent["machine total"]
    say(
        f"  pgqueuer: {result['rate']:,.0f} runs/s; CPU ms/run "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms"].items())
        + f"; machine {result['machine']:.0%} busy"
    )
    return result


def run_spawn(bench: Bench, n: int, watcher: str) -> dict[str, Any]:
    result = bench.baseline(
        "spawn",
        {"n": n, "concurrency": CONCURRENCY, "argv": ["/bin/true"], "watcher": watcher},
    )
    cpu = result["cpu"]
    result["cpu_ms"] = {"spawner": cpu["self"] * 1000 / n, "children": cpu["children"] * 1000 / n}
    say(
        f"  raw spawn ({watcher} watcher): {result['rate']:,.0f} runs/s; CPU ms/run "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms"].items())
    )
    return result


def _cpu_note(cpu: dict[str, float]) -> str:
    return " + ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def _mean(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The mean of a baseline run before and after hourglass: rate and CPU per run."""
    return {
        "rate": (a["rate"] + b["rate"]) / 2,
        "cpu_ms": {k: (a["cpu_ms"][k] + b["cpu_ms"][k]) / 2 for k in a["cpu_ms"]},
        "note": f"{a['rate']:,.0f} before, {b['rate']:,.0f} after ({a['load']}; {b['load']})",
    }


def _timed(figures: dict[str, Any]) -> dict[str, Any]:
    figures["load"] = load()
    return figures


def run(bench: Bench, n: int, *, quick: bool = False, processes: int = 1) -> list[Row]:
    say(f"drain: {n:,} runs of /bin/true, concurrency {CONCURRENCY}; {load()}")
    base_dsn = bench.database("bench_drain_baseline")
    # Baselines and the peer before and after hourglass; their means are what it is compared
    # with, so that a machine whose load changes meanwhile favours no one.
    first = {
        "spawn": _timed(run_spawn(bench, n, WATCHER)),
        "one": _timed(run_skiplocked(bench, base_dsn, n, WATCHER, batch=1)),
        "batch": _timed(run_skiplocked(bench, base_dsn, n, WATCHER, batch=100)),
        "pgqueuer": _timed(run_pgqueuer(bench, n, WATCHER)),
    }
    # Like for like: attempts as the worker's own children, as pgqueuer's and the loops' are.
    bare = _timed(run_hourglass(bench, n, pipeline=False, sandboxed=False, variant="bare"))
    # As shipped: each attempt in its sandbox (own uid, namespaces, cgroup). At most 1,000
    # runs: the sandbox's start cost makes it some 20 times slower.
    worker = _timed(run_hourglass(bench, min(n, SANDBOXED_RUNS), pipeline=False))
    variants = {}
    if processes > 1:  # does a worker process per core pay?
        variants[processes] = _timed(
            run_hourglass(
                bench,
                n,
                pipeline=False,
                sandboxed=False,
                variant=f"{processes}p",
                workers=processes,
            )
        )
    second = {
        "pgqueuer": _timed(run_pgqueuer(bench, n, WATCHER)),
        "batch": _timed(run_skiplocked(bench, base_dsn, n, WATCHER, batch=100)),
        "one": _timed(run_skiplocked(bench, base_dsn, n, WATCHER, batch=1)),
        "spawn": _timed(run_spawn(bench, n, WATCHER)),
    }
    pipeline = _timed(run_hourglass(bench, n, pipeline=True, sandboxed=False, variant="bare"))
    peer = {k: _mean(first[k], second[k]) for k in first}
    rows = []
    scored = ("worker, unsandboxed", "worker, sandboxed")
    for label, figures in (
        (scored[0], bare),
        (scored[1], worker),
        *(
            (f"{p} worker processes x {CONCURRENCY // p} slots, unsandboxed", f)
            for p, f in variants.items()
        ),
        ("producer + worker, jobs due, unsandboxed", pipeline),
    ):
        rate = figures["rate"]
        for key, name, ratio in (
            ("pgqueuer", f"pgqueuer {PGQUEUER}", TARGET_PGQUEUER),
            ("batch", "SKIP LOCKED, 100 per claim", TARGET_BATCH),
            ("one", "SKIP LOCKED, 1 per claim", None),
            ("spawn", "raw spawn", None),
        ):
            baseline = peer[key]["rate"]
            scoring = ratio is not None and label in scored
            rows.append(
                Row(
                    "drain",
                    f"{label}: runs/s vs {name}",
                    rate,
                    "runs/s",
                    baseline,
                    f"{name}; {peer[key]['note']}",
                    target=f">= {ratio}x" if scoring else "",
                    met=rate / baseline >= ratio if scoring and ratio else None,
                    note=figures["load"] if key == "pgqueuer" else "",
                )
            )
    for label, figures in ((scored[0], bare), (scored[1], worker)):
        cpu = sum(figures["cpu_ms"].values())
        for key, name, ratio in (
            ("one", "SKIP LOCKED, 1 per claim", TARGET_CPU),
            ("batch", "SKIP LOCKED, 100 per claim", None),
            ("pgqueuer", f"pgqueuer {PGQUEUER}", None),
        ):
            baseline = sum(peer[key]["cpu_ms"].values())
            rows.append(
                Row(
                    "drain",
                    f"{label}: CPU ms per run, all processes, vs {name}",
                    cpu,
                    "ms",
                    baseline,
                    name,
                    better="lower",
                    target=f"<= {ratio}x" if ratio else "",
                    met=cpu / baseline <= ratio if ratio else None,
                    note=f"hourglass {_cpu_note(figures['cpu_ms'])}; {name} "
                    f"{_cpu_note(peer[key]['cpu_ms'])}",
                )
            )
    bench.notes["drain"] = {
        "first": first,
        "second": second,
        "worker": worker,
        "unsandboxed": bare,
        "processes": variants,
        "pipeline": pipeline,
    }
    return rows


def profile(bench: Bench, n: int, profiler: Profiler) -> dict[str, Any]:
    """A separate pipeline drain with py-spy attached to the producer and the worker (its
    figures are not in the table: sampling slows the processes down)."""
    say(f"profile: producer + worker draining {n:,} due jobs under py-spy")
    return run_hourglass(bench, n, pipeline=True, profiler=profiler)
