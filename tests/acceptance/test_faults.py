"""Proven under faults: every component as its own process, on a PostgreSQL and an etcd of
these tests' own, while a stream of interval jobs runs; each test injects one fault.

Every execution appends "<run id> <attempt> <token>" to a ledger file. After the fault, the
system settles, the stream is cancelled, and once nothing is queued or running
`FaultCluster.finish_and_verify` checks, from the ledger and the database, that

(a) every fire reached a terminal state, and no fire is missing (each job's fires form an
    unbroken one-second grid up to its cancellation);
(b) every run that succeeded was executed (its attempt is in the ledger);
(c) the only duplicate executions follow a lost attempt, and the database says so;
(d) no stale write was accepted (a run's success comes from its last, highest-token attempt).
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.v1 import scheduler_pb2 as pb
from tests.acceptance.faults import TTL, FaultCluster, fault_cluster, fault_servers

__all__ = ["fault_cluster", "fault_servers"]  # fixtures

WARM_UP = 3.0  # seconds of stream before the fault


def running_attempts(c: FaultCluster, worker: str) -> set[tuple[str, int]]:
    """The attempts a worker has started and not finished (not those claimed ahead, waiting
    for a slot: those are handed back, not lost)."""
    rows = c.query(
        "SELECT run_id, number FROM attempts"
        " WHERE state = 'running' AND started AND worker_id = %s",
        (worker,),
    )
    return {(str(row["run_id"]), row["number"]) for row in rows}


def states_of(c: FaultCluster, attempts: set[tuple[str, int]]) -> set[str]:
    rows = c.query("SELECT run_id, number, state FROM attempts")
    return {row["state"] for row in rows if (str(row["run_id"]), row["number"]) in attempts}


def lost_by(c: FaultCluster) -> set[str]:
    """The workers whose attempts the claimer took back."""
    rows = c.query("SELECT DISTINCT worker_id FROM attempts WHERE state = 'lost'")
    return {row["worker_id"] for row in rows}


def test_sigkill_of_a_worker_mid_run(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    c.wait_for_attempts_on("w1")
    c.kill("w1")
    orphaned = running_attempts(c, "w1")
    assert orphaned, "w1 held nothing when it died"

    verdict = c.finish_and_verify("worker-sigkill")
    # What w1 held when it died was taken back as lost, and executed again.
    assert states_of(c, orphaned) == {"lost"}
    assert verdict.lost_attempts >= len(orphaned)
    assert lost_by(c) == {"w1"}, "an attempt of a live worker was taken back"


def test_a_worker_stalled_past_its_lease_then_resumed(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    c.wait_for_attempts_on("w1")
    c.kill("w1", sig=signal.SIGSTOP)
    time.sleep(0.3)  # anything w1 had in flight to PostgreSQL has landed
    stalled = running_attempts(c, "w1")
    assert stalled, "w1 held nothing when it stalled"
    # Past its lease: the claimer takes back what it held, and w2 runs it again.
    time.sleep(TTL)
    c.wait_until(lambda: states_of(c, stalled) == {"lost"}, 15, "w1's runs taken back")
    time.sleep(1)
    c.kill("w1", sig=signal.SIGCONT)
    # The zombie notices, writes nothing, and starts over on a new lease.
    c.wait_until(lambda: c.procs.log("w1").count("holds lease") >= 2, 15, "w1 new lease")

    c.finish_and_verify("worker-sigstop")
    assert states_of(c, stalled) == {"lost"}, "the zombie overwrote a lost attempt"
    # Nor did it disturb the attempts that replaced its own (say, by deleting their keys).
    assert lost_by(c) == {"w1"}, "an attempt of a live worker was taken back"
    assert "lost" in c.procs.log("w1")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart(fault_cluster: FaultCluster, mode: str) -> None:
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    c.servers.stop_postgres(mode)
    time.sleep(3)
    c.servers.start_postgres()

    c.finish_and_verify(f"pg-restart-{mode}")


def test_postgres_restart_while_claims_are_in_flight(fault_cluster: FaultCluster) -> None:
    """The restart lands between a claim's etcd transaction and its commit, in both workers."""
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    c.stall_claims_until_restart()
    c.servers.stop_postgres("immediate")
    time.sleep(1)
    c.servers.start_postgres()

    c.finish_and_verify("pg-restart-mid-claim")


