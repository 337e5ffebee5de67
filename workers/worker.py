"""The worker: claims queued runs, holds each under its etcd lease, executes it, and writes the
result fenced by the run's token.

One claim is one transaction: lock up to `free slots` queued runs (SKIP LOCKED), create their
etcd keys on this worker's lease in one etcd transaction (the keys' create revision is each
run's fencing token), then mark them running with that token, and commit. A worker that dies
anywhere in between leaves either a still-queued run (the transaction rolled back) or a running
run whose key vanishes with the lease, which the claimer takes back.

If the lease is lost (etcd says so, or heartbeats failed for a whole TTL) the worker stops its
attempts without writing anything, since the claimer may already have given them to another
worker, and starts over on a new lease.

A run someone cancels (CancelRun, a replacing fire, DeleteJob) is flagged in the database and
announced on a notification channel; the worker holding it terminates the process
(workers/cancellations.py) and records the run as cancelled.
"""

from __future__ import annotations

import asyncio
import logging

from hourglass import metrics, retrying
from hourglass.clock import Clock, SystemClock
from hourglass.domain import FencingToken, Outcome, RunId, RunState
from hourglass.locks import Etcd, Lease
from hourglass.policies import Requeue
from hourglass.store import claims, db, results
from hourglass.store.claims import QueuedRun
from hourglass.workers.cancellations import Cancellations
from hourglass.workers.claim_ahead import ClaimAhead
from hourglass.workers.executors.base import AttemptContext, Executor
from hourglass.workers.finisher import Finisher, FinisherCrashed, Result
from hourglass.workers.logs import STDERR, STDOUT, LogShipper
from hourglass.workers.slots import Slots
from hourglass.workers.worker_config import WorkerConfig

log = logging.getLogger(__name__)


def _log_fields(run: QueuedRun, token: FencingToken) -> dict[str, object]:
    """What every log line about an attempt carries (as fields in JSON logs)."""
    return {
        "job_id": str(run.job_id),
        "run_id": str(run.id),
        "attempt": run.attempt,
        "fencing_token": token,
    }


# The most runs one claim takes: their keys are one etcd transaction, and etcd refuses one of
# more than 128 operations by default (--max-txn-ops). Found by tests/acceptance/test_load.py.
MAX_CLAIM = 100
# How soon a worker whose claim found nothing it may start looks again.
BLOCKED_POLL = 0.05


