"""The worker's slots: `concurrency` attempts execute at once, and runs claimed ahead wait
for a slot in claim order (workers/claim_ahead.py says how many are claimed ahead).

A run waiting for a slot has been claimed (running, under its fencing token) but has not
started (nor has its stored attempt, unless it was claimed for a slot that was free). A
user's cancel ends its wait at once; a stopping worker hands such runs back
(`waiting`). Neither ever starts the command.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from hourglass.domain import FencingToken, RunId
from hourglass.store.claims import QueuedRun


class Slots:
    def __init__(self, concurrency: int) -> None:
        self._free = asyncio.Semaphore(concurrency)
        # Each waiting run's slot request (cancelled to end its wait), and the run.
        self._requests: dict[RunId, asyncio.Task[Literal[True]]] = {}
        self.waiting: dict[RunId, tuple[QueuedRun, FencingToken]] = {}

    async def take(self, run: QueuedRun, token: FencingToken, *, cancelled: set[RunId]) -> bool:
        """True once a slot is this run's; False if the run was cancelled first (in
        `cancelled` as its slot came, or by `cancel` while it waited); the slot, if it came,
        is given back."""
        if self._free.locked():
            request = asyncio.create_task(self._free.acquire())
            self._requests[run.id] = request
            self.waiting[run.id] = (run, token)
            try:
                await asyncio.wait([request])
            except asyncio.CancelledError:  # abandoned: give the slot back or stop asking
                if request.done() and not request.cancelled():
                    self._free.release()
                request.cancel()
                raise
            finally:
                self._requests.pop(run.id, None)
                self.waiting.pop(run.id, None)
            if request.cancelled():
                return False
        else:
            await self._free.acquire()  # free: returns at once
        if run.id in cancelled:  # cancelled just as its slot came
            self._free.release()
            return False
        return True

    def release(self) -> None:
        self._free.release()

    def cancel(self, run_id: RunId) -> bool:
        """Ends a waiting run's wait (`take` returns False); False if it is not waiting."""
        request = self._requests.get(run_id)
        if request is None:
            return False
        request.cancel()
        return True
