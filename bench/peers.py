"""Peers: the same workloads run by another Python job queue on the same PostgreSQL.

    python -m bench.peers MODE '<json arguments>'

Like bench.baselines, each mode runs in its own Python process, prints progress on stderr and,
last, one JSON line with its result (and its own CPU seconds) on stdout.

Modes (pgqueuer, the version pinned in pyproject's `bench` extra):
  pgqueuer-queue     installs pgqueuer's schema and queues N jobs (the drain's setup)
  pgqueuer-drain     N jobs already queued; one QueueManager (drain mode) whose entrypoint
                     spawns the command with the local executor's options, at most
                     `concurrency` at once (`concurrency_limit`, pgqueuer's own knob).
  pgqueuer-lateness  N jobs due at the given times (`execute_after`); the entrypoint spawns the
                     lateness probe with HOURGLASS_SCHEDULED_AT set to the job's due time.

pgqueuer runs on asyncio's default loop with the pidfd child watcher, as hourglass's worker
does, so that both pay the same for a spawn. Its batch size stays at its default (10), and a
semaphore in the entrypoint runs at most `concurrency` commands at once. pgqueuer's own limits
are not used: with either of them (`concurrency_limit=8`, or `max_concurrent_tasks=8` with
batches of 4) it drained 3 and 6 jobs/s on the bench machine, since a finished job still
counts against the limit, in SQL, until its status buffer is flushed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.baselines import SPAWN_ENV, Ticker, _use_watcher, progress, run_like_executor

ENTRYPOINT = "bench"


async def _connect(dsn: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def _driver(dsn: str) -> Any:
    """pgqueuer's asyncpg driver, as its documentation sets it up. Its psycopg driver shares
    one connection between LISTEN and the queries, and drained 22 jobs/s here: a dequeue
    waited for the next notification to free the connection."""
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import AsyncpgDriver

    return AsyncpgDriver(await asyncpg.connect(dsn))


async def _install(dsn: str) -> None:
    """pgqueuer's own schema (its `pgq install`), in the peer's fresh database."""
    from pgqueuer import PsycopgDriver, Queries

    conn = await _connect(dsn)
    try:
        await Queries(PsycopgDriver(conn)).install()
    finally:
        await conn.close()


async def _enqueue(dsn: str, payloads: list[bytes | None]) -> None:
    from pgqueuer import PsycopgDriver, Queries

    conn = await _connect(dsn)
    try:
        queries = Queries(PsycopgDriver(conn))
        for start in range(0, len(payloads), 1000):
            chunk = payloads[start : start + 1000]
            await queries.enqueue([ENTRYPOINT] * len(chunk), chunk, [0] * len(chunk))
    finally:
        await conn.close()


async def pgqueuer_queue(args: dict[str, Any]) -> dict[str, Any]:
    """Installs pgqueuer's schema and queues N jobs: the drain's setup, outside its CPU."""
    await _install(args["dsn"])
    await _enqueue(args["dsn"], [None] * args["n"])
    return {"n": args["n"]}


async def pgqueuer_drain(args: dict[str, Any]) -> dict[str, Any]:
    from pgqueuer import Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    _use_watcher(args.get("watcher", "pidfd"))
    dsn, n, argv = args["dsn"], args["n"], args["argv"]
    driver = await _driver(dsn)
    manager = QueueManager(Queries(driver))
    limit = args.get("limit", "semaphore")
    ticker = Ticker(f"pgqueuer drain x{args['concurrency']} ({limit})", n)
    done = 0
    slots = asyncio.Semaphore(args["concurrency"] if limit == "semaphore" else n)
    batch = args.get("batch", 10)

    @manager.entrypoint(
        ENTRYPOINT, concurrency_limit=args["concurrency"] if limit == "entrypoint" else 0
    )
    async def job(_: Any) -> None:
        nonlocal done
        async with slots:
            await run_like_executor(argv, SPAWN_ENV)
        done += 1
        ticker.tick(done)

    start = time.perf_counter()
    await manager.run(
        mode=QueueExecutionMode.drain,
        dequeue_timeout=timedelta(seconds=1),
        batch_size=batch,
        max_concurrent_tasks=args["concurrency"] if limit == "global" else None,
    )
    seconds = time.perf_counter() - start
    await driver._connection.close()
    if done != n:
        raise RuntimeError(f"pgqueuer ran {done:,} of {n:,} jobs")
    return {"n": done, "seconds": seconds, "rate": done / seconds}


async def pgqueuer_lateness(args: dict[str, Any]) -> dict[str, Any]:
    """Jobs due at `times` (epoch seconds); each spawns the probe, which records its start."""
    from pgqueuer import Queries, QueueManager

    _use_watcher(args.get("watcher", "pidfd"))
    dsn, helper, out, times = args["dsn"], args["helper"], args["out"], args["times"]
    await _install(dsn)
    due = [datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds") for t in times]
    await _enqueue(dsn, [text.encode() for text in due])
    # pgqueuer's `execute_after` is relative to the insert's now(): set each job's due time
    # exactly instead, so that the time taken by the inserts does not count against it.
    conn = await _connect(dsn)
    await conn.execute(
        "UPDATE pgqueuer SET execute_after = convert_from(payload, 'UTF8')::timestamptz"
    )
    await conn.execute("ANALYZE pgqueuer")
    await conn.close()
    stored = time.time()
    if stored > times[0] - 0.5:
        progress(f"WARNING: jobs stored only {times[0] - stored:.2f}s before the first is due")
    driver = await _driver(dsn)
    manager = QueueManager(Queries(driver))
    ticker = Ticker("pgqueuer lateness", len(times))
    done = 0

    slots = asyncio.Semaphore(args["concurrency"])

    @manager.entrypoint(ENTRYPOINT)
    async def job(job: Any) -> None:
        nonlocal done
        env = {**SPAWN_ENV, "HOURGLASS_SCHEDULED_AT": job.payload.decode()}
        async with slots:
            await run_like_executor([helper, out], env)
        done += 1
        ticker.tick(done)
        if done == len(times):
            manager.shutdown.set()

    # The default dequeue timeout; pgqueuer shortens it to the next job's due time itself.
    await manager.run()
    await driver._connection.close()
    return {"n": done, "stored_before_first_fire": times[0] - stored}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    modes = {
        "pgqueuer-queue": pgqueuer_queue,
        "pgqueuer-drain": pgqueuer_drain,
        "pgqueuer-lateness": pgqueuer_lateness,
    }
    result = asyncio.run(modes[mode](args))
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    result["cpu"] = {
        "self": own.ru_utime + own.ru_stime,
        "children": children.ru_utime + children.ru_stime,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
