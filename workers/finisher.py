"""The worker's finisher: writes the results of finished attempts in batches.

One result per transaction cost a pool check, BEGIN, the fenced UPDATE and a COMMIT with its
WAL flush, plus an etcd round to release the run's key, all while the run held one of the
worker's slots (docs/benchmarks.md: 19% and 15% of the worker's time). Now an attempt hands
its outcome over and frees its slot at once; the finisher writes whatever has accumulated in
one statement (`results.finish_many`, outside a transaction: the statement is atomic by
itself), each row still fenced by its own token. Their keys are released in one etcd
transaction per RELEASE_AFTER rather than per batch, except a requeued run's, which goes at
once.

A worker that dies with results not yet written loses nothing the contract promises: those
runs are still `running` under keys on its lease, and the claimer takes them back.

No single result can stop the finisher. A job's output is untrusted: the store makes its
text storable, and a batch that fails anyway with an error that is not transient is written
again result by result, so that only the result at fault is affected; that one is recorded
as a failed attempt saying why, in place of an outcome the database would not take. Each
result is therefore written or refused by its fence, never dropped and never left holding
the runs after it.

What remains is a crash of the loop itself: a bug, or a database that refuses even the
replacement record (so the fault is not in one result). Then the finisher does not restart:
it ends the worker, loudly (`FinisherCrashed` out of `Worker.run`, a non-zero exit of the
process). A restarted loop would keep the lease alive while the results of the batch in
flight are gone: their runs would stay `running` on a healthy lease, out of the claimer's
reach, which is the wedge this supervision exists to prevent. Ending the worker revokes its
lease, so the claimer takes back every run the worker held at once and another worker (or
this one, restarted by its supervisor) runs them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from hourglass import metrics, retrying
from hourglass.clock import Clock
from hourglass.domain import FencingToken, Outcome, RunId, RunState
from hourglass.locks import Etcd
from hourglass.policies import Requeue
from hourglass.store import db
from hourglass.store.claims import QueuedRun
from hourglass.store.results import Finish, finish_and_start, requeues

log = logging.getLogger(__name__)

# The longest database error quoted in an attempt's record.
MAX_REASON = 1000
# Keys of finished runs are released together, at most this many seconds after their results
# are written (etcd write transactions were a tenth of a run's CPU, docs/benchmarks.md). A
# key outliving its finished run holds nothing: only a run that went back to the queue is
# claimed again, and its key goes at once, so that its next claim finds it free.
RELEASE_AFTER = 0.25
# Keys per etcd transaction (etcd refuses one of more than 128 operations by default).
RELEASE_MAX = 100


@dataclass(frozen=True, slots=True)
class Result:
    run: QueuedRun
    token: FencingToken
    outcome: Outcome
    requeue: Requeue
    fields: dict[str, object]


# A run claimed ahead to mark started: (run, attempt, token), and who waits for the answer.
_Start = tuple[RunId, int, FencingToken, "asyncio.Future[bool]"]


class FinisherCrashed(RuntimeError):
    """The finisher's loop died: this worker can no longer write results, so it must end."""


