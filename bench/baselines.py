"""Baselines and load clients, each run as its own Python process by the bench:

    python -m bench.baselines MODE '<json arguments>'

Each prints progress lines on stderr and, last, one JSON line with its result on stdout.

Modes:
  spawn       the raw rate of spawning a command from asyncio at a given concurrency, with the
              local executor's options (pipes for stdout and stderr, a new session)
  skiplocked  a minimal SKIP LOCKED queue: claim 100 rows per transaction, spawn the command
              for each (same concurrency), mark them done
  skiplocked-one  the plainest SKIP LOCKED queue: `concurrency` loops, each on its own
              connection: claim one row (one transaction), spawn, mark it done, repeat
  sleeploop   sleep until each due time, then spawn the lateness probe (the best case)
  startup     spawn -> first instruction of the probe, and of `sh -c '... $(date)'`
  rpc         ScheduleJob or grpc.health Check calls from one client with its own channel
  inserts     single-row INSERTs (one transaction each) into a table like `jobs`
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SPAWN_ENV = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}


def progress(message: str) -> None:
    print(f"          {message}", file=sys.stderr, flush=True)


async def run_like_executor(argv: list[str], env: dict[str, str]) -> int:
    """Spawns and reaps a process the way hourglass's LocalExecutor does."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    await process.communicate()
    return process.returncode or 0


def _use_watcher(name: str) -> None:
    """'default' is what the worker gets on this Python (3.11: a thread per child);
    'pidfd' is what Python 3.12+ picks on Linux."""
    if name == "pidfd" and sys.version_info < (3, 12):
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())


class Ticker:
    """Prints `done/total` every couple of seconds."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= 2:
            self.last = now
            rate = done / (now - self.start)
            progress(f"{self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s)")


async def spawn(args: dict[str, Any]) -> dict[str, Any]:
    _use_watcher(args.get("watcher", "default"))
    n, concurrency, argv = args["n"], args["concurrency"], args["argv"]
    semaphore = asyncio.Semaphore(concurrency)
    done = 0
    ticker = Ticker(f"spawn {argv[0]} x{concurrency} ({args.get('watcher', 'default')})", n)

    async def one() -> None:
        nonlocal done
        async with semaphore:
            await run_like_executor(argv, SPAWN_ENV)
        done += 1
        ticker.tick(done)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    seconds = time.perf_counter() - start
    return {"n": n, "seconds": seconds, "rate": n / seconds}


async def skiplocked(args: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    _use_watcher(args.get("watcher", "default"))
    dsn, batch, concurrency, argv = args["dsn"], args["batch"], args["concurrency"], args["argv"]
    claim = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    mark = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    semaphore = asyncio.Semaphore(concurrency)
    finished: list[int] = []
    inflight: set[asyncio.Task[None]] = set()
    total = args["n"]
    ticker = Ticker(f"SKIP LOCKED loop, batches of {batch}, x{concurrency}", total)
    marked = 0

    async def one(row_id: int) -> None:
        async with semaphore:
            await run_like_executor(argv, SPAWN_ENV)
        finished.append(row_id)

    async def flush() -> None:
        nonlocal marked
        ids, finished[:] = finished[:], []
        if ids:
            await mark.execute(
                "UPDATE bench_queue SET state = 'done', finished_at = now() WHERE id = ANY(%s)",
                (ids,),
            )
            marked += len(ids)
            ticker.tick(marked)

    start = time.perf_counter()
    while True:
        # Keep the slots fed: claim the next batch once no more than `concurrency` are left.
        while len(inflight) > concurrency:
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            inflight -= done
        await flush()
        async with claim.transaction():
            cursor = await claim.execute(
                "SELECT id FROM bench_queue WHERE state = 'queued' AND available_at <= now()"
                " ORDER BY available_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (batch,),
            )
            ids = [row[0] for row in await cursor.fetchall()]
            if ids:
                await claim.execute(
                    "UPDATE bench_queue SET state = 'running' WHERE id = ANY(%s)", (ids,)
                )
        if not ids:
            if not inflight:
                break
            await asyncio.wait(inflight)
            inflight.clear()
            continue
        for row_id in ids:
            inflight.add(asyncio.create_task(one(row_id)))
    await flush()
    seconds = time.perf_counter() - start
    await claim.close()
    await mark.close()
    return {"n": marked, "seconds": seconds, "rate": marked / seconds}


async def skiplocked_one(args: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    _use_watcher(args.get("watcher", "default"))
    dsn, concurrency, argv, total = args["dsn"], args["concurrency"], args["argv"], args["n"]
    ticker = Ticker(f"SKIP LOCKED loop, one per transaction, x{concurrency}", total)
    done = 0

    async def loop() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                cursor = await conn.execute(
                    "UPDATE bench_queue SET state = 'running' WHERE id = (SELECT id"
                    " FROM bench_queue WHERE state = 'queued' AND available_at <= now()"
                    " ORDER BY available_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
                )
                row = await cursor.fetchone()
                if row is None:
                    return
                await run_like_executor(argv, SPAWN_ENV)
                await conn.execute(
                    "UPDATE bench_queue SET state = 'done', finished_at = now() WHERE id = %s",
                    (row[0],),
                )
                done += 1
                ticker.tick(done)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    return {"n": done, "seconds": seconds, "rate": done / seconds}


def due_times(t0: float, step: float, n: int) -> list[float]:
    return [t0 + i * step for i in range(n)]


def iso(epoch: float) -> str:
    """HOURGLASS_SCHEDULED_AT as the worker writes it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


