"""Acceptance tests run hourglass as a user does: its own processes, its CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hourglass.embedded import EmbeddedEtcd, free_port
from tests.conftest import PostgresServer  # noqa: F401 - re-exported for type hints

HOURGLASS = [sys.executable, "-m", "hourglass.cli.main"]


@dataclass
class Processes:
    """Starts hourglass processes with their output in log files, and ends them all."""

    logs: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Processes the test itself killed with SIGKILL.
    killed: list[str] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [*HOURGLASS, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            process = self.running[name]
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never logged {text!r}:\n{self.log(name)}")
            time.sleep(0.05)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*HOURGLASS, *args], capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"hourglass {' '.join(args)} -> {result.returncode}\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--output", "json").stdout)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Shared:
    """A folder that sandboxed jobs can write, for their ledgers. Every attempt runs as a uid
    of its own and sees a private /tmp (so pytest's 0700 tmp_path is out of reach twice): the
    folder lies outside /tmp, and each file is made world-writable before any job appends."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hourglass-test-", dir="/var/tmp"))
        self.folder.chmod(0o1777)

    def file(self, name: str) -> Path:
        path = self.folder / name
        path.touch()
        path.chmod(0o666)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def shared() -> Iterator[Shared]:
    folder = Shared()
    yield folder
    folder.remove()


@pytest.fixture
def cluster_env(
    tmp_path: Path, database_url: str, etcd_server: EmbeddedEtcd, etcd_prefix: str
) -> Iterator[Processes]:
    """Processes for `hourglass api|producer|worker|claimer` on this test's database and etcd
    prefix. They are stopped before the database is dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env.update(
        HOURGLASS_DATABASE_URL=database_url,
        HOURGLASS_ETCD_ENDPOINTS=etcd_server.endpoint,
        HOURGLASS_ETCD_PREFIX=etcd_prefix,
        HOURGLASS_SERVER=f"127.0.0.1:{free_port()}",
    )
    procs = Processes(logs=tmp_path, env=env)
    yield procs
    procs.stop_all()
    slow = [name for name, process in procs.running.items() if process.returncode == -9]
    assert not slow or slow == procs.killed, f"{slow} did not stop on SIGTERM"
