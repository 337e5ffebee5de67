"""Stopping the runs a worker holds when their user asks: CancelRun, a replacing fire,
DeleteJob.

A request is flagged on the run in the database and announced on a notification channel
(`runs.CANCEL_CHANNEL`). The worker holding the run hears it here: a run still waiting for a
slot has its wait ended, and a running one has its process terminated by the executor and
its executor call cancelled. Either way the worker then records the run as cancelled. A
notification can be lost (the listening connection drops), so the worker also reads the
flags of the runs it holds every `max_idle` (`check`).

This is a conversation of its own (a channel, the runs asked to stop, terminations in
flight) beside the worker's claim loop, which only asks `requested` whether an attempt that
ended was stopped on request; hence its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from hourglass import retrying
from hourglass.domain import Outcome, RunId
from hourglass.store import db, runs
from hourglass.workers.executors.base import AttemptContext, Executor
from hourglass.workers.slots import Slots

# The worker's logger: these lines are about its runs, and filters set on it keep working.
log = logging.getLogger("hourglass.workers.worker")


class Cancellations:
    """The cancel requests for one worker's runs, and the terminations they start."""

    def __init__(
        self,
        *,
        pool: db.Pool,
        dsn: str,
        executor: Executor,
        slots: Slots,
        executions: dict[RunId, tuple[AttemptContext, asyncio.Task[Outcome]]],
    ) -> None:
        self.pool = pool
        self.executor = executor
        self.slots = slots
        # The worker's executor call of each running attempt (the worker fills it).
        self.executions = executions
        # Runs whose user asked to stop them, until their attempt records it.
        self.requested: set[RunId] = set()
        self._terminating: set[asyncio.Task[None]] = set()
        self.channel = db.Wakeups(dsn, runs.CANCEL_CHANNEL, on_payload=self._cancel_ids)

    async def start(self) -> None:
        await self.channel.start()

    async def stop(self) -> None:
        await self.channel.stop()

    def _cancel_ids(self, payload: str) -> None:
        """A notification on the cancel channel: comma-separated run ids."""
        for text in payload.split(","):
            with contextlib.suppress(ValueError):
                self.cancel(RunId(uuid.UUID(text)))

    def cancel(self, run_id: RunId) -> None:
        if run_id in self.slots.waiting and run_id not in self.requested:
            log.info("run %s cancelled by request before it started", run_id)
            self.requested.add(run_id)
            self.slots.cancel(run_id)
            return
        held = self.executions.get(run_id)
        if held is not None and not held[1].done() and run_id not in self.requested:
            log.info("run %s cancelled by request; terminating it", run_id)
            self.requested.add(run_id)
            task = asyncio.create_task(self._terminate(*held), name=f"terminate {run_id}")
            self._terminating.add(task)
            task.add_done_callback(self._terminating.discard)

    async def _terminate(self, context: AttemptContext, execution: asyncio.Task[Outcome]) -> None:
        try:
            await self.executor.terminate(context)
        except Exception:
            log.exception("terminating run %s failed", context.run_id)
        execution.cancel()

    async def check(self) -> None:
        """Reads the cancel flags of the runs held (running or waiting): lost notifications."""
        try:
            async with self.pool.connection() as conn:
                requested = await runs.cancel_requested(
                    conn, [*self.executions, *self.slots.waiting]
                )
        except retrying.TRANSIENT_ERRORS:
            return
        for run_id in requested:
            self.cancel(run_id)