class Finisher:
    def __init__(
        self,
        *,
        pool: db.Pool,
        etcd: Etcd,
        clock: Clock,
        batch: int = 128,
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.etcd = etcd
        self.clock = clock
        self.batch = batch
        # Results, and None when start marks are waiting (`mark_started`).
        self.queue: asyncio.Queue[Result | None] = asyncio.Queue()
        self._starts: list[_Start] = []
        self.fenced_off = 0
        # Results recorded as failed attempts because the database refused them.
        self.unstorable = 0
        # What ended the loop, once it has crashed; `on_crash` is told at once.
        self.crashed: BaseException | None = None
        self._on_crash = on_crash
        self._task: asyncio.Task[None] | None = None
        # Keys of runs whose results are written, not yet released; the timer that will.
        self._unreleased: dict[RunId, FencingToken] = {}
        self._release_timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="finisher")
        self._task.add_done_callback(self._ended)

    def submit(self, result: Result) -> None:
        self.queue.put_nowait(result)

    async def mark_started(self, run_id: RunId, attempt: int, token: FencingToken) -> bool:
        """Marks an attempt claimed ahead as started, just before its command starts, with
        the next batch of results (`results.finish_and_start`). True once marked; False if it
        must not start (the claimer took the run back first).

        A run claimed ahead holds its key and token but has not begun: its attempt is stored
        not started, so that if its worker dies the claimer hands it back to the queue with
        the attempt unspent. In a drain, the slot a finished run frees goes at once to a run
        claimed ahead, so its mark and the freed run's result are written together."""
        self.check()
        if self._task is None or self._task.done():
            raise FinisherCrashed("the finisher is not running: nothing can be marked started")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._starts:
            self.queue.put_nowait(None)  # wakes the loop
        self._starts.append((run_id, attempt, token, done))
        return await done

    def check(self) -> None:
        """Raises FinisherCrashed once the loop has died."""
        if self.crashed is not None:
            raise FinisherCrashed(f"the finisher crashed: {self.crashed!r}") from self.crashed

    async def flush(self) -> None:
        """Returns once every result submitted so far is written; raises FinisherCrashed if
        the finisher dies first (they never will be)."""
        if self._task is None:
            await self.queue.join()
            await self._release()
            return
        joined = asyncio.create_task(self.queue.join())
        try:
            await asyncio.wait([joined, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
        self.check()
        await self._release()

    async def stop(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        for task in list(self._releases):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            # A crashed loop's error was reported by `_ended`; stopping does not raise it.
            await asyncio.wait([self._task])

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.crashed = task.exception()
        log.critical(
            "the finisher crashed; this worker ends so that its lease goes and the claimer"
            " takes back the runs whose results were not written",
            exc_info=self.crashed,
        )
        if self._on_crash is not None:
            self._on_crash()

    async def _run(self) -> None:
        starts: list[_Start] = []
        try:
            while True:
                items = [await self.queue.get()]
                while len(items) < self.batch and not self.queue.empty():
                    items.append(self.queue.get_nowait())
                starts, self._starts = self._starts, []
                try:
                    results = [item for item in items if item is not None]
                    if results or starts:
                        await self._write(results, starts)
                finally:
                    for _ in items:
                        self.queue.task_done()
        finally:
            # Ended (stopped or crashed): nobody marks these, so none of them starts.
            for *_, done in [*starts, *self._starts]:
                done.cancel()
            self._starts = []

    async def _write(self, results: list[Result], starts: list[_Start]) -> None:
        marks = [(run_id, attempt, token) for run_id, attempt, token, _ in starts]
        try:
            accepted, started = await self._store(results, marks)
            written = list(zip(results, accepted, strict=True))
        except Exception as exc:  # not transient: `_store` retries those
            if not results:
                raise  # not a result's fault
            # A result at fault: the marks alone, then the results as the database allows.
            started = (await self._store([], marks))[1] if marks else set()
            for run_id, _, _, done in starts:
                if not done.done():
                    done.set_result(run_id in started)
            if len(results) == 1:
                written = [await self._store_unstorable(results[0], exc)]
            else:
                log.warning(
                    "writing %d results at once failed (%s); writing them one by one",
                    len(results),
                    exc,
                )
                written = [await self._write_alone(result) for result in results]
        for run_id, _, _, done in starts:
            if not done.done():  # its waiter may have been cancelled
                done.set_result(run_id in started)
        finished: collections.Counter[str] = collections.Counter()
        for result, ok in written:
            if ok:
                finished[result.outcome.state.value] += 1
                if log.isEnabledFor(logging.DEBUG):
                    self._report_debug(result)
            else:
                self._report_refused(result)
        # Once per batch and state, not once per run.
        for state, count in finished.items():
            metrics.runs_finished.labels(state).inc(count)
        requeued = False
        for result in results:
            self._unreleased[result.run.id] = result.token
            requeued = requeued or requeues(result.outcome, result.requeue)
        if requeued or len(self._unreleased) >= RELEASE_MAX:
            await self._release()
        elif self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(
                RELEASE_AFTER, self._release_later
            )

    def _release_later(self) -> None:
        self._release_timer = None
        task = asyncio.create_task(self._release(), name="finisher releases")
        self._releases.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releases.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("releasing the keys of finished runs failed", exc_info=task.exception())

    async def _release(self) -> None:
        """Releases the keys of the runs whose results are written, in one etcd transaction
        per RELEASE_MAX keys. A release that fails leaves the keys to the lease: they hold
        finished runs, which nobody claims."""
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        held, self._unreleased = self._unreleased, {}
        keys = list(held.items())
        for start in range(0, len(keys), RELEASE_MAX):
            with contextlib.suppress(*retrying.TRANSIENT_ERRORS):
                await self.etcd.release_runs(dict(keys[start : start + RELEASE_MAX]))

    async def _store(
        self, results: list[Result], starts: Sequence[tuple[RunId, int, FencingToken]] = ()
    ) -> tuple[list[bool], set[RunId]]:
        """Writes results and start marks in one statement (atomic by itself: no BEGIN and
        COMMIT round trips), retrying transient failures: both writes are fenced, and a
        repeated one whose first reply was lost is accepted again."""
        async for attempt in retrying.forever():
            with attempt:
                async with self.pool.connection() as conn:
                    return await finish_and_start(
                        conn,
                        [
                            Finish(
                                run_id=result.run.id,
                                attempt=result.run.attempt,
                                token=result.token,
                                outcome=result.outcome,
                                requeue=result.requeue,
                            )
                            for result in results
                        ],
                        starts=starts,
                        now=self.clock.now(),
                    )
        raise AssertionError("unreachable: retrying.forever returns or raises")

    async def _write_alone(self, result: Result) -> tuple[Result, bool]:
        try:
            (ok,) = (await self._store([result]))[0]
        except Exception as exc:
            return await self._store_unstorable(result, exc)
        return result, ok

    async def _store_unstorable(self, result: Result, error: Exception) -> tuple[Result, bool]:
        """Records a result the database refused as a failed attempt that says why.

        The outcome's state and exit code go into the error text, its output tails are
        dropped: any of them may be what was refused. The run moves on as the refused
        outcome would have moved it: a failure with attempts left is retried; otherwise the
        run fails, even if the process succeeded, since whether its work is complete cannot
        be recorded (and running it again might repeat work that was done). If even this
        record is refused, the fault is not in the result: the error ends the finisher.
        """
        self.unstorable += 1
        outcome = result.outcome
        log.error(
            "run %s attempt %d: the database refused its result; recording a failed attempt",
            result.run.id,
            result.run.attempt,
            exc_info=error,
            extra=result.fields,
        )
        reason = f"{type(error).__name__}: {error}"[:MAX_REASON]
        failed = replace(
            result,
            outcome=Outcome(
                state=RunState.FAILED,
                error=(
                    f"the result of this attempt ({outcome.state.value}, exit code"
                    f" {outcome.exit_code}) could not be stored: {reason}"
                ),
                finished_at=outcome.finished_at,
            ),
        )
        (ok,) = (await self._store([failed]))[0]
        return failed, ok

    @staticmethod
    def _report_debug(result: Result) -> None:
        run = result.run
        log.debug(
            "run %s attempt %d %s (exit %s)",
            run.id,
            run.attempt,
            result.outcome.state.value,
            result.outcome.exit_code,
            extra=result.fields,
        )

    def _report_refused(self, result: Result) -> None:
        run = result.run
        self.fenced_off += 1
        metrics.fenced_writes.inc()
        log.warning(
            "run %s attempt %d: result refused, token %d no longer holds the run",
            run.id,
            run.attempt,
            result.token,
            extra=result.fields,
        )
