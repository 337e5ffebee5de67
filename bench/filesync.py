"""Scenario filesync: chunking, upload, dedup, propagation and a first sync of many files.

The FileSync server runs in a process of its own (as `hourglass serve filesync`) on the
bench's PostgreSQL and a local object store; clients are the case's own client code.

- Chunking: FastCDC MB/s on one core; baseline sha256 MB/s of the same bytes.
- Upload: a 100 MB file of new data, cut, hashed, sent (only missing chunks) and committed;
  baseline: one raw object-store put of the same bytes (the same LocalArtifactStore).
- Dedup: one byte inserted in the middle of that file, the share re-uploaded (counted from
  HaveChunks); beside fixed 4 MiB blocks. And the dedup ratio of a corpus of edited files,
  beside fixed 1 MiB blocks and restic's chunk sizes.
- Propagation: two `hourglass sync` processes on two folders; a 1 KB edit in A until B holds
  it, p50/p99; baseline: the watcher alone (write -> watchfiles event in one folder).
- Many files: the first sync round of N small files (1-4 KB) by a fresh client; baseline:
  a bare put of each file into the object store.

    python -m bench.filesync serve '<json settings>'
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import filesync_chunks
from bench.env import Bench, load, percentile, port, say
from bench.report import Row

MB = 1_000_000
BIG = 100 * MB


async def serve(config: dict[str, Any]) -> None:
    from hourglass.cases.filesync import CASE, server
    from hourglass.cli import serve as cli_serve

    chosen = cli_serve.settings(CASE, namespace="", metrics_listen=None, **config)
    await cli_serve.migrate_case(CASE, database_url=config["database_url"], schema=chosen.schema)
    running = await server.start(chosen)
    print(f"filesync serving on {running.port}", flush=True)
    await asyncio.Event().wait()


async def _token(address: str, workspace: str) -> str:
    from hourglass.cases.filesync.remote import Remote
    from hourglass.cases.filesync.v1 import filesync_pb2 as pb

    remote = Remote(address, workspace, "")
    try:
        made = await remote.call(
            "CreateWorkspace", pb.CreateWorkspaceRequest(workspace=workspace, user="bench")
        )
        return str(made.token)
    finally:
        await remote.close()


async def upload_and_insert(address: str, objects: Path) -> dict[str, float]:
    from hourglass import artifacts
    from hourglass.cases.filesync import blobs, chunking
    from hourglass.cases.filesync.remote import Remote, Upload

    data = random.Random(5).randbytes(BIG)
    raw = artifacts.LocalArtifactStore(objects)
    began = time.perf_counter()
    await blobs.put(raw, "0" * 64, data, verify=False)
    raw_seconds = time.perf_counter() - began
    remote = Remote(address, "upload", await _token(address, "upload"))
    try:
        began = time.perf_counter()
        cut = await asyncio.to_thread(lambda: chunking.Cut(*_cut(data)))
        first = Upload("big.bin", 0, cut, data)
        await remote.send_missing([first], lambda n, s: None)
        (done,) = await remote.commit([first])
        upload_seconds = time.perf_counter() - began
        edited, _, fixed_share = filesync_chunks.insert_one_byte(data)
        cut2 = chunking.Cut(*_cut(edited))
        missing = set(await remote.missing([p.digest for p in cut2.pieces]))
        resent = sum(p.length for p in cut2.pieces if p.digest in missing)
        second = Upload("big.bin", done.version, cut2, edited)
        await remote.send_missing([second], lambda n, s: None)
        (again,) = await remote.commit([second])
        assert again.committed
    finally:
        await remote.close()
    return {
        "upload_mb_s": BIG / upload_seconds / MB, "raw_put_mb_s": BIG / raw_seconds / MB,
        "resent_share": resent / len(edited), "fixed_share": fixed_share,
    }  # fmt: skip


def _cut(data: bytes) -> tuple[list[Any], int, str]:
    import hashlib

    from hourglass.cases.filesync import chunking

    return chunking.pieces(data), len(data), hashlib.sha256(data).hexdigest()


async def watcher_latency(folder: Path, edits: int) -> list[float]:
    """Write -> watchfiles event, in one folder: the floor of any watcher-based sync."""
    import watchfiles

    latencies: list[float] = []
    stop = asyncio.Event()
    seen = asyncio.Event()

    async def watch() -> None:
        async for _ in watchfiles.awatch(folder, stop_event=stop, debounce=500, step=30):
            seen.set()

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    for i in range(edits):
        seen.clear()
        began = time.perf_counter()
        (folder / "probe.txt").write_bytes(os.urandom(1024) + bytes([i % 256]))
        await asyncio.wait_for(seen.wait(), 10)
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return latencies


def propagation(bench: Bench, address: str, edits: int) -> list[float]:
    token_file = bench.root / "filesync.token"
    token_file.write_text(asyncio.run(_token(address, "propagate")))
    folders = [bench.root / "sync-a", bench.root / "sync-b"]
    clients = []
    for name, folder in zip(("a", "b"), folders, strict=True):
        folder.mkdir()
        clients.append(
            bench.start(
                f"sync-{name}",
                [
                    sys.executable,
                    "-m",
                    "hourglass.cli.main",
                    "sync",
                    str(folder),
                    "--workspace",
                    "propagate",
                    "--server",
                    address,
                    "--token-file",
                    str(token_file),
                    "--device",
                    name,
                ],
                bench.helper_env(),
            )
        )
    try:
        for process in clients:
            process.wait_for("hourglass sync:")
        latencies = []
        target = folders[1] / "edited.txt"
        for i in range(edits + 3):  # the first three warm both clients up
            body = os.urandom(1024)
            began = time.perf_counter()
            (folders[0] / "edited.txt").write_bytes(body)
            deadline = began + 30
            while not (target.exists() and target.read_bytes() == body):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"edit {i} never reached the other folder")
                time.sleep(0.002)
            if i >= 3:
                latencies.append(time.perf_counter() - began)
            time.sleep(0.1)
        return latencies
    finally:
        for process in clients:
            bench.stop(process)


async def many_files(address: str, count: int, folder: Path, objects: Path) -> tuple[float, float]:
    """(seconds of a fresh client's first sync round, seconds of bare puts of the files)."""
    from hourglass import artifacts
    from hourglass.cases.filesync import blobs
    from hourglass.cases.filesync.client import Syncer
    from hourglass.cases.filesync.remote import Remote

    rng = random.Random(9)
    bodies = []
    for i in range(count):
        body = rng.randbytes(rng.randrange(1024, 4096))
        sub = folder / f"d{i % 50}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_bytes(body)
        bodies.append(body)
    raw = artifacts.LocalArtifactStore(objects)
    began = time.perf_counter()
    for body in bodies:
        await blobs.put(raw, "0" * 64, body, verify=False)
    bare = time.perf_counter() - began
    remote = Remote(address, "many", await _token(address, "many"), device="bench")
    try:
        syncer = Syncer(folder, remote, device="bench")
        began = time.perf_counter()
        await syncer.round()
        first = time.perf_counter() - began
        assert syncer.state.counters().get("versions_committed") == count
        syncer.state.close()
    finally:
        await remote.close()
    return first, bare


def run(bench: Bench, files: int, *, edits: int) -> list[Row]:
    say(f"filesync: chunking, a 100 MB upload, dedup, {edits} edits, {files:,} small files")
    cut_mb_s, sha_mb_s = filesync_chunks.chunking_speed(64 * MB)
    chunk_load = load()
    ratios = filesync_chunks.dedup_ratios(files=8, size=4 * MB, generations=10)
    grpc_port = port()
    address = f"127.0.0.1:{grpc_port}"
    config = {
        "name": "bench", "database_url": bench.database("bench_filesync"), "redis_url": "",
        "etcd_endpoints": "", "listen": address, "http_listen": None, "spec": {},
        "artifacts": str(bench.root / "filesync-objects"),
    }  # fmt: skip
    server = bench.start(
        "filesync", [sys.executable, "-m", "bench.filesync", "serve", json.dumps(config)],
        bench.helper_env(),
    )  # fmt: skip
    try:
        server.wait_for("filesync serving on")
        up = asyncio.run(upload_and_insert(address, bench.root / "raw-objects"))
        up_load = load()
        with tempfile.TemporaryDirectory(dir=bench.root) as folder:
            watch = asyncio.run(watcher_latency(Path(folder), edits))
        spread = propagation(bench, address, edits)
        spread_load = load()
        first, bare = asyncio.run(
            many_files(address, files, bench.root / "many", bench.root / "raw-many")
        )
        many_load = load()
    finally:
        bench.stop(server)
    p99, watch_p99 = percentile(spread, 99) * 1000, percentile(watch, 99) * 1000
    bench.notes["filesync"] = {**up, **{f"dedup_{k}": v for k, v in ratios.items()}, "p99_ms": p99}
    say(f"  {bench.notes['filesync']}")
    return [
        Row("filesync", "FastCDC chunking, one core", cut_mb_s, "MB/s", baseline=sha_mb_s,
            baseline_name="sha256 of the same bytes", target=">= 300 MB/s",
            met=cut_mb_s >= 300, note=chunk_load),
        Row("filesync", "upload of 100 MB of new data (cut, send, commit)", up["upload_mb_s"],
            "MB/s", baseline=up["raw_put_mb_s"], baseline_name="one raw object-store put",
            target=">= 0.6x baseline", met=up["upload_mb_s"] >= 0.6 * up["raw_put_mb_s"],
            note=up_load),
        Row("filesync", "1 byte inserted in 100 MB: share re-uploaded", up["resent_share"] * 100,
            "%", better="lower", baseline=up["fixed_share"] * 100,
            baseline_name="fixed 4 MiB blocks", target="<= 1%",
            met=up["resent_share"] <= 0.01, note=up_load),
        Row("filesync", "dedup ratio, 8 files x 11 edited versions", ratios["fastcdc"], "x",
            baseline=ratios["restic-sizes"], baseline_name="restic's chunk sizes, same corpus",
            note=f"fixed 1 MiB blocks: {ratios['fixed-1MiB']:.2f}x"),
        Row("filesync", f"1 KB edit A -> B, p99 of {edits}", p99, "ms", better="lower",
            baseline=watch_p99, baseline_name="watcher alone (write -> event)",
            target="<= 1000 ms", met=p99 <= 1000,
            note=f"p50 {percentile(spread, 50) * 1000:.0f} ms; {spread_load}"),
        Row("filesync", f"first sync of {files:,} small files", first, "s", better="lower",
            baseline=bare, baseline_name="bare puts into the object store",
            target="<= 3x baseline", met=first <= 3 * bare, note=many_load),
    ]  # fmt: skip


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[2])))
