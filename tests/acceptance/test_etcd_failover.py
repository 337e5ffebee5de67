"""Every component on a 3-member etcd cluster, given all three endpoints: the member first in
the list, also the leader, dies (SIGKILL) while a worker runs an attempt under its lease and
`hourglass lock` holds a lock through the API's Locks service. Every component carries on:
the worker's lease survives, its attempt finishes and is recorded once; the lock holder
keeps its lock and token; once its lease expires, the next holder gets a larger token."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.rows import dict_row

from hourglass.embedded import free_port
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes, Shared
from tests.etcd_cluster import EtcdCluster, etcd_cluster

__all__ = ["etcd_cluster"]  # fixture

TTL = 4  # the worker's, the claimer's and the lock's lease, in seconds
COMPONENTS = ("api", "producer", "claimer", "worker")


def until(check: Callable[[], object], procs: Processes, *, timeout: float, what: str) -> None:
    """Polls `check`; fails at once when a component exited by itself."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = {n: p.returncode for n, p in procs.running.items() if p.poll() is not None}
        dead = {n: code for n, code in dead.items() if n in COMPONENTS}
        assert not dead, f"components exited: {dead}\n" + "\n".join(
            f"--- {n}\n{procs.log(n)[-3000:]}" for n in dead
        )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def on_cluster(etcd_cluster: EtcdCluster, database_url: str, tmp_path: Path) -> Iterator[Processes]:
    etcd_cluster.make_leader(0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env.update(
        HOURGLASS_DATABASE_URL=database_url,
        HOURGLASS_ETCD_ENDPOINTS=etcd_cluster.endpoints,
        HOURGLASS_ETCD_PREFIX=f"/failover-{uuid.uuid4().hex[:12]}/",
        HOURGLASS_SERVER=f"127.0.0.1:{free_port()}",
    )
    procs = Processes(logs=tmp_path, env=env)
    yield procs
    procs.stop_all()


def query(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def schedule_now(server: str, command: str) -> str:
    at = Timestamp()
    at.GetCurrentTime()
    spec = pb.JobSpec(
        name="through-failover",
        task=pb.Task(command=["sh", "-c", command]),
        schedule=pb.Schedule(at=at),
        max_attempts=3,
    )
    with grpc.insecure_channel(server) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        reply = stub.ScheduleJob(
            pb.ScheduleJobRequest(request_id=uuid.uuid4().hex, spec=spec), timeout=10
        )
    return str(reply.job_id)


def test_every_component_carries_on_when_the_first_member_dies(
    etcd_cluster: EtcdCluster, on_cluster: Processes, shared: Shared, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"  # ends the lock holder's command, once the test is over
    try:
        _carries_on(etcd_cluster, on_cluster, shared, stop)
    finally:
        stop.touch()
        (shared.folder / "go").touch()


def _carries_on(etcd_cluster: EtcdCluster, procs: Processes, shared: Shared, stop: Path) -> None:
    dsn = procs.env["HOURGLASS_DATABASE_URL"]
    procs.start("api", "api", "--listen", procs.env["HOURGLASS_SERVER"], "--insecure")
    procs.start("producer", "producer")
    procs.start("claimer", "claimer", "--lease-ttl", str(TTL))
    procs.start("worker", "worker", "--lease-ttl", str(TTL), "--worker-id", "w1")
    procs.wait_for_log("api", "serving on")
    procs.wait_for_log("producer", "running")
    procs.wait_for_log("worker", "holds lease")
    procs.wait_for_log("claimer", " leads")

    # An attempt that runs until told to finish, and writes a ledger line when it starts.
    ledger, go = shared.file("ledger"), shared.folder / "go"
    job = schedule_now(
        procs.env["HOURGLASS_SERVER"],
        f'echo "$HOURGLASS_RUN_ID $HOURGLASS_ATTEMPT" >> {ledger};'
        f" while [ ! -e {go} ]; do sleep 0.1; done",
    )
    until(lambda: ledger.read_text().strip(), procs, timeout=60, what="the attempt is running")
    # A lock held by a command that runs on until the test ends it.
    holder = procs.start(
        "holder",
        "lock",
        "deploy",
        "--ttl",
        f"{TTL}s",
        "--",
        "sh",
        "-c",
        f'echo "holding token $HOURGLASS_LOCK_TOKEN"; while [ ! -e {stop} ]; do sleep 0.1; done',
    )
    procs.wait_for_log("holder", "holding token")
    line = next(ln for ln in procs.log("holder").splitlines() if "holding token" in ln)
    token = int(line.split()[2])

    etcd_cluster.kill(0)
    killed_at = time.monotonic()
    # The components that keep a lease moved to another member...
    for name in ("api", "worker", "claimer"):
        until(
            lambda name=name: "etcd: now using" in procs.log(name),
            procs,
            timeout=3 * TTL,
            what=f"{name} moved to another etcd member",
        )
    # ...and twice the TTL later, nothing that was held is lost.
    until(
        lambda: time.monotonic() > killed_at + 2 * TTL,
        procs,
        timeout=4 * TTL,
        what="two TTLs after the kill",
    )
    assert holder.poll() is None, procs.log("holder")
    shown = procs.cli_json("locks", "describe", "deploy")
    assert int(shown["holder"]["token"]) == token, shown
    attempts = query(dsn, "SELECT a.state FROM attempts a JOIN runs r ON r.id = a.run_id")
    assert [a["state"] for a in attempts] == ["running"], attempts

    go.touch()
    until(
        lambda: (
            query(dsn, "SELECT state FROM runs WHERE job_id = %s", (job,))[0]["state"]
            == "succeeded"
        ),
        procs,
        timeout=60,
        what="the run succeeded",
    )
    attempts = query(dsn, "SELECT number, state, worker_id FROM attempts")
    assert attempts == [{"number": 1, "state": "succeeded", "worker_id": "w1"}], attempts
    assert len(ledger.read_text().splitlines()) == 1, ledger.read_text()

    # The holder dies without releasing: once its lease expires, the next holder's token is
    # larger than its own.
    os.kill(holder.pid, signal.SIGKILL)
    procs.killed.append("holder")
    holder.wait(10)
    after = procs.cli(
        "lock",
        "deploy",
        "--ttl",
        f"{TTL}s",
        "--wait",
        "60s",
        "--",
        "sh",
        "-c",
        "echo $HOURGLASS_LOCK_TOKEN",
    )
    assert int(after.stdout) > token
    print(f"lock tokens {token} -> {int(after.stdout)}; attempts {attempts}")
