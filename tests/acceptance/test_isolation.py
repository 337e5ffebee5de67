"""A hostile tenant against the production shape: an API with tokens, a producer, a claimer and
two workers, each its own process, the local executor sandboxed (the default). Each test is
one attack of issue 9, and shows that it now does no harm.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from psycopg.rows import dict_row

from hourglass.embedded import EmbeddedEtcd
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes, Shared

TTL = 2
LOG_MAX_BYTES = 4 * 1024 * 1024
DB_LOG_CAP = 1024 * 1024  # workers/logs.py DEFAULT_LIMIT


@dataclass
class Tenants:
    p: Processes
    dsn: str
    etcd: str
    tokens: dict[str, str]
    channel: grpc.Channel

    def stub(self) -> pb_grpc.JobSchedulerStub:
        return pb_grpc.JobSchedulerStub(self.channel)

    def metadata(self, namespace: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[namespace]}")]

    def run_now(self, namespace: str, *command: str, **spec: Any) -> str:
        """Schedules a one-shot job due now; returns its job id."""
        request = pb.ScheduleJobRequest(
            request_id=uuid.uuid4().hex,
            spec=pb.JobSpec(
                task=pb.Task(
                    command=list(command),
                    env=spec.pop("env", {}),
                    secret_env=spec.pop("secret_env", {}),
                ),
                **spec,
            ),
        )
        request.spec.schedule.after.FromSeconds(0)
        reply = self.stub().ScheduleJob(request, metadata=self.metadata(namespace), timeout=10)
        return str(reply.job_id)

    def run_of(self, namespace: str, job_id: str) -> pb.Run | None:
        status = self.stub().GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id), metadata=self.metadata(namespace), timeout=10
        )
        return status.recent_runs[0] if status.recent_runs else None

    def wait_run(
        self, namespace: str, job_id: str, check: Callable[[pb.Run], bool], timeout: float = 40
    ) -> pb.Run:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run_of(namespace, job_id)
            if run is not None and check(run):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run of {job_id} never got there: {run}")
            time.sleep(0.1)

    def finished(self, namespace: str, job_id: str, timeout: float = 40) -> pb.Run:
        terminal = {
            pb.RUN_STATE_SUCCEEDED,
            pb.RUN_STATE_FAILED,
            pb.RUN_STATE_TIMED_OUT,
            pb.RUN_STATE_CANCELLED,
        }
        return self.wait_run(namespace, job_id, lambda r: r.state in terminal, timeout)

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def output(self, run_id: str) -> bytes:
        rows = self.query(
            "SELECT data FROM run_logs WHERE run_id = %s ORDER BY seq", (uuid.UUID(run_id),)
        )
        return b"".join(bytes(row["data"]) for row in rows)


@pytest.fixture
def tenants(
    cluster_env: Processes, database_url: str, etcd_server: EmbeddedEtcd
) -> Iterator[Tenants]:
    p = cluster_env
    tokens = {
        ns: p.cli("token", "create", "--namespace", ns).stdout.strip()
        for ns in ("team-a", "team-b")
    }
    p.start("api", "api", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("claimer", "claimer", "--lease-ttl", str(TTL))
    for name in ("w1", "w2"):
        p.start(
            name,
            "worker",
            "--lease-ttl",
            str(TTL),
            "--worker-id",
            name,
            "--log-dir",
            str(p.logs / f"{name}-runs"),
            "--log-max-bytes",
            str(LOG_MAX_BYTES),
        )
    p.wait_for_log("api", "serving")
    for name in ("w1", "w2"):
        p.wait_for_log(name, "holds lease")
    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        yield Tenants(p, database_url, etcd_server.endpoint, tokens, channel)


def host_processes(cmdline: str) -> list[int]:
    """Processes on this host whose command line is exactly `cmdline`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().replace(
                    b"\0", b" "
                ).strip() == cmdline.encode():
                    found.append(int(entry.name))
    return found


