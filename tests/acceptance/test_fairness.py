"""No namespace's flood delays another's runs, on the production shape: separate api (with
tokens), producer, claimer and two workers, every attempt in the sandbox.

Namespace x runs a steady set of jobs. We measure the p99 lateness of their starts (attempt
start minus scheduled fire) in three phases:
(a) x alone;
(b) while namespace y sends exactly issue 9's request (`hourglass schedule --every 100ms
    --start 1976-01-01T00:00:00Z -- true`, which now fires only from creation on): x's p99
    stays within twice (a);
(c) while y also keeps its queue full up to its quota (a backlog far larger than the
    workers' slots), with y's max_running_runs at half the slots: the claim leaves the other
    half to x, and the namespaces' equal CPU weights keep y's sandboxes from starving x's.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import psycopg

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes

X_JOBS = 4
X_INTERVAL = "500ms"
WINDOW = 12.0  # seconds of x's fires measured in each phase
Y_QUEUE = 1000  # y's max_queued_runs for the test
CONCURRENCY = 8  # slots per worker; two workers
Y_RUNNING = CONCURRENCY  # y's max_running_runs in phase (c): half the slots
# The bounds are max(2 x (a), (a) + FLOOR). Why a floor at all: the p99 of 96 starts is their
# second-latest, so a single scheduling hiccup on this 2-core machine (shared with other
# builds) decides it, and (a) itself moved between 19 and 77 ms from one run to the next.
# Figures seen for (b), (a) -> (b) over six runs: 44 -> 20, 21 -> 23, 77 -> 198, 20 -> 17,
# 21 -> 28, 28 -> 44 ms: within 2x five times, 2.6x once, when the machine was busiest.
# 10 fires a second of `true` are little load, so the floor is one hiccup's worth.
FLOOR_B = 0.15
# (c) does not hold 2x: (a) -> (c) over three runs with the exact cap: 20 -> 133,
# 21 -> 160, 28 -> 103 ms (and 44 -> 81, 21 -> 73, 77 -> 90 ms before the cap was exact).
# y's cap leaves x free slots, and the namespaces' equal CPU weights share out the cores the
# attempts use; but the flood's own load runs outside any attempt's cgroup, on the same two
# cores: the API answering the filler's backfills and triggers, PostgreSQL inserting and
# claiming y's runs, the producer, and the workers' claim loops that x's runs go through.
# That costs x up to ~140 ms. The failure this test exists for is queue order: behind y's
# queue of Y_QUEUE runs, x's runs would start seconds late (issue 9 saw 16.7 s; with a FIFO
# claim this test measures several seconds). With two CI runs sharing the two cores, the
# heavier flood of an earlier version of this phase measured 19 -> 295 ms; the floor leaves
# room for that and still fails by far on a claim that serves y's queue first.
FLOOR_C = 0.5


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def latenesses(dsn: str, namespace: str, start: datetime, end: datetime) -> list[float] | None:
    """Start lateness of the namespace's scheduled runs fired in [start, end); None while any
    of them has not started yet."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM a.started_at - r.scheduled_at)"
            " FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.number = 1"
            " WHERE r.namespace = %s AND r.trigger = 'schedule'"
            " AND r.scheduled_at >= %s AND r.scheduled_at < %s",
            (namespace, start, end),
        ).fetchall()
    if any(value is None for (value,) in rows):
        return None
    return [float(value) for (value,) in rows]


