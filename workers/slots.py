"""The worker's slots: `concurrency` attempts execute at once, and runs claimed ahead wait
for a slot in claim order (workers/claim_ahead.py says how many are claimed ahead).

A run waiting for a slot has been claimed (running, under its fencing token) but has not
started (nor has its stored attempt, unless it was claimed for a slot that was free). A
user's cancel ends its wait at once; a stopping worker hands such runs back
(`waiting`). Neither ever starts the command.

In a drain nearly every run waits here, so a wait costs one future: a freed slot is handed
to the oldest waiting run directly (True), and a cancel answers its wait with False.
"""

from __future__ import annotations

import asyncio

from hourglass.domain import FencingToken, RunId
from hourglass.store.claims import QueuedRun


class Slots:
    def __init__(self, concurrency: int) -> None:
        self._free = concurrency
        # Each waiting run's slot request, in claim order: True once a slot is handed to it,
        # False once its wait is cancelled. A request stays here, answered, until its run
        # has woken up to it.
        self._requests: dict[RunId, asyncio.Future[bool]] = {}
        self.waiting: dict[RunId, tuple[QueuedRun, FencingToken]] = {}

    async def take(self, run: QueuedRun, token: FencingToken, *, cancelled: set[RunId]) -> bool:
        """True once a slot is this run's; False if the run was cancelled first (in
        `cancelled` as its slot came, or by `cancel` while it waited); the slot, if it came,
        is given back."""
        if self._free > 0:  # then nobody waits: a freed slot goes to a waiting run first
            self._free -= 1
        else:
            request: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._requests[run.id] = request
            self.waiting[run.id] = (run, token)
            try:
                granted = await request
            except asyncio.CancelledError:  # abandoned: give the slot back if it came
                if request.done() and not request.cancelled() and request.result():
                    self.release()
                raise
            finally:
                del self._requests[run.id]
                self.waiting.pop(run.id, None)
            if not granted:
                return False
        if run.id in cancelled:  # cancelled just as its slot came
            self.release()
            return False
        return True

    def release(self) -> None:
        for request in self._requests.values():
            if not request.done():
                request.set_result(True)
                return
        self._free += 1

    def cancel(self, run_id: RunId) -> bool:
        """Ends a waiting run's wait (`take` returns False); False if it is not waiting."""
        request = self._requests.get(run_id)
        if request is None:
            return False
        if not request.done():
            request.set_result(False)
        return True
