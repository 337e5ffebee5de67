"""`hourglass dev --case shortener`, as the README tells a newcomer to try the UrlShortener:
the real dev process (embedded PostgreSQL, etcd, Redis, a local object store), links and
pastes made with the real CLI (`hourglass shortener --server ADDRESS ...`, the address that
dev prints), and followed over HTTP on the read address it prints, without following the
redirect, so the test sees the status and Location that a browser would.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hourglass.embedded import free_port
from tests.acceptance.conftest import HOURGLASS, Processes

ADDRESS = re.compile(r"shortener: gRPC (\S+), HTTP http://(\S+) \(schema (\w+)\)")
WAIT = 120.0


class Dev:
    """`hourglass dev --case shortener` in its own folder, with the CLI pointed at it."""

    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        self.procs = Processes(logs=folder, env=env)
        self.folder = folder
        self.grpc = ""
        self.http = ""

    def start(self) -> None:
        self.procs.start(
            "dev", "dev", "--data-dir", str(self.folder / "data"),
            "--listen", f"127.0.0.1:{free_port()}", "--case", "shortener",
        )  # fmt: skip
        self.procs.wait_for_log("dev", "hourglass dev: serving hourglass.v1.JobScheduler", WAIT)
        found = ADDRESS.search(self.procs.log("dev"))
        assert found, self.procs.log("dev")
        assert found.group(3) == "shortener_dev"
        self.grpc, self.http = found.group(1), found.group(2)
        # dev prints the addresses as the servers start: wait for the read service's health.
        deadline = time.monotonic() + WAIT
        while self.get("/healthz")[0] != 200:
            assert time.monotonic() < deadline, self.procs.log("dev")
            time.sleep(0.1)

    def cli(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        done = self.procs.cli("shortener", "--server", self.grpc, *args, check=check)
        return done.returncode, done.stdout.strip(), done.stderr.strip()

    def made(self, *args: str) -> tuple[str, str]:
        """(key, delete token) of what `shorten`/`paste` made: the first line is the short
        URL (or the key), the second the token."""
        first, second = self.cli(*args)[1].splitlines()
        assert second.startswith("delete token: ")
        return first.rsplit("/", 1)[-1], second.removeprefix("delete token: ")

    def key(self, *args: str) -> str:
        return self.made(*args)[0]

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        host, _, port = self.http.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        except OSError:
            return 0, {}, b""
        finally:
            connection.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    running = Dev(tmp_path)
    try:  # a start that fails stops what it started too
        running.start()
        yield running
    finally:
        running.procs.stop_all()


def test_shorten_with_the_cli_and_follow_over_http(dev: Dev) -> None:
    target = "https://example.com/docs/page?x=1&y=%C3%A4#part"
    key = dev.key("shorten", target)
    status, headers, _ = dev.get(f"/{key}")
    assert (status, headers["Location"]) == (302, target)
    # A custom alias: served, and refused when taken (bad input: exit code 2).
    alias, aliased = dev.made("shorten", "https://example.org/", "--alias", "my-docs")
    assert alias == "my-docs"
    assert dev.get("/my-docs")[1]["Location"] == "https://example.org/"
    code, _, err = dev.cli("shorten", "https://example.net/", "--alias", "my-docs", check=False)
    assert code == 2 and "ALREADY_EXISTS" in err and "alias" in err
    assert dev.get("/my-docs")[1]["Location"] == "https://example.org/"
    # Only the token answered to its maker deletes a key; then it is 410.
    other = dev.made("shorten", "https://example.com/other")[1]
    code, _, err = dev.cli("delete", key, "--token", other, check=False)
    assert code == 1 and "PERMISSION_DENIED" in err
    assert dev.get(f"/{key}")[0] == 302
    assert dev.cli("delete", "my-docs", "--token", aliased)[1] == "deleted"
    deadline = time.monotonic() + WAIT  # the read server's near cache keeps it 2 s at most
    while (status := dev.get("/my-docs")[0]) != 410:
        assert status == 302 and time.monotonic() < deadline, status
        time.sleep(0.2)
    # Unknown keys are 404 with a JSON body, whether generated-shaped or alias-shaped.
    for unknown in ("/zzzzzzz", "/no-such-link"):
        status, headers, body = dev.get(unknown)
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["field"] == "key"


def test_a_link_answers_410_once_it_expires(dev: Dev) -> None:
    key = dev.key("shorten", "https://example.com/soon", "--expires-in", "5s")
    expires = _seconds(json.loads(dev.cli("stats", key)[1])["expiresAt"])
    status, headers, _ = dev.get(f"/{key}")
    if time.time() < expires - 0.5:  # still live when asked (a loaded machine may be late)
        assert (status, headers.get("Location")) == (302, "https://example.com/soon")
    deadline = time.time() + WAIT
    while (answer := dev.get(f"/{key}"))[0] != 410:
        assert answer[0] == 302 and time.time() < deadline, answer
        time.sleep(0.2)
    assert time.time() >= expires - 1  # not before its time (1 s for clock rounding)
    assert json.loads(answer[2])["field"] == "key"


def _seconds(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def test_pastes_round_trip_byte_for_byte(dev: Dev, tmp_path: Path) -> None:
    text = "def f(x):\n    return x < 1 and '<b>' or \"ü\"\n\tcafé ☕\r\n"
    binary = bytes([0, 255, 0x80, 0xC3, 0x28, 10, 13, 0]) + random.Random(3).randbytes(100_000)
    files = {"notes.py": text.encode(), "blob.bin": binary}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        key = dev.key("paste", str(path), "--syntax", "python")
        status, headers, body = dev.get(f"/p/{key}?format=raw")
        assert status == 200 and body == data, name
        wanted = "application/octet-stream" if name == "blob.bin" else "text/plain"
        assert headers["Content-Type"].startswith(wanted)
        assert headers["X-Content-Type-Options"] == "nosniff"
    # From stdin too; an empty paste is bad input.
    piped = subprocess.run(
        [*HOURGLASS, "shortener", "--server", dev.grpc, "paste", "-"],
        input=text.encode(), capture_output=True, env=dev.procs.env, timeout=60, check=True,
    )  # fmt: skip
    key = piped.stdout.decode().splitlines()[0]
    assert dev.get(f"/p/{key}?format=raw")[2] == text.encode()
    (tmp_path / "empty.txt").write_bytes(b"")
    code, out, err = dev.cli("paste", str(tmp_path / "empty.txt"), check=False)
    assert code == 2 and not out and "text: must not be empty" in err, err
    # Rendered, the page escapes the text.
    key = dev.key("paste", str(tmp_path / "notes.py"))
    status, headers, page = dev.get(f"/p/{key}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"&lt;b&gt;" in page and b"<b>" not in page


def test_bad_input_is_refused_by_the_cli_and_the_read_service(dev: Dev) -> None:
    for args, field in (
        (("shorten", "javascript:alert(1)"), "url"),
        (("shorten", "https://example.com/", "--alias", "no spaces"), "alias"),
        (("shorten", "https://example.com/", "--max-visits", "-3"), "max_visits"),
        (("stats", "bad key!"), "key"),
    ):
        code, out, err = dev.cli(*args, check=False)
        assert code == 2 and not out, (args, code, out, err)
        assert "INVALID_ARGUMENT" in err and f"{field}:" in err, (args, err)
    code, _, err = dev.cli("shorten", "https://example.com/", "--expires-in", "soon", check=False)
    assert code == 2 and "--expires-in" in err  # argparse's refusal
    for path, field in (
        ("/bad%20key!", "key"),
        ("/p/ok?format=pdf", "format"),
        ("/" + "a" * 65, "key"),
    ):
        status, headers, body = dev.get(path)
        assert status == 400 and headers["Content-Type"].startswith("application/json"), path
        answer = json.loads(body)
        assert answer["field"] == field and answer["error"].startswith(f"{field}:"), answer
