"""`hourglass dev --case leaderboard`, as the README tells a newcomer to try the Leaderboard:
1,000,000 generated events (Zipf over 100,000 keys, 30 days) recorded through the gRPC
address that dev prints, rolled up with the `hourglass leaderboard rollup` CLI (what the
rollup ScheduledJob runs), and FetchLeaderboard for 20 random minute-aligned windows equal to
a brute-force count of the same events.

Then Redis is killed outright (SIGKILL of the redis-server that dev started, found by its data
folder in the process list) and the case server restarted with it. `hourglass dev` has no
way to restart its Redis alone, so the whole dev process is stopped and started again on the
same --data-dir: a fresh redis-server replays its append-only file there, and a fresh
leaderboard server comes up on the same PostgreSQL. The answers are unchanged.

The server runs on the real clock, so a window's start may be raised to the retention horizon
(`now - 30d`, rounded down to the largest bucket): each answer says the window it answered
(`start`, `end`), and the brute force counts that window, which must lie inside the asked one.

HOURGLASS_LB_DEV_EVENTS changes the number of events (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes
from tests.integration.test_leaderboard import batches, brute, generate, windows

EVENTS = int(os.environ.get("HOURGLASS_LB_DEV_EVENTS") or 1_000_000)
CONCURRENCY = 6
ADDRESS = re.compile(r"leaderboard: gRPC (\S+), HTTP http://(\S+) \(schema (\w+)\)")
REDIS = re.compile(r"redis:\s+(redis://\S+)")
Window = tuple[int, int, int]
Answer = tuple[list[tuple[str, int]], int, int]


class Dev:
    """`hourglass dev --case leaderboard` on one data folder, (re)startable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        self.procs = Processes(logs=folder, env=env)
        self.runs = 0
        self.address = ""
        self.redis_url = ""

    def start(self) -> str:
        """Starts dev; returns the leaderboard's gRPC address that it printed."""
        self.runs += 1
        name = f"dev-{self.runs}"
        self.procs.start(
            name, "dev", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}",
            "--case", "leaderboard",
        )  # fmt: skip
        self.procs.wait_for_log(name, "hourglass dev: serving hourglass.v1.JobScheduler", 120)
        found = ADDRESS.search(self.procs.log(name))
        assert found, self.procs.log(name)
        assert found.group(3) == "leaderboard_dev"
        self.address = found.group(1)
        url = REDIS.search(self.procs.log(name))
        assert url, self.procs.log(name)
        self.redis_url = url.group(1)
        return self.address

    def stop(self) -> None:
        name = f"dev-{self.runs}"
        process = self.procs.running[name]
        process.send_signal(signal.SIGINT)
        process.wait(60)
        assert process.returncode == 0, self.procs.log(name)

    def redis_pid(self) -> int:
        """The redis-server that dev started: the one working in the data folder's redis/
        (redis-server changes into its --dir, and rewrites its argv to HOST:PORT)."""
        wanted = (self.data / "redis").resolve()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
                found = "redis-server" in title and (entry / "cwd").resolve() == wanted
            except OSError:
                continue
            if found:
                return int(entry.name)
        raise AssertionError(f"no redis-server working in {wanted}")


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    running = Dev(tmp_path)
    yield running
    running.procs.stop_all()


async def record_all(address: str, requests: list[pb.RecordEventsRequest]) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.LeaderboardStub(channel)
        queue = list(reversed(requests))
        recorded = 0

        async def sender() -> None:
            nonlocal recorded
            while queue:
                answer = await stub.RecordEvents(queue.pop(), timeout=120, wait_for_ready=True)
                recorded += answer.recorded

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return recorded


def fetch_all(address: str, queries: list[Window]) -> list[Answer]:
    """(entries, answered start, answered end) per window."""
    out = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.LeaderboardStub(channel)
        for k, start, end in queries:
            answer = stub.FetchLeaderboard(
                pb.FetchLeaderboardRequest(
                    event_type="score", k=k, start=Timestamp(seconds=start),
                    end=Timestamp(seconds=end),
                ),
                timeout=60, wait_for_ready=True,
            )  # fmt: skip
            assert start <= answer.start.seconds and answer.end.seconds <= end
            entries = [(e.key, e.count) for e in answer.entries]
            out.append((entries, answer.start.seconds, answer.end.seconds))
    return out


def keys_in(url: str, timeout: float = 60) -> int:
    """DBSIZE, once Redis has loaded its append-only file."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as client:
        while True:
            try:
                return int(client.dbsize())
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_million_events_through_dev_exact_and_unchanged_after_redis_and_server_restart(
    dev: Dev,
) -> None:
    started = time.monotonic()
    now = int(time.time()) // 60 * 60
    events = generate(EVENTS, seed=11, now=now)
    times = [instant for instant, _, _ in events]
    requests = batches(events, "score")
    address = dev.start()
    ready = time.monotonic()

    assert asyncio.run(record_all(address, requests)) == EVENTS
    recorded = time.monotonic()

    # The rollup, as the rollup ScheduledJob runs it.
    rolled = dev.procs.cli("leaderboard", "rollup", "--server", address)
    assert rolled.stdout.startswith("rolled up ") and "1d until" in rolled.stdout, rolled
    rolled_at = time.monotonic()

    queries = windows(random.Random(5), now, 20)
    first = fetch_all(address, queries)
    expected: dict[tuple[int, int, int], list[tuple[str, int]]] = {}
    for (k, _, _), (entries, start, end) in zip(queries, first, strict=True):
        want = expected.setdefault((k, start, end), brute(events, times, k=k, start=start, end=end))
        assert entries == want, f"window k={k} [{start}, {end})"
    assert any(entries for entries, _, _ in first)
    checked = time.monotonic()

    # Redis killed outright; dev (and the leaderboard server with it) restarted on the same
    # data folder: Redis replays its append-only file, the server reconnects.
    held = keys_in(dev.redis_url)
    assert held > 0  # the answers came through Redis's sorted sets
    os.kill(dev.redis_pid(), signal.SIGKILL)
    dev.stop()
    address = dev.start()
    assert keys_in(dev.redis_url) == held  # replayed from the append-only file
    again = fetch_all(address, queries)
    for (k, _, _), (entries, start, end) in zip(queries, again, strict=True):
        want = expected.get((k, start, end)) or brute(events, times, k=k, start=start, end=end)
        assert entries == want, f"after the restart: window k={k} [{start}, {end})"
    done = time.monotonic()
    print(
        f"\n{EVENTS:,} events through hourglass dev: dev up in {ready - started:.1f}s, recorded in "
        f"{recorded - ready:.1f}s ({EVENTS / (recorded - ready):,.0f}/s), rolled up in "
        f"{rolled_at - recorded:.1f}s, 20 windows checked in {checked - rolled_at:.1f}s, "
        f"Redis killed and dev restarted and checked in {done - checked:.1f}s"
    )