class Worker:
    def __init__(
        self,
        *,
        pool: db.Pool,
        dsn: str,
        etcd: Etcd,
        executor: Executor,
        config: WorkerConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.etcd = etcd
        self.executor = executor
        self.config = config or WorkerConfig()
        self.clock = clock or SystemClock()
        self.wakeups = db.Wakeups(dsn, db.RUNS_CHANNEL)
        self.lease = Lease(etcd, self.config.lease_ttl)
        # Every claimed run's task: those executing and those waiting for a slot.
        self.active: dict[asyncio.Task[None], QueuedRun] = {}
        self.slots = Slots(self.config.concurrency)
        self.ahead = ClaimAhead(
            limit=self.config.ahead,
            short=self.config.claim_ahead_below,
            slots=self.config.concurrency,
        )
        # When each executing attempt started (event loop time).
        self.started: dict[RunId, float] = {}
        # The executor call of each running attempt, cancelled when a user cancels the run.
        self.executions: dict[RunId, tuple[AttemptContext, asyncio.Task[Outcome]]] = {}
        # Cancel requests of its users (workers/cancellations.py).
        self.cancellations = Cancellations(
            pool=pool, dsn=dsn, executor=executor, slots=self.slots, executions=self.executions
        )
        self.stopping = asyncio.Event()
        # A crashed finisher ends the worker (see workers/finisher.py); the poke makes the
        # loop notice at once.
        self.finisher = Finisher(pool=pool, etcd=etcd, clock=self.clock, on_crash=self.wakeups.poke)
        # Runs of a claim that failed after its etcd transaction may have created their keys
        # on our lease (see `claim`); their keys are deleted before the next claim.
        self._unclaimed: set[RunId] = set()

    def holds_lease(self) -> bool:
        """Whether this process's etcd lease is granted and not lost (its readiness)."""
        return self.lease.id != 0 and not self.lease.lost.is_set()

    async def run(self) -> None:
        """Claims and executes runs until `stop()`; then drains within the grace period."""
        await self.wakeups.start()
        await self.cancellations.start()
        self.finisher.start()
        last_check = 0.0
        loop = asyncio.get_running_loop()
        try:
            await self._start_lease()
            while not self.stopping.is_set():
                self.finisher.check()
                if self.active and loop.time() - last_check >= self.config.max_idle:
                    last_check = loop.time()
                    await self._check_cancellations()
                if self.lease.lost.is_set():
                    metrics.lease_losses.inc()
                    await self._abandon_all("lease lost")
                    await self._start_lease()
                    continue
                # Room for the slots plus `ahead` runs waiting. Claim when a slot would
                # otherwise idle, or when half the lead is spent: not once per finished run.
                oldest = min(self.started.values(), default=loop.time())
                ahead = self.ahead.runs(longest_running=loop.time() - oldest)
                free = min(self.config.concurrency + ahead - len(self.active), MAX_CLAIM)
                starving = len(self.active) < self.config.concurrency
                if free <= 0 or not (starving or 2 * free >= max(ahead, 1)):
                    await self.wakeups.wait(self.config.max_idle)  # a finished run pokes us
                    continue
                try:
                    claimed = await self.claim(free)
                except retrying.TRANSIENT_ERRORS as exc:
                    log.warning("claim failed (%s); retrying", exc)
                    await asyncio.sleep(1)
                    continue
                if claimed == free:
                    continue  # there may be more waiting
                wait = await self._idle_seconds(free)
                if not claimed:
                    # Runs may be available yet not ours to start (another worker holds them
                    # locked, or their exclusive job is running): look again soon, not at once,
                    # or this loop spins. New runs still wake us at once (NOTIFY).
                    wait = max(wait, BLOCKED_POLL)
                await self.wakeups.wait(wait)
            await self._drain()
            await self.finisher.flush()
        except FinisherCrashed:
            # Results can no longer be written, so no attempt here can finish: stop them all
            # and end, revoking the lease below, so the claimer takes every run back now.
            await self._abandon_all("the finisher crashed")
            raise
        finally:
            await self.finisher.stop()
            await self.wakeups.stop()
            await self.cancellations.stop()
            await self.lease.stop(revoke=True)

    def stop(self) -> None:
        self.stopping.set()
        self.wakeups.poke()

    async def claim(self, limit: int) -> int:
        """Claims up to `limit` queued runs and starts executing them; returns how many."""
        if self._unclaimed:
            await self.etcd.release_runs_on_lease(self._unclaimed, lease_id=self.lease.id)
            self._unclaimed.clear()
        queued: list[QueuedRun] = []
        try:
            async with db.transaction(self.pool) as conn:
                queued = await claims.lock_queued(conn, limit=limit, now=self.clock.now())
                if not queued:
                    return 0
                tokens = await self.etcd.hold_runs(
                    (run.id for run in queued),
                    lease_id=self.lease.id,
                    holder=self.config.worker_id,
                )
                held = [(run, tokens[run.id]) for run in queued if run.id in tokens]
                # The runs that take a free slot at once start now; the rest are claimed
                # ahead and start (Finisher.mark_started) when a slot frees.
                free_slots = max(self.config.concurrency - len(self.active), 0)
                starting = {run.id for run, _ in held[:free_slots]}
                await claims.mark_running(
                    conn,
                    held=held,
                    starting=starting,
                    worker_id=self.config.worker_id,
                    now=self.clock.now(),
                )
        except BaseException:
            # The claim failed (PostgreSQL restarted before the commit, etcd went away with
            # the transaction's answer, ...). Its keys may exist on our lease, which we keep
            # alive: nobody could claim those runs again, and a run whose commit did land
            # would look held forever. So they are deleted first thing next time; a run that
            # did commit is then lost to the claimer, which requeues it. Found by
            # tests/acceptance/test_faults.py::test_postgres_restart_while_claims_are_in_flight.
            self._unclaimed.update(run.id for run in queued)
            raise
        metrics.claims.inc(len(held))
        for run, token in held:
            task = asyncio.create_task(
                self._execute(run, token, started=run.id in starting), name=f"run {run.id}"
            )
            self.active[task] = run
            task.add_done_callback(self._done)
        return len(held)

    async def _check_cancellations(self) -> None:
        """Cancel requests whose notification was lost (bench/profiling.py names this frame)."""
        await self.cancellations.check()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("attempt task crashed", exc_info=task.exception())
        self.wakeups.poke()  # a slot is free

    async def _execute(self, run: QueuedRun, token: FencingToken, *, started: bool) -> None:
        """Waits for a slot, then runs the attempt. A run cancelled by its user while it
        waits never starts: it is recorded cancelled, like one stopped while running.

        A run claimed ahead (not `started` at its claim) is marked started, fenced, before its
        command starts. Until then its attempt is not spent: if this worker dies, the claimer
        hands the run back to the queue with the same attempt; if the claimer did so first
        (this worker stalled past its lease), the mark is refused and nothing starts."""
        if not await self.slots.take(run, token, cancelled=self.cancellations.requested):
            self.cancellations.requested.discard(run.id)
            outcome = Outcome(state=RunState.CANCELLED, error="cancelled on request")
            fields = _log_fields(run, token)
            self.finisher.submit(Result(run, token, outcome, Requeue(at=None), fields))
            return
        try:
            if not self.lease.fresh():
                # Held while this worker stalled past its lease: the claimer may have given
                # the run to another worker already. Start nothing, write nothing.
                return
            if not started and not await self._start(run, token):
                return
            await self._attempt(run, token)
        finally:
            self.slots.release()

    async def _start(self, run: QueuedRun, token: FencingToken) -> bool:
        """Marks a run claimed ahead as started, with the next results (Finisher.mark_started,
        which retries a transient failure until it knows whether the mark landed); False:
        start nothing."""
        try:
            if await self.finisher.mark_started(run.id, run.attempt, token):
                return True
        except FinisherCrashed:
            return False  # the worker ends (`run`), and the claimer takes the run back
        log.info("run %s was taken back before it started; not starting it", run.id)
        return False

    async def _attempt(self, run: QueuedRun, token: FencingToken) -> None:
        shipper = LogShipper(self.pool, run_id=run.id, attempt=run.attempt, token=token)
        context = AttemptContext(
            run_id=run.id,
            job_id=run.job_id,
            attempt=run.attempt,
            fencing_token=token,
            scheduled_at=run.scheduled_at,
            task=run.task,
            timeout=run.timeout,
            worker_id=self.config.worker_id,
            namespace=run.namespace,
            on_output=shipper.write,
        )
        fields = _log_fields(run, token)
        log.debug("run %s attempt %d started (token %d)", run.id, run.attempt, token, extra=fields)
        if run.attempt == 1:  # a retry's start is late by design (its backoff)
            late = self.clock.now() - max(run.scheduled_at, run.available_at)
            metrics.lateness.observe(max(late.total_seconds(), 0.0))
        execution = asyncio.create_task(self.executor.execute(context))
        self.executions[run.id] = (context, execution)
        started = self.started[run.id] = asyncio.get_running_loop().time()
        try:
            outcome = await execution
        except asyncio.CancelledError:
            if run.id not in self.cancellations.requested or not execution.cancelled():
                raise  # this worker is stopping or lost its lease: write nothing
            outcome = Outcome(
                state=RunState.CANCELLED,
                error="cancelled on request",
                stdout_tail=shipper.tail(STDOUT),
                stderr_tail=shipper.tail(STDERR),
            )
        except Exception as exc:  # an executor bug must not lose the run
            log.exception("executor failed on run %s", run.id)
            outcome = Outcome(state=RunState.FAILED, error=f"executor error: {exc}")
        finally:
            self.executions.pop(run.id, None)
            self.started.pop(run.id, None)
            self.cancellations.requested.discard(run.id)
        self.ahead.observe(asyncio.get_running_loop().time() - started)
        await shipper.close()
        if outcome.state in results.RETRIED:
            requeue = Requeue.decide(run.retry, attempt=run.attempt, now=self.clock.now())
        else:
            requeue = Requeue(at=None)
        # The slot is free from here on; the finisher writes the result with others.
        self.finisher.submit(Result(run, token, outcome, requeue, fields))

    async def _start_lease(self) -> None:
        async for attempt in retrying.forever():
            with attempt:
                await self.lease.start()
        self._unclaimed.clear()  # their keys went with the old lease
        log.info("worker %s holds lease %x", self.config.worker_id, self.lease.id)

    async def _idle_seconds(self, free: int) -> float:
        """How long to wait for work: until the next retry becomes available, at most
        max_idle; the full max_idle when every slot is busy (a finishing run pokes us)."""
        if free <= 0:
            return self.config.max_idle
        try:
            async with self.pool.connection() as conn:
                available = await claims.next_available_at(conn)
        except retrying.TRANSIENT_ERRORS:
            return self.config.max_idle
        if available is None:
            return self.config.max_idle
        wait = (available - self.clock.now()).total_seconds()
        return min(max(wait, 0.0), self.config.max_idle)

    async def _hand_back_waiting(self) -> None:
        """On the way out, runs claimed ahead that have not started go back to the queue at
        once (`claims.hand_back`), for any worker: a stopping worker starts nothing new, and a
        run that never started must not come back through the claimer as a lost attempt."""
        waiting = dict(self.slots.waiting)
        if not waiting:
            return
        tasks = [task for task, run in self.active.items() if run.id in waiting]
        for task in tasks:
            task.cancel()  # a run given up while waiting writes nothing
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with db.transaction(self.pool) as conn:
                handed = await claims.hand_back(
                    conn,
                    [(run.id, run.attempt, token) for run, token in waiting.values()],
                    unstarted_only=False,
                )
            await self.etcd.release_runs({run_id: waiting[run_id][1] for run_id in handed})
        except retrying.TRANSIENT_ERRORS as exc:
            # Still ours on the lease, which is revoked on the way out: the claimer takes them.
            log.warning("handing back %d runs that had not started failed: %s", len(waiting), exc)
            return
        log.info("handed back %d runs that had not started", len(handed))

    async def _abandon_all(self, why: str) -> None:
        """Stops every attempt without writing: they are no longer ours to finish."""
        if self.active:
            log.error("abandoning %d attempts: %s", len(self.active), why)
        for task in list(self.active):
            task.cancel()
        await asyncio.gather(*self.active, return_exceptions=True)

    async def _drain(self) -> None:
        await self._hand_back_waiting()
        if not self.active:
            return
        log.info("waiting up to %ss for %d attempts", self.config.shutdown_grace, len(self.active))
        _, pending = await asyncio.wait(list(self.active), timeout=self.config.shutdown_grace)
        if pending:
            # Handing back: the lease is revoked right after, so the claimer requeues these at
            # once instead of waiting out the TTL.
            await self._abandon_all("shutdown grace ran out")