def test_etcd_restart(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    c.wait_for_fresh_long_attempts()
    c.servers.stop_etcd()
    time.sleep(TTL + 1)  # longer than a lease: every worker must give up what it holds
    c.servers.start_etcd()

    verdict = c.finish_and_verify("etcd-restart")
    # The long attempts in flight were given up (their workers' leases were gone), and run
    # again.
    assert verdict.lost_attempts > 0


def test_sigkill_of_the_leading_claimer_and_of_a_producer(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all(producers=("p1", "p2"), claimers=("c1", "c2"))
    c.schedule_stream()
    time.sleep(WARM_UP)
    leader, other = ("c1", "c2") if c.leads("c1") else ("c2", "c1")
    c.kill(leader, "p1")
    c.wait_until(lambda: c.leads(other), 2 * TTL + 5, f"{other} never took over")
    # Give the new leader work: a worker dies, and only it can take the runs back.
    c.wait_for_attempts_on("w1")
    c.kill("w1")
    orphaned = running_attempts(c, "w1")

    c.finish_and_verify("claimer-producer-sigkill")
    assert states_of(c, orphaned) <= {"lost"}
    assert "taken back" in c.procs.log(other)
    assert lost_by(c) == {"w1"}, "an attempt of a live worker was taken back"


def test_everything_killed_at_once_then_restarted(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    c.schedule_stream()
    time.sleep(WARM_UP)
    everyone = ["api", "producer", "claimer", "w1", "w2"]
    c.kill(*everyone)
    time.sleep(3)  # fires fall due while nothing runs; catch-up "all" must run them all
    c.start_all(
        api="api-2", producers=("producer-2",), claimers=("claimer-2",), workers=("w3", "w4")
    )

    verdict = c.finish_and_verify("kill-all")
    assert verdict.lost_attempts > 0


def once(c: FaultCluster, name: str, command: str, *, at: Timestamp) -> str:
    """A job firing once at `at`, with one attempt allowed."""
    spec = pb.JobSpec(
        name=name,
        task=pb.Task(command=["sh", "-c", command]),
        schedule=pb.Schedule(at=at),
        max_attempts=1,
    )
    reply = c.stub().ScheduleJob(
        pb.ScheduleJobRequest(request_id=uuid.uuid4().hex, spec=spec), timeout=10
    )
    return str(reply.job_id)


def test_sigkill_of_a_worker_holding_runs_claimed_ahead(fault_cluster: FaultCluster) -> None:
    """Runs a worker claimed ahead of its free slots, and had not started, come back to the
    queue with their attempt unspent when it dies: each of these one-attempt runs then runs
    once, as attempt 1, and succeeds."""
    c = fault_cluster
    c.start_all(workers=())
    # One slot, up to four runs waiting for it.
    c.start(
        "w1", "worker", "--lease-ttl", str(TTL), "--worker-id", "w1",
        "--concurrency", "1", "--claim-ahead", "4",
    )  # fmt: skip
    c.procs.wait_for_log("w1", "holds lease")
    # w1 claims ahead only once it has seen that its attempts are short.
    ledger = f'echo "$HOURGLASS_RUN_ID $HOURGLASS_ATTEMPT $HOURGLASS_FENCING_TOKEN" >> {c.ledger}'
    now = Timestamp()
    now.GetCurrentTime()
    for index in range(3):
        once(c, f"warm-{index}", ledger, at=now)
    c.wait_until(lambda: c.count("state = 'succeeded'") >= 3, 30, "warm-up runs succeed")
    # Five one-shot runs fall due together: one takes the slot for seconds, and the others
    # wait in w1 for it.
    due = Timestamp()
    due.FromSeconds(int(time.time()) + 2)
    for index in range(5):
        once(c, f"held-{index}", f"{ledger}; sleep 5", at=due)

    def waiting() -> set[str]:
        rows = c.query(
            "SELECT run_id FROM attempts"
            " WHERE state = 'running' AND NOT started AND worker_id = 'w1'"
        )
        return {str(row["run_id"]) for row in rows}

    c.wait_until(lambda: len(waiting()) >= 2, 30, "w1 holds runs claimed ahead")
    held = waiting()  # the slot is busy for seconds: none of these starts before the kill
    c.kill("w1")
    c.start_worker("w2")

    c.finish_and_verify("worker-sigkill-claimed-ahead")
    rows = c.query(
        "SELECT r.id, r.state, r.attempt, a.number, a.state AS attempt_state, a.worker_id"
        " FROM runs r JOIN attempts a ON a.run_id = r.id WHERE r.id = ANY(%s::uuid[])",
        (sorted(held),),
    )
    # Each ran once, as its first and only attempt, on the worker that came next.
    assert sorted((str(row["id"]), row["number"]) for row in rows) == [
        (run_id, 1) for run_id in sorted(held)
    ]
    expected = ("succeeded", 1, "succeeded", "w2")
    for row in rows:
        assert (row["state"], row["attempt"], row["attempt_state"], row["worker_id"]) == expected
    executions = [line.split() for line in c.ledger.read_text().splitlines()]
    for run_id in held:
        assert [attempt for ran, attempt, _ in executions if ran == run_id] == ["1"]
    assert "taken back to the queue" in c.procs.log("claimer")
    assert lost_by(c) <= {"w1"}, "an attempt of a live worker was taken back"
