"""Marks runs claimed ahead as started, in batches, just before their commands start.

A run claimed ahead of a free slot holds its key and token but has not begun: its attempt is
stored not started (attempts.started false), so that if its worker dies the claimer hands it
back to the queue with the attempt unspent. Before its command starts, the attempt is marked
started (`claims.start`, fenced by the token); a run the claimer took back first is refused and
never starts.

That mark is a round trip per run on the drain's hot path. Slots free in bursts, so the marks
are grouped: while one statement is in flight, the runs that get a slot meanwhile wait for the
next, which marks them all at once (as the finisher groups results).
"""

from __future__ import annotations

import asyncio
import contextlib

from hourglass import retrying
from hourglass.clock import Clock
from hourglass.domain import FencingToken, RunId
from hourglass.store import claims, db


class Starter:
    def __init__(self, pool: db.Pool, clock: Clock) -> None:
        self.pool = pool
        self.clock = clock
        self._pending: list[tuple[RunId, int, FencingToken, asyncio.Future[bool]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def start(self, run_id: RunId, attempt: int, token: FencingToken) -> bool:
        """True once the attempt is marked started; False if it must not start (taken back).
        Raises a transient error if the mark could not be written (it may have landed)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((run_id, attempt, token, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write(), name="starter")
        return await done

    async def _write(self) -> None:
        batch: list[tuple[RunId, int, FencingToken, asyncio.Future[bool]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with self.pool.connection() as conn:
                        marked = await claims.start(
                            conn,
                            [(run_id, attempt, token) for run_id, attempt, token, _ in batch],
                            now=self.clock.now(),
                        )
                except retrying.TRANSIENT_ERRORS as exc:
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for run_id, _, _, done in batch:
                    if not done.done():  # its waiter may have been cancelled
                        done.set_result(run_id in marked)
        finally:
            self._writing = None
            for *_, done in [*batch, *self._pending]:  # stopped: nobody starts these
                done.cancel()

    async def stop(self) -> None:
        if self._writing is not None:
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writing
