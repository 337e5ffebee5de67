"""`hourglass api --processes N`: N processes serve one port (SO_REUSEPORT), each with its
metrics on the metrics port + i; they start, serve and stop as one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

DEADLINE = 60.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _two_free_ports() -> int:
    """A port P with P and P+1 free (process i serves metrics on P+i)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two free ports in a row")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2 :].split()[1] == str(pid):
                found.append(int(entry.name))
    return found


def _scheduled_calls(port: int) -> float:
    """ScheduleJob calls the process with metrics on `port` served (its histogram's count)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return -1
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hourglass_api_request_seconds_count") and 'method="ScheduleJob"' in line
    )


class Api:
    def __init__(self, popen: subprocess.Popen[str], address: str, metrics: int) -> None:
        self.popen, self.address, self.metrics = popen, address, metrics

    def schedule(self) -> None:
        """One ScheduleJob on a connection of its own (the kernel picks the process)."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            schedule = pb.Schedule()
            schedule.at.FromDatetime(datetime(2099, 1, 1, tzinfo=UTC))
            request = pb.ScheduleJobRequest(
                spec=pb.JobSpec(task=pb.Task(command=["/bin/true"]), schedule=schedule)
            )
            pb_grpc.JobSchedulerStub(channel).ScheduleJob(request, timeout=30)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    metrics = _two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hourglass.cli.main",
            "api",
            "--insecure",
            "--database-url",
            database_url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
            "--processes",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline()
        assert "serving on" in line and "from 2 processes" in line, line
        address = line.split("serving on ", 1)[1].split()[0]
        yield Api(popen, address, metrics)
    finally:
        for pid in _children(popen.pid):
            os.kill(pid, signal.SIGKILL)
        popen.kill()
        popen.wait()


def test_two_processes_serve_one_port_each_with_its_metrics(api: Api) -> None:
    assert len(_children(api.popen.pid)) == 1
    # New connections spread over both processes: each serves some calls.
    deadline = time.monotonic() + DEADLINE
    while not (_scheduled_calls(api.metrics) > 0 and _scheduled_calls(api.metrics + 1) > 0):
        assert time.monotonic() < deadline, "one process served no call"
        api.schedule()


def test_sigterm_stops_every_process(api: Api) -> None:
    child = _children(api.popen.pid)[0]
    api.popen.send_signal(signal.SIGTERM)
    assert api.popen.wait(timeout=DEADLINE) == 0
    _until(lambda: not Path(f"/proc/{child}").exists(), "process 1 to end")


def test_a_process_that_ends_ends_them_all_with_a_failure(api: Api) -> None:
    """So that Kubernetes restarts the whole pod rather than serve with fewer processes."""
    os.kill(_children(api.popen.pid)[0], signal.SIGKILL)
    assert api.popen.wait(timeout=DEADLINE) == 1
