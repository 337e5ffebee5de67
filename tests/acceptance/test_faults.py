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

import pytest

from tests.acceptance.faults import TTL, FaultCluster, fault_cluster, fault_servers

__all__ = ["fault_cluster", "fault_servers"]  # fixtures

WARM_UP = 3.0  # seconds of stream before the fault


def running_attempts(c: FaultCluster, worker: str) -> set[tuple[str, int]]:
    rows = c.query(
        "SELECT run_id, number FROM attempts WHERE state = 'running' AND worker_id = %s",
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
