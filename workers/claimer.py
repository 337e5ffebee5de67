"""The claimer: takes back runs whose worker is gone.

A running run must have its etcd key, created by its holder with the run's fencing token as
create revision. When the holder dies or stalls past its lease TTL, etcd deletes the key; the
claimer finds such runs, records their attempt as lost, and requeues them (attempt + 1, after a
backoff) or fails them when their attempts are spent. A run whose attempt never started (claimed
ahead, waiting for a slot of its worker: attempts.started false) is instead handed back to the
queue with its attempt number intact: nothing ran, so nothing is spent.

One claimer leads at a time: leadership is a key on the claimer's own lease, so a dead leader
is replaced within a TTL. Running several claimers is safe even without it, since every write
is fenced by the token the claimer saw.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from hourglass import metrics, retrying
from hourglass.clock import Clock, SystemClock
from hourglass.locks import Etcd, Lease
from hourglass.store import claims, db, jobs, results, runs
from hourglass.workers.maintenance import Maintenance
from hourglass.workers.worker_config import default_worker_id

log = logging.getLogger(__name__)

LOST_REASON = "the worker holding this attempt died or stalled past its lease"
# A job whose next fire is this far in the past counts as overdue.
OVERDUE_AFTER = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class ClaimerConfig:
    # Seconds between sweeps.
    interval: float = 1.0
    lease_ttl: int = 10
    claimer_id: str = field(default_factory=default_worker_id)
    # Seconds between maintenance passes (retention, unreferenced binaries) on the leader.
    maintenance_interval: float = 60.0


class Claimer:
    def __init__(
        self,
        *,
        pool: db.Pool,
        etcd: Etcd,
        config: ClaimerConfig | None = None,
        clock: Clock | None = None,
        maintenance: Maintenance | None = None,
    ) -> None:
        self.pool = pool
        self.etcd = etcd
        self.maintenance = maintenance
        self._maintained_at = float("-inf")
        self.config = config or ClaimerConfig()
        self.clock = clock or SystemClock()
        self.lease = Lease(etcd, self.config.lease_ttl)
        self.leading = False

    async def run_once(self) -> int:
        """One sweep: returns how many runs it took back."""
        # Read PostgreSQL before etcd. A run claimed after the read is simply not seen; the
        # other order could see it running without the key its claim just created.
        async with self.pool.connection() as conn:
            held = await results.list_held(conn)
        if not held:
            return 0
        keys = await self.etcd.held_runs()
        gone = [run for run in held if keys.get(str(run.id)) != run.fencing_token]
        if not gone:
            return 0
        # Runs claimed ahead whose attempt never started go back to the queue as they were
        # (same attempt), all in one statement: nothing ran, so no attempt is spent.
        async with db.transaction(self.pool) as conn:
            handed = set(
                await claims.hand_back(
                    conn,
                    [(run.id, run.attempt, run.fencing_token) for run in gone],
                    unstarted_only=True,
                )
            )
        if handed:
            metrics.takeovers.labels(attempt="unspent").inc(len(handed))
            log.warning(
                "%d runs held by a worker now gone had not started; taken back to the queue"
                " with their attempts unspent",
                len(handed),
            )
        taken = len(handed)
        for run in gone:
            if run.id in handed:
                continue
            async with db.transaction(self.pool) as conn:
                if await results.mark_lost(conn, run=run, now=self.clock.now(), reason=LOST_REASON):
                    taken += 1
                    metrics.takeovers.labels(attempt="lost").inc()
                    log.warning("run %s attempt %d lost; taken back", run.id, run.attempt)
        return taken

    async def measure(self) -> None:
        """The gauges that describe the whole system, measured once, by the leader."""
        now = self.clock.now()
        async with self.pool.connection() as conn:
            ready, running = await runs.count_active(conn, now=now)
            overdue = await jobs.count_overdue(conn, due_before=now - OVERDUE_AFTER)
        metrics.queue_depth.set(ready)
        metrics.running_runs.set(running)
        metrics.overdue_jobs.set(overdue)
        if overdue:
            log.warning(
                "%d jobs are more than %s overdue: is a producer running?", overdue, OVERDUE_AFTER
            )

    def holds_lease(self) -> bool:
        """Whether this process's etcd lease is granted and not lost (its readiness)."""
        return self.lease.id != 0 and not self.lease.lost.is_set()

    async def run(self) -> None:
        try:
            while True:
                async for attempt in retrying.forever():
                    with attempt:
                        await self._lead_and_sweep()
                await asyncio.sleep(self.config.interval)
        finally:
            await self.lease.stop(revoke=True)

    async def _lead_and_sweep(self) -> None:
        if self.lease.id == 0 or self.lease.lost.is_set():
            self.leading = False
            await self.lease.start()
        leading = await self.etcd.campaign(
            "claimer", lease_id=self.lease.id, holder=self.config.claimer_id
        )
        if leading != self.leading:
            log.info("claimer %s %s", self.config.claimer_id, "leads" if leading else "follows")
            self.leading = leading
            metrics.leader.set(1 if leading else 0)
        if leading:
            await self.run_once()
            await self.measure()
            now = asyncio.get_running_loop().time()
            due = now - self._maintained_at >= self.config.maintenance_interval
            if self.maintenance is not None and due:
                self._maintained_at = now
                await self.maintenance.run_once()
