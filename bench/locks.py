"""Scenario locks: the Locks API of a real `hourglass api` process on the bench's etcd.

Figures, each beside a baseline from the same run:
  - uncontended Acquire + Release rounds per second, from one client process, against a
    bare etcd loop from one client process with the same client library (aetcd): grant a
    lease, put-if-absent the key on it (one txn), delete the key. Target: at least 0.8x.
  - with WAITERS waiters in line, wake-ups per release: waiters woken by the API (its
    hourglass_lock_wakeups_total counter) per release that had someone waiting. Target: 1.
  - hand-off: from the moment a holder sends Release to the moment the next waiter's Acquire
    answers, in one client process that holds all the waiters' calls. Target: p99 <= 20 ms.
    Baseline: bare etcd, from a delete of a key to the delivery of its watch event.

The clients run as their own processes: `python -m bench.locks MODE '<json arguments>'`,
printing one JSON line with their result.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from bench.env import Bench, load, percentile, port, say
from bench.report import Row

CLIENT = [sys.executable, "-m", "bench.locks"]
WAITERS = 100
TTL = 10


def run(bench: Bench, rounds: int, *, handoffs: int = 1) -> list[Row]:
    assert bench.etcd is not None
    dsn = bench.database("bench_locks")
    env = bench.env(dsn)
    address, metrics = f"127.0.0.1:{port()}", f"127.0.0.1:{port()}"
    api = bench.hourglass(
        "api-locks", "api", env, "--listen", address, "--insecure", "--metrics-listen", metrics
    )
    try:
        say(f"locks: {rounds} uncontended rounds through the API, then bare etcd")
        ours = _client(bench, "rounds", {"server": address, "rounds": rounds})
        bare = _client(
            bench,
            "bare",
            {
                "etcd": bench.etcd.endpoint,
                "prefix": f"/bench-bare-{uuid.uuid4().hex[:8]}/",
                "rounds": rounds,
            },
        )
        say(f"locks: {handoffs} x {WAITERS} waiters in line, each release handing on")
        woken_before = _counter(metrics, "hourglass_lock_wakeups_total")
        line = _client(bench, "line", {"server": address, "waiters": WAITERS, "times": handoffs})
        woken = _counter(metrics, "hourglass_lock_wakeups_total") - woken_before
        watch = _client(bench, "watch", {"etcd": bench.etcd.endpoint, "times": WAITERS * handoffs})
    finally:
        bench.stop(api)
    per_release = woken / line["releases_with_waiters"]
    p99, baseline_p99 = percentile(line["handoffs_ms"], 99), percentile(watch["latency_ms"], 99)
    bench.notes["locks"] = {
        "rounds": ours,
        "bare": bare,
        "wakeups": woken,
        "line": {k: v for k, v in line.items() if k != "handoffs_ms"},
        "handoff_p50_ms": percentile(line["handoffs_ms"], 50),
    }
    ratio = ours["per_second"] / bare["per_second"]
    return [
        Row(
            "locks",
            "uncontended acquire+release",
            ours["per_second"],
            "rounds/s",
            baseline=bare["per_second"],
            baseline_name="bare etcd grant+txn+delete",
            target=">= 0.8x",
            met=ratio >= 0.8,
            note=f"{rounds} rounds, 1 client; {load()}",
        ),
        Row(
            "locks",
            f"wake-ups per release ({WAITERS} waiters)",
            per_release,
            "",
            baseline_name="herd: all waiters",
            better="lower",
            target="1",
            met=abs(per_release - 1) < 1e-9,
            note=f"{woken:.0f} wake-ups for {line['releases_with_waiters']} releases",
        ),
        Row(
            "locks",
            f"hand-off p99 ({WAITERS} waiters)",
            p99,
            "ms",
            baseline=baseline_p99,
            baseline_name="bare etcd delete -> watch event",
            better="lower",
            target="<= 20 ms",
            met=p99 <= 20,
            note=f"p50 {percentile(line['handoffs_ms'], 50):.1f} ms over "
            f"{len(line['handoffs_ms'])} hand-offs; {load()}",
        ),
    ]


def _client(bench: Bench, mode: str, args: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [*CLIENT, mode, json.dumps(args)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=bench.work,
        env=bench.helper_env(),
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"locks client {mode} failed with {result.returncode}")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def _counter(listen: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# --- the clients, each its own process ------------------------------------------------------


def _request(name: str, *, wait: float = 0) -> Any:
    from google.protobuf.duration_pb2 import Duration

    from hourglass.v1 import locks_pb2 as pb

    return pb.AcquireRequest(
        name=name, ttl=Duration(seconds=TTL), wait=Duration(seconds=int(wait)), holder="bench"
    )


def rounds(args: dict[str, Any]) -> dict[str, Any]:
    """A blocking client, as `hourglass lock` is."""
    import grpc

    from hourglass.v1 import locks_pb2 as pb
    from hourglass.v1 import locks_pb2_grpc as pb_grpc

    with grpc.insecure_channel(args["server"]) as channel:
        stub = pb_grpc.LocksStub(channel)
        for _ in range(20):  # warm up the channel and the server
            reply = stub.Acquire(_request("warm"))
            stub.Release(pb.ReleaseRequest(name="warm", lease=reply.lease))
        started = time.perf_counter()
        for _ in range(args["rounds"]):
            reply = stub.Acquire(_request("uncontended"))
            assert reply.acquired
            stub.Release(pb.ReleaseRequest(name="uncontended", lease=reply.lease))
        took = time.perf_counter() - started
    return {"per_second": args["rounds"] / took, "seconds": took}


async def bare(args: dict[str, Any]) -> dict[str, Any]:
    from aetcd import rpc

    from hourglass.locks import Etcd

    etcd = Etcd(args["etcd"], args["prefix"])
    key = f"{args['prefix']}bare".encode()

    async def one() -> None:
        lease = await etcd.grant(TTL)
        response = await etcd._txn(
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key,
                        target=rpc.Compare.CREATE,
                        result=rpc.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"x", lease=lease))
                ],
            )
        )
        assert response.succeeded
        await etcd.client.delete(key)

    for _ in range(20):
        await one()
    started = time.perf_counter()
    for _ in range(args["rounds"]):
        await one()
    took = time.perf_counter() - started
    await etcd.close()
    return {"per_second": args["rounds"] / took, "seconds": took}


async def line(args: dict[str, Any]) -> dict[str, Any]:
    """A holder and `waiters` waiters on one lock; each, once it holds the lock, releases it
    at once. Hand-off: Release sent -> the next waiter's Acquire answered."""
    import grpc

    from hourglass.v1 import locks_pb2 as pb
    from hourglass.v1 import locks_pb2_grpc as pb_grpc

    handoffs: list[float] = []
    releases = 0
    async with grpc.aio.insecure_channel(args["server"]) as channel:
        stub = pb_grpc.LocksStub(channel)
        for time_ in range(args["times"]):
            name = f"line-{time_}"
            holder = await stub.Acquire(_request(name))
            calls = [stub.Acquire(_request(name, wait=600)) for _ in range(args["waiters"])]
            tasks = [asyncio.ensure_future(call) for call in calls]
            await _lined_up(stub, name, args["waiters"])
            pending = set(tasks)
            lease = holder.lease
            for _ in range(args["waiters"]):
                sent = time.perf_counter()
                releasing = asyncio.ensure_future(
                    stub.Release(pb.ReleaseRequest(name=name, lease=lease))
                )
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                handoffs.append((time.perf_counter() - sent) * 1000)
                await releasing
                releases += 1
                assert len(done) == 1, f"{len(done)} waiters got the lock at once"
                reply = done.pop().result()
                assert reply.acquired
                lease = reply.lease
            await stub.Release(pb.ReleaseRequest(name=name, lease=lease))
    return {"handoffs_ms": handoffs, "releases_with_waiters": releases}


