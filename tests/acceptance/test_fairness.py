"""No namespace's flood delays another's runs, on the production shape: separate api (with
tokens), producer, claimer and two workers.

Namespace x runs a steady set of jobs. We measure the lateness of their starts (attempt
start minus scheduled fire) without a flood, then while namespace y sends issue 9's flood
request (`--every 100ms --start 1976-01-01T00:00:00Z`, which now fires only from creation on)
and keeps its queue filled up to its quota. x's p99 must stay within twice its value
without the flood.
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
# The absolute floor of the bound. x's runs compete with y's for the same two cores and the
# same worker slots: a slot frees only when one of y's runs ends, so even a perfectly fair
# claim adds up to a run's duration under CPU load (tens of ms), and the baseline itself moves
# between 25 and 100 ms from one run to the next on a shared 2-core machine. "2x" alone would
# then fail on noise. The failure this test exists for is queue order: behind y's queue of
# Y_QUEUE runs, x's runs would start seconds late (issue 9 saw 16.7 s; with a FIFO claim this
# test measures several seconds). So the bound is max(2 x baseline, baseline + FLOOR).
FLOOR = 0.25


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


def measure(dsn: str, start: datetime) -> list[float]:
    end = start + timedelta(seconds=WINDOW)
    deadline = time.monotonic() + WINDOW + 60
    while True:
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
        p.start(name, "worker", "--lease-ttl", "2", "--worker-id", name, "--concurrency", "8")
    p.wait_for_log("api", "serving")
    for name in ("w1", "w2"):
        p.wait_for_log(name, "holds lease")
    x = p.cli("token", "create", "--namespace", "x").stdout.strip()
    y = p.cli("token", "create", "--namespace", "y").stdout.strip()
    limits = p.cli(
        "quota", "set", "--namespace", "y", "--max-queued-runs", str(Y_QUEUE),
        "--max-fires-per-second", "20",
    ).stdout  # fmt: skip
    assert limits.splitlines()[-1].split() == ["y", "100000", str(Y_QUEUE), "20", "default", "own"]

    for _ in range(X_JOBS):
        p.cli("schedule", "--token", x, "--every", X_INTERVAL, "--", "true")
    warm = datetime.now(UTC) + timedelta(seconds=3)
    baseline = measure(database_url, warm)

    # The flood: issue 9's request, now firing from its creation on...
    flood_at = datetime.now(UTC)
    flood = p.cli(
        "schedule", "--token", y, "--every", "100ms", "--start", "1976-01-01T00:00:00Z",
        "--", "true",
    ).stdout.strip()  # fmt: skip
    # ...and y's queue kept full of runs of another job, up to its quota.
    filler_job = p.cli("schedule", "--token", y, "--every", "1h", "--", "true").stdout.strip()
    filler = Filler(p, database_url, y, filler_job)
    filler.start()
    try:
        deadline = time.monotonic() + 30
        while queued(database_url, "y") < Y_QUEUE * 0.8:
            assert filler.error is None, filler.error
            assert time.monotonic() < deadline, "y's queue never filled"
            time.sleep(0.05)
        flooded = measure(database_url, datetime.now(UTC) + timedelta(seconds=0.5))
    finally:
        filler.stopping.set()
        filler.join(60)
    assert filler.error is None, filler.error

    quiet, busy = p99(baseline), p99(flooded)
    bound = max(2 * quiet, quiet + FLOOR)
    print(
        f"x start lateness p99: {quiet * 1000:.1f} ms without the flood ({len(baseline)} runs),"
        f" {busy * 1000:.1f} ms with it ({len(flooded)} runs); bound {bound * 1000:.1f} ms;"
        f" y queued {filler.queued} runs, {len(filler.refused)} refused by its quota"
    )
    assert busy <= bound, f"x's p99 went from {quiet:.3f}s to {busy:.3f}s under y's flood"

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
