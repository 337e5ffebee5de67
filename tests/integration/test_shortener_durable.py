"""Shorten is durable on return, with group commit: a write server (a process of its own)
answers eight concurrent clients from shared batches, and is killed with SIGKILL the moment
the client holds its 300th answer, with calls still in flight. Every key it answered then
redirects from a fresh read server, to the URL it was made for; calls that got no answer
may or may not have been stored, and a retry of them would get a new key."""

from __future__ import annotations

import asyncio
import http.client
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from hourglass.cases import Settings
from hourglass.cases.shortener import server as url_server
from hourglass.cases.shortener.v1 import shortener_pb2 as pb
from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc
from hourglass.embedded import EmbeddedRedis, free_port
from tests.integration.test_shortener import _server_process, prepared

CLIENTS = 8
KILL_AFTER = 300


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _follow(port: int | None, key: str) -> tuple[int, str]:
    assert port is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/{key}")
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Location") or ""
    finally:
        connection.close()


async def test_every_answered_key_resolves_after_a_sigkill_right_after_its_answer(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    name = f"d{uuid.uuid4().hex[:8]}"
    chosen = await prepared(database_url, redis_server.url, name, tmp_path, role="write")
    address = f"127.0.0.1:{free_port()}"
    process = _server_process(
        Settings(**{**_fields(chosen), "listen": address, "http_listen": None})
    )
    answered: dict[str, str] = {}
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ShortenerStub(channel)
            await stub.Shorten(
                pb.ShortenRequest(url="https://e.example/warm"), timeout=60, wait_for_ready=True
            )
            counter = iter(range(10**6))
            killed = asyncio.Event()

            async def client() -> None:
                while not killed.is_set():
                    url = f"https://e.example/{next(counter)}"
                    try:
                        made = await stub.Shorten(pb.ShortenRequest(url=url), timeout=30)
                    except grpc.aio.AioRpcError:
                        assert killed.is_set()  # only the kill makes a call fail
                        return
                    answered[made.key] = url
                    if len(answered) >= KILL_AFTER and not killed.is_set():
                        process.send_signal(signal.SIGKILL)  # right after this answer
                        killed.set()

            await asyncio.gather(*(client() for _ in range(CLIENTS)))
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(answered) >= KILL_AFTER

    with psycopg.connect(chosen.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT key, url FROM links WHERE key = ANY(%s)", (list(answered),)
        ).fetchall()
    assert dict(rows) == answered  # every answer was committed before it was sent
    reader = await url_server.start(
        Settings(**{**_fields(chosen), "role": "read", "http_listen": "127.0.0.1:0"})
    )
    try:
        for key, url in answered.items():
            assert await asyncio.to_thread(_follow, reader.http_port, key) == (302, url)
    finally:
        await reader.stop(grace=None)


def _fields(chosen: Settings) -> dict[str, object]:
    names = ("name", "database_url", "redis_url", "etcd_endpoints", "listen", "namespace",
             "schema", "role", "artifacts", "http_listen", "spec")  # fmt: skip
    return {name: getattr(chosen, name) for name in names}
