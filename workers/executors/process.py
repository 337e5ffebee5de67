"""An attempt's child process as the event loop reports it (the local executor's spawn)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class AttemptProcess(asyncio.SubprocessProtocol):
    """An attempt's process as the event loop reports it: its output handed on as it comes,
    its exit, and the end of its output (both pipes closed).

    A protocol, not asyncio's Process with a StreamReader per pipe and a task pumping each:
    that was two tasks, two buffers and a future per read for every attempt, a tenth of the
    worker's own CPU per run of /bin/true (docs/benchmarks.md)."""

    def __init__(self, output: Callable[[int, bytes], None]) -> None:
        self._output = output
        self.pid = 0
        self._exited = False
        # Of stdout and stderr, those still open.
        self.open_pipes = 2
        self._exit_waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._output(fd, data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open_pipes -= 1
        if not self.open_pipes:
            _wake(self._drain_waiters)

    def process_exited(self) -> None:
        self._exited = True
        _wake(self._exit_waiters)

    async def wait(self) -> None:
        """Returns once the process has exited (its output may still be open)."""
        if not self._exited:
            await _waiter(self._exit_waiters)

    async def drained(self) -> None:
        """Returns once both output pipes are closed."""
        if self.open_pipes:
            await _waiter(self._drain_waiters)


def _waiter(waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """A future of its own per wait: cancelling one wait leaves the others."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    return waiter


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()
