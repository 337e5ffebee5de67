"""`hourglass dev --case metrics`, as the README tells a newcomer to try the MetricsPipeline:
the real dev process (embedded PostgreSQL, etcd, Redis with its append-only file fsynced on
every write, a local object store), points and log lines sent and read with the real CLI, a
line-protocol push over HTTP, and a stream of batches over gRPC during which a consumer, then
Redis, are SIGKILLed (Redis restarted from its append-only file). Counted from the outside:
every point the server acknowledged is stored, once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc
from hourglass.embedded import EmbeddedRedis, free_port
from tests.acceptance.conftest import Processes

ADDRESS = re.compile(r"metrics: gRPC (\S+), HTTP http://(\S+) \(schema (\w+)\)")
WAIT = 120.0
SERIES = 20
PER_SERIES = 10


class Dev:
    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        self.procs = Processes(logs=folder, env=env)
        self.folder = folder
        self.grpc = self.http = self.dsn = self.redis_url = ""

    def start(self) -> None:
        self.procs.start(
            "dev", "dev", "--data-dir", str(self.folder / "data"),
            "--listen", f"127.0.0.1:{free_port()}", "--case", "metrics",
        )  # fmt: skip
        self.procs.wait_for_log("dev", "hourglass dev: serving hourglass.v1.JobScheduler", WAIT)
        text = self.procs.log("dev")
        found = ADDRESS.search(text)
        assert found and found.group(3) == "metrics_dev", text
        self.grpc, self.http = found.group(1), found.group(2)
        self.dsn = re.search(r"database: (\S+)", text).group(1)  # type: ignore[union-attr]
        self.redis_url = re.search(r"redis: +(\S+)", text).group(1)  # type: ignore[union-attr]
        self.procs.wait_for_log("dev", "hourglass metrics dev serving", WAIT)

    def cli(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        done = self.procs.cli("metrics", "--server", self.grpc, *args, check=check)
        return done.returncode, done.stdout.strip(), done.stderr.strip()

    def consumer(self, name: str) -> None:
        spec = self.folder / "spec.json"
        spec.write_text(json.dumps({"claimAfter": "2s"}))
        self.procs.start(
            name, "serve", "metrics", "--name", "dev", "--role", "consumer",
            "--database-url", self.dsn, "--redis-url", self.redis_url,
            "--artifacts", str(self.folder / "data" / "artifacts"), "--spec", str(spec),
        )  # fmt: skip
        self.procs.wait_for_log(name, "consuming", WAIT)


@pytest.fixture
def dev() -> Iterator[Dev]:
    # A folder of its own that the embedded PostgreSQL's user can reach whatever the mode
    # of pytest's shared temporary root is (another run may have made it 0700).
    folder = Path(tempfile.mkdtemp(prefix="hourglass-metrics-dev-"))
    folder.chmod(0o755)
    running = Dev(folder)
    try:
        running.start()
        yield running
    finally:
        running.procs.stop_all()
        shutil.rmtree(folder, ignore_errors=True)


def test_send_and_read_points_and_log_lines_with_the_cli_and_http(dev: Dev) -> None:
    now = int(time.time() * 1000)
    for at, value in ((now - 20_000, 1.5), (now - 10_000, 2.5)):
        assert dev.cli("send", 'room_temp{room="lab"}', str(value), "--at", str(at))[1] == (
            "accepted 1"
        )
    assert dev.cli("log", '{app="web",level="warn"}', "disk nearly full")[1] == "accepted 1"
    body = f"room_temp,room=hall value=20.25 {now - 5_000}".encode()
    request = urllib.request.Request(
        f"http://{dev.http}/api/v2/write?org=o&bucket=b&precision=ms", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 204
    deadline = time.monotonic() + WAIT
    while True:
        answers = [
            dev.cli(*args, "--since", "1h", check=False)
            for args in (
                ("fetch", 'room_temp{room="lab"}'),
                ("fetch", 'room_temp_value{room="hall"}'),
                ("logs", '{app="web"}'),
            )
        ]
        if all(code == 0 for code, _, _ in answers):
            got, hall, logs = (json.loads(out) for _, out, _ in answers)
            if got.get("datasets") and hall.get("datasets") and logs.get("streams"):
                break
        assert time.monotonic() < deadline, dev.procs.log("dev")
        time.sleep(0.5)
    (dataset,) = got["datasets"]
    assert [int(t) for t in dataset["timestampsMs"]] == [now - 20_000, now - 10_000]
    assert dataset["values"] == [1.5, 2.5]
    assert hall["datasets"][0]["values"] == [20.25]
    assert logs["streams"][0]["lines"] == ["disk nearly full"]
    for args, field in (
        (("send", 'x{bad-label="1"}', "1"), "series"),
        (("send", "up", "nan"), "series[0].values[0]"),
        (("send", "up", "1", "--at", "1"), "series[0].timestamps_ms[0]"),
        (("fetch", "up{", "--since", "1h"), "selector"),
    ):
        code, out, err = dev.cli(*args, check=False)
        assert code == 2 and not out and f"{field}:" in err, (args, err)


def _redis_pid(parent: int, port: int) -> int:
    """The dev process's redis-server (it renames itself "redis-server HOST:PORT")."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (entry / "status").read_text()
        except OSError:
            continue
        mine = f"\nPPid:\t{parent}\n" in status
        if mine and b"redis-server" in title and title.rstrip().endswith(f":{port}".encode()):
            return int(entry.name)
    raise AssertionError(f"no redis-server of process {parent} on port {port}")