def test_a_job_finds_no_other_tenants_secret_and_no_credential(tenants: Tenants) -> None:
    secret = f"a-secret-{uuid.uuid4().hex}"
    victim = tenants.run_now("team-a", "sh", "-c", "sleep 6", secret_env={"API_KEY": secret})
    tenants.wait_run("team-a", victim, lambda r: r.state == pb.RUN_STATE_RUNNING)
    reader = tenants.run_now(
        "team-b",
        "sh",
        "-c",
        "for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\\0' '\\n' < $f; done;"
        " env; ls -d /proc/[0-9]*",
    )
    run = tenants.finished("team-b", reader)
    assert run.state == pb.RUN_STATE_SUCCEEDED, run
    # The victim was still running while the reader looked.
    assert tenants.run_of("team-a", victim).state == pb.RUN_STATE_RUNNING  # type: ignore[union-attr]
    seen = tenants.output(run.id).decode(errors="replace")
    assert "HOURGLASS_RUN_ID=" in seen  # it did read its own environment
    assert secret not in seen
    dsn = urlsplit(tenants.dsn)
    for credential in (
        tenants.dsn,
        "HOURGLASS_DATABASE_URL",
        "HOURGLASS_ETCD",
        tenants.etcd,
        *tenants.tokens.values(),
        "postgresql://",
    ):
        assert credential not in seen, f"{credential!r} reached the job"
    if dsn.password:
        assert dsn.password not in seen
    # It sees only its own processes: its PID namespace.
    assert len([line for line in seen.splitlines() if line.startswith("/proc/")]) <= 10


def test_a_job_that_knows_where_the_database_is_cannot_reach_it(tenants: Tenants) -> None:
    """The planted-token attack: with the database's address, a job INSERTed a token of another
    namespace. In its own network namespace it reaches nothing but its own loopback, and its
    private /tmp and /run hide the servers' Unix sockets."""
    port = tenants.query("SHOW port")[0]["port"]
    socket_dir = dict(
        pair.split("=", 1) for pair in urlsplit(tenants.dsn).query.split("&") if "=" in pair
    ).get("host", "/run/postgresql")
    targets = [
        f"tcp:127.0.0.1:{port}",
        f"tcp:{tenants.etcd}",
        f"unix:{socket_dir}/.s.PGSQL.{port}",
    ]
    probe = (
        "import socket, sys\n"
        "for target in sys.argv[1:]:\n"
        "    kind, _, where = target.partition(':')\n"
        "    try:\n"
        "        if kind == 'tcp':\n"
        "            host, port = where.rsplit(':', 1)\n"
        "            socket.create_connection((host, int(port)), timeout=3).close()\n"
        "        else:\n"
        "            socket.socket(socket.AF_UNIX).connect(where)\n"
        "        print('REACHED', target)\n"
        "    except OSError as exc:\n"
        "        print('refused', target, exc)\n"
    )
    job = tenants.run_now("team-b", "python3", "-c", probe, *targets)
    run = tenants.finished("team-b", job)
    seen = tenants.output(run.id).decode()
    print(seen)
    assert run.state == pb.RUN_STATE_SUCCEEDED, run
    refused = [line for line in seen.splitlines() if line.startswith("refused ")]
    assert len(refused) == len(targets) and "REACHED" not in seen
    # From the host, the same probe reaches etcd and PostgreSQL's socket (this PostgreSQL
    # listens on no TCP port): the sandbox, not a wrong address, keeps the job out.
    socket.create_connection(tuple(tenants.etcd.rsplit(":", 1)), timeout=3).close()  # type: ignore[arg-type]
    socket.socket(socket.AF_UNIX).connect(targets[2][5:])


