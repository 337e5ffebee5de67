"""The worker's finisher: writes the results of finished attempts in batches.

One result per transaction cost a pool check, BEGIN, the fenced UPDATE and a COMMIT with its
WAL flush, plus an etcd round to release the run's key, all while the run held one of the
worker's slots (docs/benchmarks.md: 19% and 15% of the worker's time). Now an attempt hands
its outcome over and frees its slot at once; the finisher writes whatever has accumulated in
one transaction, each row still fenced by its own token, then releases those keys in one
etcd transaction.

A worker that dies with results not yet written loses nothing the contract promises: those
runs are still `running` under keys on its lease, and the claimer takes them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from hourglass import metrics, retrying
from hourglass.clock import Clock
from hourglass.domain import FencingToken, Outcome
from hourglass.locks import Etcd
from hourglass.store import db, runs
from hourglass.store.runs import QueuedRun, Requeue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Result:
    run: QueuedRun
    token: FencingToken
    outcome: Outcome
    requeue: Requeue
    fields: dict[str, object]


class Finisher:
    def __init__(self, *, pool: db.Pool, etcd: Etcd, clock: Clock, batch: int = 128) -> None:
        self.pool = pool
        self.etcd = etcd
        self.clock = clock
        self.batch = batch
        self.queue: asyncio.Queue[Result] = asyncio.Queue()
        self.fenced_off = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="finisher")

    def submit(self, result: Result) -> None:
        self.queue.put_nowait(result)

    async def flush(self) -> None:
        """Returns once every result submitted so far is written."""
        await self.queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            results = [await self.queue.get()]
            while len(results) < self.batch and not self.queue.empty():
                results.append(self.queue.get_nowait())
            try:
                await self._write(results)
            finally:
                for _ in results:
                    self.queue.task_done()

    async def _write(self, results: list[Result]) -> None:
        async for attempt in retrying.forever():
            with attempt:
                async with db.transaction(self.pool) as conn:
                    accepted = [
                        await runs.finish(
                            conn,
                            run_id=result.run.id,
                            attempt=result.run.attempt,
                            token=result.token,
                            outcome=result.outcome,
                            requeue=result.requeue,
                            now=self.clock.now(),
                        )
                        for result in results
                    ]
        for result, ok in zip(results, accepted, strict=True):
            run = result.run
            if ok:
                metrics.runs_finished.labels(result.outcome.state.value).inc()
                log.debug(
                    "run %s attempt %d %s (exit %s)",
                    run.id,
                    run.attempt,
                    result.outcome.state.value,
                    result.outcome.exit_code,
                    extra=result.fields,
                )
            else:
                self.fenced_off += 1
                metrics.fenced_writes.inc()
                log.warning(
                    "run %s attempt %d: result refused, token %d no longer holds the run",
                    run.id,
                    run.attempt,
                    result.token,
                    extra=result.fields,
                )
        with contextlib.suppress(*retrying.TRANSIENT_ERRORS):
            await self.etcd.release_runs({r.run.id: r.token for r in results})