async def _lined_up(stub: Any, name: str, count: int) -> None:
    from hourglass.v1 import locks_pb2 as pb

    while True:
        if (await stub.Describe(pb.DescribeRequest(name=name))).waiting >= count:
            return
        await asyncio.sleep(0.05)


async def watch(args: dict[str, Any]) -> dict[str, Any]:
    """Bare etcd: put a key, watch it, delete it; latency from the delete to the event."""
    from aetcd import rtypes

    from hourglass.locks import Etcd

    prefix = f"/bench-watch-{uuid.uuid4().hex[:8]}/"
    etcd = Etcd(args["etcd"], prefix)
    latencies: list[float] = []
    for n in range(args["times"] + 10):
        key = f"{prefix}{n}".encode()
        put = await etcd.client.put(key, b"x")
        events = await etcd.client.watch(
            key, start_revision=put.header.revision + 1, kind=rtypes.EventKind.DELETE
        )
        sent = time.perf_counter()
        await etcd.client.delete(key)
        async for _ in events:
            break
        if n >= 10:
            latencies.append((time.perf_counter() - sent) * 1000)
        await events.cancel()
    await etcd.close()
    return {"latency_ms": latencies}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "rounds":
        result = rounds(args)
    else:
        modes = {"bare": bare, "line": line, "watch": watch}
        result = asyncio.run(modes[mode](args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
