"""The probes' endpoints of every component, as the chart's probes call them: the real
`hourglass` command as a process, on a real PostgreSQL and etcd that the test stops.

/readyz turns 503 naming the database when PostgreSQL stops and 200 again when it is back,
while /healthz stays 200 (a restart would not bring the database back); /metrics is still
served on the same port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hourglass.embedded import free_port
from tests.acceptance.faults import FaultServers, fault_servers  # noqa: F401 - a fixture

DEADLINE = 60.0


def _get(port: int, path: str) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    except OSError as error:
        return 0, repr(error)
    if path == "/metrics":
        return status, body
    return status, json.loads(body)


# Each started component's output, by its metrics port: a failure shows why it did not answer.
LOGS: dict[int, Path] = {}


def _until(port: int, path: str, condition: Callable[[int, Any], bool]) -> tuple[int, Any]:
    deadline = time.monotonic() + DEADLINE
    last: tuple[int, Any] = (0, "no answer yet")
    while time.monotonic() < deadline:
        last = _get(port, path)
        if condition(*last):
            return last
        time.sleep(0.2)
    log = LOGS.get(port)
    said = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{path} never met the condition; last answer {last}\n{said}")


@pytest.fixture
def component(
    fault_servers: FaultServers,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., int]]:
    """Starts `hourglass <command> ...` with --metrics-listen; returns the metrics port."""
    processes: list[subprocess.Popen[bytes]] = []
    database_url = fault_servers.new_database()
    logs = tmp_path_factory.mktemp("components")

    def start(command: str, *args: str, env: dict[str, str] | None = None) -> int:
        port = free_port()
        env = {
            **os.environ,
            **(env or {}),
            "HOURGLASS_DATABASE_URL": database_url,
            "HOURGLASS_ETCD_ENDPOINTS": fault_servers.etcd.endpoint,
            "HOURGLASS_ETCD_PREFIX": f"/health-{port}/",
            "HOURGLASS_METRICS_LISTEN": f"127.0.0.1:{port}",
        }
        LOGS[port] = log = logs / f"{command}-{port}.log"
        with log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hourglass.cli.main", command, *args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        return port

    yield start
    fault_servers.ensure_up()
    for process in processes:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ok(status: int, body: Any) -> bool:
    return status == 200


COMPONENTS = {
    "api": (["--listen", "127.0.0.1:0"], {"database", "etcd"}),
    "producer": ([], {"database"}),
    "claimer": ([], {"database", "etcd", "claimer lease"}),
}


@pytest.mark.parametrize("command", sorted(COMPONENTS))
def test_readyz_follows_postgresql_while_healthz_stays_live(
    component: Callable[..., int],
    fault_servers: FaultServers,  # noqa: F811
    command: str,
) -> None:
    args, checks = COMPONENTS[command]
    port = component(command, *args)

    _, body = _until(port, "/readyz", _ok)
    assert set(body["checks"]) == checks and body["ready"] is True, body
    assert set(body["checks"].values()) == {"ok"}
    assert _get(port, "/healthz")[0] == 200
    assert "hourglass_" in str(_get(port, "/metrics")[1])

    fault_servers.stop_postgres()
    try:
        _, body = _until(port, "/readyz", lambda s, b: s == 503)
        assert body["ready"] is False and body["checks"]["database"] != "ok", body
        assert _get(port, "/healthz")[0] == 200
    finally:
        fault_servers.start_postgres()

    _, body = _until(port, "/readyz", _ok)
    assert body["checks"]["database"] == "ok"


def test_a_worker_is_ready_once_it_holds_its_lease_and_not_while_etcd_is_down(
    component: Callable[..., int],
    fault_servers: FaultServers,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The Kubernetes executor needs a kubeconfig to start; no run is queued, so it never
    # calls the (absent) cluster.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    port = component(
        "worker",
        "--executor",
        "kubernetes",
        "--namespace",
        "health-test",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    _, body = _until(port, "/readyz", _ok)
    assert set(body["checks"]) == {"database", "etcd", "worker lease"}, body

    fault_servers.stop_etcd()
    try:
        _, body = _until(port, "/readyz", lambda s, b: s == 503)
        assert body["checks"]["etcd"] != "ok", body
        assert _get(port, "/healthz")[0] == 200
    finally:
        fault_servers.start_etcd()
    _until(port, "/readyz", _ok)


def test_a_component_whose_database_never_came_is_live_but_not_ready(
    fault_servers: FaultServers,  # noqa: F811
    component: Callable[..., int],
) -> None:
    fault_servers.stop_postgres()
    try:
        port = component("producer")
        _, body = _until(port, "/readyz", lambda s, b: s == 503 and "checks" in b)
        assert body["checks"] == {"database": "connecting"}, body
        assert _until(port, "/healthz", _ok)[1]["live"] is True
    finally:
        fault_servers.start_postgres()
    _until(port, "/readyz", _ok)
