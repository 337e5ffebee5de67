"""The producer: turns due fires of jobs into queued runs.

It sleeps until the earliest next_fire_at (re-planning when the API notifies that a job
changed, and at least every `max_idle` seconds), then records the due fires and advances each
job's next_fire_at in one transaction. Several producers may run at once: due jobs are locked
with SKIP LOCKED and a fire is unique per (job, scheduled time).

Each namespace's quotas apply to the fires it queues: the fires-per-second quota delays their
start (available_at), and fires beyond the queued-runs quota are recorded as skipped runs
whose reason names the quota, and counted (hourglass_fires_total{outcome="held_back"}).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hourglass import metrics, retrying
from hourglass.clock import Clock, SystemClock
from hourglass.store import db, fires, jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    # Due jobs fired per transaction.
    batch_size: int = 500
    # The longest the producer sleeps without looking (a fallback for lost notifications).
    max_idle: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_idle <= 0:
            raise ValueError("max_idle must be positive")


class Producer:
    def __init__(
        self,
        *,
        pool: db.Pool,
        dsn: str,
        config: ProducerConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.config = config or ProducerConfig()
        self.clock = clock or SystemClock()
        self.wakeups = db.Wakeups(dsn, db.JOBS_CHANNEL)

    async def run_once(self) -> int:
        """Fires everything due now; returns the number of jobs fired."""
        total = 0
        while True:
            async with db.transaction(self.pool) as conn:
                fired = await fires.fire_due(
                    conn, now=self.clock.now(), limit=self.config.batch_size
                )
            metrics.fires.labels("queued").inc(fired.queued)
            metrics.fires.labels("skipped").inc(fired.skipped)
            if fired.held_back:
                # Recorded as skipped runs whose reason names the quota: counted, not silent.
                metrics.fires.labels("held_back").inc(fired.held_back)
                log.warning("%d fires held back by a queued-runs quota", fired.held_back)
            if fired.paced:
                log.info("%d fires delayed by a fires-per-second quota", fired.paced)
            for policy, count in fired.missed.items():
                metrics.missed_fires.labels(policy).inc(count)
                log.warning("%d fires missed under catch-up policy %s", count, policy)
            total += fired.jobs
            if fired.jobs < self.config.batch_size:
                return total

    async def seconds_until_due(self) -> float:
        async with self.pool.connection() as conn:
            due = await jobs.next_due_at(conn)
        if due is None:
            return self.config.max_idle
        wait = (due - self.clock.now()).total_seconds()
        return min(max(wait, 0.0), self.config.max_idle)

    async def run(self) -> None:
        await self.wakeups.start()
        try:
            while True:
                async for attempt in retrying.forever():
                    with attempt:
                        fired = await self.run_once()
                        if fired:
                            log.debug("fired %d jobs", fired)
                        wait = await self.seconds_until_due()
                await self.wakeups.wait(wait)
        finally:
            await self.wakeups.stop()