def running(dsn: str, namespace: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM runs WHERE namespace = %s AND state = 'running'", (namespace,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def measure(dsn: str, start: datetime, sample: list[int] | None = None) -> list[float]:
    """x's latenesses of the fires of WINDOW seconds from `start`; meanwhile, with `sample`,
    how many runs y has running, now and then."""
    end = start + timedelta(seconds=WINDOW)
    deadline = time.monotonic() + WINDOW + 60
    while True:
        if sample is not None and datetime.now(UTC) < end:
            sample.append(running(dsn, "y"))
        found = latenesses(dsn, "x", start, end) if datetime.now(UTC) > end else None
        if found is not None:
            assert len(found) >= X_JOBS * WINDOW, f"x fired only {len(found)} times"
            return found
        assert time.monotonic() < deadline, "x's runs of the window did not all start"
        time.sleep(0.2)


def queued(dsn: str, namespace: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM runs WHERE namespace = %s AND state = 'queued'", (namespace,)
        ).fetchone()
    assert row is not None
    return int(row[0])


class Filler(threading.Thread):
    """Keeps y's queue at its quota: backfills the room there is, and triggers beyond it,
    which the API refuses."""

    def __init__(self, p: Processes, dsn: str, token: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.p, self.dsn, self.job_id = p, dsn, job_id
        self.metadata = [("authorization", f"Bearer {token}")]
        self.stopping = threading.Event()
        self.queued = 0
        self.refused: list[str] = []
        self.error: BaseException | None = None
        # Backfill walks back over the job's hourly grid: each range holds fires not
        # recorded before.
        self.cursor = datetime.now(UTC) - timedelta(days=1)

    def run(self) -> None:
        try:
            with grpc.insecure_channel(self.p.env["HOURGLASS_SERVER"]) as channel:
                stub = pb_grpc.JobSchedulerStub(channel)
                while not self.stopping.is_set():
                    room = Y_QUEUE - queued(self.dsn, "y")
                    if room > 10:
                        request = pb.BackfillRequest(job_id=self.job_id)
                        getattr(request, "from").FromDatetime(
                            self.cursor - timedelta(hours=room - 1)
                        )
                        request.to.FromDatetime(self.cursor)
                        try:
                            reply = stub.Backfill(request, metadata=self.metadata, timeout=30)
                            self.queued += reply.queued
                        except grpc.RpcError as exc:  # a race with the producer's fires
                            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                                raise
                        self.cursor -= timedelta(hours=room)
                    try:
                        stub.TriggerJob(
                            pb.TriggerJobRequest(job_id=self.job_id),
                            metadata=self.metadata,
                            timeout=30,
                        )
                        self.queued += 1
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        self.refused.append(exc.details() or "")
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_a_flood_in_one_namespace_does_not_delay_another(
    cluster_env: Processes, database_url: str
) -> None:
    p = cluster_env
    p.start("api", "api", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("claimer", "claimer", "--lease-ttl", "2")
    for name in ("w1", "w2"):
        p.start(
            name, "worker", "--lease-ttl", "2", "--worker-id", name,
            "--concurrency", str(CONCURRENCY),
        )  # fmt: skip
    p.wait_for_log("api", "serving")
    for name in ("w1", "w2"):
        p.wait_for_log(name, "holds lease")
    x = p.cli("token", "create", "--namespace", "x").stdout.strip()
    y = p.cli("token", "create", "--namespace", "y").stdout.strip()
    limits = p.cli(
        "quota", "set", "--namespace", "y", "--max-queued-runs", str(Y_QUEUE),
        "--max-fires-per-second", "20",
    ).stdout  # fmt: skip
    assert limits.splitlines()[-1].split() == [
        "y", "100000", str(Y_QUEUE), "20", "100000", "default", "own",
    ]  # fmt: skip

    for _ in range(X_JOBS):
        p.cli("schedule", "--token", x, "--every", X_INTERVAL, "--", "true")
    # (a) x alone.
    alone = measure(database_url, datetime.now(UTC) + timedelta(seconds=3))

    # (b) issue 9's request, exactly: it fires from its creation on, ten times a second.
    flood_at = datetime.now(UTC)
    flood = p.cli(
        "schedule", "--token", y, "--every", "100ms", "--start", "1976-01-01T00:00:00Z",
        "--", "true",
    ).stdout.strip()  # fmt: skip
    requested = measure(database_url, datetime.now(UTC) + timedelta(seconds=1))

    # (c) y's queue kept full of runs of another job, up to its quota, with y capped at half
    # the slots.
    capped = p.cli(
        "quota", "set", "--namespace", "y", "--max-running-runs", str(Y_RUNNING)
    ).stdout  # fmt: skip
    assert capped.splitlines()[-1].split()[4] == str(Y_RUNNING)
    filler_job = p.cli("schedule", "--token", y, "--every", "1h", "--", "true").stdout.strip()
    filler = Filler(p, database_url, y, filler_job)
    filler.start()
    y_running: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while queued(database_url, "y") < Y_QUEUE * 0.8:
            assert filler.error is None, filler.error
            assert time.monotonic() < deadline, "y's queue never filled"
            time.sleep(0.05)
        flooded = measure(
            database_url, datetime.now(UTC) + timedelta(seconds=0.5), sample=y_running
        )
    finally:
        filler.stopping.set()
        filler.join(60)
    assert filler.error is None, filler.error

    quiet, busy_b, busy_c = p99(alone), p99(requested), p99(flooded)
    bound_b = max(2 * quiet, quiet + FLOOR_B)
    bound_c = max(2 * quiet, quiet + FLOOR_C)
    print(
        f"x start lateness p99: (a) alone {quiet * 1000:.1f} ms ({len(alone)} runs);"
        f" (b) with issue 9's request {busy_b * 1000:.1f} ms ({len(requested)} runs), bound"
        f" {bound_b * 1000:.1f} ms; (c) with y's queue full and y capped at {Y_RUNNING}"
        f" running {busy_c * 1000:.1f} ms ({len(flooded)} runs), bound {bound_c * 1000:.1f} ms;"
        f" y running during (c): most {max(y_running, default=0)};"
        f" y queued {filler.queued} runs, {len(filler.refused)} refused by its quota"
    )
    assert busy_b <= bound_b, f"x's p99 went from {quiet:.3f}s to {busy_b:.3f}s under (b)"
    assert busy_c <= bound_c, f"x's p99 went from {quiet:.3f}s to {busy_c:.3f}s under (c)"
    # The cap held, across the two workers' concurrent claims.
    assert 0 < max(y_running) <= Y_RUNNING, y_running

    # y's flood queued far more than x ran, and its quota refused the rest, by name.
    assert filler.queued > 2 * len(flooded)
    assert filler.refused and f"max_queued_runs={Y_QUEUE}" in filler.refused[0]
    # The 1976 request fired from its creation on: at most one fire per 100 ms since.
    elapsed = (datetime.now(UTC) - flood_at).total_seconds()
    with psycopg.connect(database_url, autocommit=True) as conn:
        fired, earliest = conn.execute(
            "SELECT count(*), min(scheduled_at) FROM runs WHERE job_id = %s", (flood,)
        ).fetchone()  # type: ignore[misc]
        (missed,) = conn.execute("SELECT missed_fires FROM jobs WHERE id = %s", (flood,)).fetchone()  # type: ignore[misc]
    assert earliest >= flood_at - timedelta(seconds=1)
    assert 0 < fired <= elapsed * 10 + 1 and missed == 0