@pytest.mark.parametrize("ending", ["timeout", "cancel"])
def test_a_setsid_grandchild_ends_with_its_run(tenants: Tenants, ending: str) -> None:
    marker = f"sleep 3012.{random.randrange(10**6)}"
    command = ["sh", "-c", f"setsid {marker} & sleep 1000"]
    if ending == "timeout":
        job = tenants.run_now("team-b", *command, timeout=Duration(seconds=3))
        run = tenants.finished("team-b", job)
        assert run.state == pb.RUN_STATE_TIMED_OUT
    else:
        job = tenants.run_now("team-b", *command)
        run = tenants.wait_run("team-b", job, lambda r: r.state == pb.RUN_STATE_RUNNING)
        deadline = time.monotonic() + 10
        while not host_processes(marker):
            assert time.monotonic() < deadline, "the grandchild never started"
            time.sleep(0.05)
        tenants.stub().CancelRun(
            pb.CancelRunRequest(run_id=run.id), metadata=tenants.metadata("team-b"), timeout=10
        )
        run = tenants.finished("team-b", job)
        assert run.state == pb.RUN_STATE_CANCELLED
    assert host_processes(marker) == [], f"{marker} outlived its run ({ending})"


def test_a_killed_workers_attempt_never_runs_beside_its_successor(
    tenants: Tenants, shared: Shared
) -> None:
    ledger = shared.file("heartbeats")
    job = tenants.run_now(
        "team-b",
        "sh",
        "-c",
        f"end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do"
        f' echo "$HOURGLASS_ATTEMPT $(date +%s%N)" >> {ledger}; sleep 0.05; done',
        max_attempts=2,
        retry_backoff=Duration(seconds=0),
    )
    run = tenants.wait_run("team-b", job, lambda r: r.state == pb.RUN_STATE_RUNNING)
    deadline = time.monotonic() + 10
    while len(ledger.read_text().splitlines()) < 10:
        assert time.monotonic() < deadline, "no heartbeats"
        time.sleep(0.05)
    victim = run.attempts[0].worker_id
    killed_at = time.time_ns()
    tenants.p.running[victim].send_signal(signal.SIGKILL)
    tenants.p.killed.append(victim)
    tenants.p.running[victim].wait(10)
    run = tenants.finished("team-b", job, timeout=60)
    assert [a.state for a in run.attempts] == [pb.RUN_STATE_LOST, pb.RUN_STATE_SUCCEEDED]
    beats: dict[int, list[int]] = {1: [], 2: []}
    for line in ledger.read_text().splitlines():
        attempt, at = line.split()
        beats[int(attempt)].append(int(at))
    print(
        f"attempt 1: last beat {(max(beats[1]) - killed_at) / 1e6:.0f} ms after the SIGKILL;"
        f" attempt 2: first beat {(min(beats[2]) - killed_at) / 1e6:.0f} ms after it"
    )
    assert beats[1] and beats[2]
    assert max(beats[1]) < min(beats[2]), "attempt 1 still ran when attempt 2 began"
    # Attempt 1 died with its worker (its parent-death signal), not at its own end.
    assert max(beats[1]) < killed_at + 500_000_000


def test_a_flood_of_output_stores_at_most_the_caps(tenants: Tenants) -> None:
    job = tenants.run_now("team-b", "sh", "-c", "head -c 200000000 /dev/zero | tr '\\0' x")
    run = tenants.finished("team-b", job, timeout=120)
    assert run.state == pb.RUN_STATE_SUCCEEDED
    stored = tenants.query(
        "SELECT coalesce(sum(length(data)), 0) AS n FROM run_logs WHERE run_id = %s",
        (uuid.UUID(run.id),),
    )[0]["n"]
    worker = run.attempts[0].worker_id
    (on_disk,) = (tenants.p.logs / f"{worker}-runs").rglob("*.log")
    size = on_disk.stat().st_size
    print(f"200 MB of output: {stored} bytes in run_logs (cap {DB_LOG_CAP}), {size} on disk")
    assert stored <= DB_LOG_CAP
    assert LOG_MAX_BYTES < size <= LOG_MAX_BYTES + 100
    with on_disk.open("rb") as handle:
        handle.seek(LOG_MAX_BYTES)
        assert handle.read().startswith(b"\n[hourglass: output cut here")