async def sleeploop(args: dict[str, Any]) -> dict[str, Any]:
    """The best case of lateness: one loop that sleeps until each due time and spawns."""
    _use_watcher(args.get("watcher", "default"))
    helper, out = args["helper"], args["out"]
    times = due_times(args["t0"], args["step"], args["n"])
    loop = asyncio.get_running_loop()
    overshoot: list[float] = []
    children: list[asyncio.Task[int]] = []
    ticker = Ticker("sleep-until-due loop", len(times))
    for i, due in enumerate(times):
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        overshoot.append(time.time() - due)
        env = {**SPAWN_ENV, "HOURGLASS_SCHEDULED_AT": iso(due)}
        children.append(loop.create_task(run_like_executor([helper, out], env)))
        ticker.tick(i + 1)
    await asyncio.gather(*children)
    return {"n": len(times), "overshoot": overshoot}


async def startup(args: dict[str, Any]) -> dict[str, Any]:
    """Spawn -> first instruction, one process at a time: the probe vs. a shell one-liner."""
    helper, folder, count = args["helper"], Path(args["folder"]), args["count"]
    commands = {
        "probe": lambda out: [helper, out],
        "sh": lambda out: ["sh", "-c", f'echo "$HOURGLASS_SCHEDULED_AT $(date +%s.%N)" >> {out}'],
    }
    result: dict[str, Any] = {}
    for name, command in commands.items():
        out = folder / f"startup-{name}.txt"
        for _ in range(count):
            before = time.time()
            env = {**SPAWN_ENV, "HOURGLASS_SCHEDULED_AT": iso(before)}
            await run_like_executor(command(str(out)), env)
        result[name] = [
            float(line.split()[1]) - datetime.fromisoformat(line.split()[0]).timestamp()
            for line in out.read_text().splitlines()
        ]
    return result


def _wait_until(epoch: float) -> float:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)
    return time.time()


def schedule_request(i: int) -> Any:
    from hourglass.v1 import scheduler_pb2 as pb

    schedule = pb.Schedule()
    schedule.at.FromDatetime(datetime(2099, 1, 1, tzinfo=UTC))
    return pb.ScheduleJobRequest(
        request_id=str(uuid.uuid4()),
        spec=pb.JobSpec(
            name=f"bench-{i}",
            task=pb.Task(command=["/bin/true"]),
            schedule=schedule,
            max_attempts=1,
        ),
    )


def rpc(args: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(args["target"])
    calls, kind = args["calls"], args["kind"]
    # What `hourglass --token` sends; the API caches the token's namespace for a few seconds.
    metadata = (("authorization", f"Bearer {args['token']}"),) if args.get("token") else ()
    if kind == "schedule":
        stub = pb_grpc.JobSchedulerStub(channel)
        requests = [schedule_request(i) for i in range(calls + 1)]

        def call(i: int) -> None:
            stub.ScheduleJob(requests[i], timeout=30, metadata=metadata)
    elif kind == "batch":
        from hourglass.v1 import scheduler_pb2 as pb

        stub = pb_grpc.JobSchedulerStub(channel)
        size = args["batch"]
        batches = [
            pb.ScheduleJobsRequest(requests=[schedule_request(j) for j in range(size)])
            for _ in range(calls + 1)
        ]

        def call(i: int) -> None:
            stub.ScheduleJobs(batches[i], timeout=120, metadata=metadata)
    else:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="")

        def call(i: int) -> None:
            health.Check(check, timeout=30, metadata=metadata)

    call(calls)  # connect and warm up
    start = _wait_until(args["start_at"])
    for i in range(calls):
        call(i)
    end = time.time()
    channel.close()
    return {"calls": calls * args.get("batch", 1), "start": start, "end": end}


def inserts(args: dict[str, Any]) -> dict[str, Any]:
    """The floor of the store: one INSERT per transaction into a table like jobs (same
    columns and indexes), with a row like the one ScheduleJob writes."""
    import psycopg
    from psycopg.types.json import Jsonb

    calls = args["calls"]
    with psycopg.connect(args["dsn"], autocommit=True) as conn:
        sql = (
            "INSERT INTO bench_jobs (id, name, request_id, command, schedule, state,"
            " next_fire_at, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, 'active', %s, now(), now())"
        )
        due = datetime(2099, 1, 1, tzinfo=UTC)
        schedule = Jsonb({"kind": "at", "at": due.isoformat()})

        def call(i: int) -> None:
            conn.execute(
                sql, (uuid.uuid4(), f"bench-{i}", str(uuid.uuid4()), ["/bin/true"], schedule, due)
            )

        size = args.get("batch", 1)

        def batch(i: int) -> None:
            # The floor of a batch: one transaction that COPYs the rows in.
            with (
                conn.transaction(),
                conn.cursor().copy(
                    "COPY bench_jobs (id, name, request_id, command, schedule, state,"
                    " next_fire_at, created_at, updated_at) FROM STDIN"
                ) as copy,
            ):
                now = datetime.now(UTC)
                for j in range(size):
                    copy.write_row(
                        (
                            uuid.uuid4(),
                            f"bench-{i}-{j}",
                            str(uuid.uuid4()),
                            ["/bin/true"],
                            schedule,
                            "active",
                            due,
                            now,
                            now,
                        )
                    )

        work = call if size == 1 else batch
        work(-1)
        start = _wait_until(args["start_at"])
        for i in range(calls):
            work(i)
        end = time.time()
    return {"calls": calls * size, "start": start, "end": end}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    sync = {"rpc": rpc, "inserts": inserts}
    if mode in sync:
        result = sync[mode](args)
    else:
        modes = {
            "spawn": spawn,
            "skiplocked": skiplocked,
            "skiplocked-one": skiplocked_one,
            "sleeploop": sleeploop,
            "startup": startup,
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
