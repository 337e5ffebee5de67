"""pgqueuer's enqueue, the peer of ScheduleJob and ScheduleJobs, as a client process:

    python -m bench.pgqueuer_submit install '{"dsn": ...}'
    python -m bench.pgqueuer_submit enqueue '{"dsn": ..., "calls": N, "batch": 1, "start_at": T}'

`enqueue` with batch 1 is pgqueuer's `Queries.enqueue(entrypoint, payload)`, one job per call,
each its own transaction (the connection is in autocommit, as pgqueuer requires), so a job is
durable when the call returns, like a ScheduleJob. With batch B it is the list form, B jobs in
one statement. The driver is psycopg's, the driver hourglass uses. The payload is the spec a
ScheduleJob carries, as JSON: pgqueuer stores bytes and checks nothing.

Prints one JSON line on stdout, the shape of bench.baselines' clients.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

ENTRYPOINT = "bench"
PAYLOAD = json.dumps(
    {
        "name": "bench",
        "task": {"command": ["/bin/true"]},
        "schedule": {"at": "2099-01-01T00:00:00Z"},
    }
).encode()


async def install(args: dict[str, Any]) -> dict[str, Any]:
    import psycopg
    from pgqueuer.queries import Queries

    async with await psycopg.AsyncConnection.connect(args["dsn"], autocommit=True) as conn:
        queries = Queries.from_psycopg_connection(conn)
        if not await queries.schema_is_installed():
            await queries.install()
    return {}


async def _wait_until(epoch: float) -> float:
    delay = epoch - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return time.time()


async def enqueue(args: dict[str, Any]) -> dict[str, Any]:
    import psycopg
    from pgqueuer.queries import Queries

    calls, size = args["calls"], args.get("batch", 1)
    async with await psycopg.AsyncConnection.connect(args["dsn"], autocommit=True) as conn:
        queries = Queries.from_psycopg_connection(conn)
        entrypoints, payloads, priorities = [ENTRYPOINT] * size, [PAYLOAD] * size, [0] * size

        async def call() -> None:
            if size == 1:
                await queries.enqueue(ENTRYPOINT, PAYLOAD)
            else:
                await queries.enqueue(entrypoints, payloads, priorities)

        await call()  # connect and warm up (and let psycopg prepare the statement)
        start = await _wait_until(args["start_at"])
        for _ in range(calls):
            await call()
        end = time.time()
    return {"calls": calls * size, "start": start, "end": end}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    result = asyncio.run({"install": install, "enqueue": enqueue}[mode](args))
    own = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu"] = {"self": own.ru_utime + own.ru_stime, "children": 0.0}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