class Sender(threading.Thread):
    """Sends batches with fresh timestamps until stopped; a batch that fails is sent again
    until the server acknowledges it. Records what was acknowledged and what was sent."""

    def __init__(self, address: str, base: int) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.base = base
        self.acked: set[tuple[str, int]] = set()
        self.sent: set[tuple[str, int]] = set()
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.MetricsStub(channel)
            batch = 0
            while not self.halt.is_set():
                request = pb.SendMetricsRequest()
                points = []
                for s in range(SERIES):
                    stamps = [self.base + batch * PER_SERIES + i for i in range(PER_SERIES)]
                    request.series.append(
                        pb.Series(
                            labels=[pb.Label(name="__name__", value="load"),
                                    pb.Label(name="host", value=f"h{s}")],
                            timestamps_ms=stamps, values=[float(t % 97) for t in stamps],
                        )
                    )  # fmt: skip
                    points += [(f"h{s}", t) for t in stamps]
                self.sent.update(points)
                while not self.halt.is_set():
                    try:
                        stub.SendMetrics(request, timeout=10)
                        self.acked.update(points)
                        break
                    except grpc.RpcError:
                        self.failures += 1
                        time.sleep(0.2)
                batch += 1


def test_every_acknowledged_point_survives_a_killed_consumer_and_a_killed_redis(
    dev: Dev,
) -> None:
    dev.consumer("consumer-a")
    dev.consumer("consumer-b")
    base = int(time.time() * 1000) - 3_600_000
    sender = Sender(dev.grpc, base)
    sender.start()
    redis: EmbeddedRedis | None = None
    try:
        _wait(lambda: len(sender.acked) >= 20 * SERIES * PER_SERIES, "a stream of batches")
        os.kill(dev.procs.running["consumer-a"].pid, signal.SIGKILL)
        dev.procs.killed.append("consumer-a")
        _wait(lambda: len(sender.acked) >= 40 * SERIES * PER_SERIES, "more batches")
        port = int(dev.redis_url.rsplit(":", 1)[1].split("/")[0])
        os.kill(_redis_pid(dev.procs.running["dev"].pid, port), signal.SIGKILL)
        failed = sender.failures
        _wait(lambda: sender.failures > failed, "the sender to see Redis gone")
        redis = EmbeddedRedis(dev.folder / "data" / "redis", port=port).start()
        acked = len(sender.acked)
        _wait(lambda: len(sender.acked) > acked + 10 * SERIES * PER_SERIES, "sends to resume")
    finally:
        sender.halt.set()
        sender.join(30)
    try:
        with grpc.insecure_channel(dev.grpc) as channel:
            stub = pb_grpc.MetricsStub(channel)

            def stored() -> list[tuple[str, int]]:
                answer = stub.FetchDataset(
                    pb.FetchDatasetRequest(selector="load", start_ms=base, end_ms=base + 10**9),
                    timeout=60,
                )
                return [
                    (next(lb.value for lb in d.labels if lb.name == "host"), t)
                    for d in answer.datasets for t in d.timestamps_ms
                ]  # fmt: skip

            _wait(lambda: sender.acked <= set(stored()), "every acknowledged point")
            found = stored()
            assert len(found) == len(set(found))  # each point once
            assert set(found) <= sender.sent  # nothing invented
        # After compaction, each point is in the files once.
        code, out, _ = dev.cli("compact")
        assert code == 0 and out.startswith("compacted"), out
        with psycopg.connect(dev.dsn) as conn:
            rows = conn.execute(
                "SELECT sum(rows) FROM metrics_dev.segments WHERE kind = 'points'"
            ).fetchone()
        assert rows is not None and rows[0] == len(found)
    finally:
        if redis is not None:
            redis.stop()


def _wait(check: object, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
