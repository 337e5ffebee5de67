"""Shipping an attempt's output to the run_logs table while it runs, so that `GetRunLogs`
can follow it from any API server.

Output is batched: one fenced INSERT per attempt every `interval` at most. At most `limit`
bytes per attempt reach the database, the note included that says the rest was dropped. The
cap counts what was accepted, not what was shipped: bytes in a flush still in flight count too,
so concurrent flushes cannot overshoot it. (The local executor's --log-dir file has its own cap.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hourglass import retrying
from hourglass.domain import FencingToken, RunId
from hourglass.store import db, runs

log = logging.getLogger(__name__)

STDOUT, STDERR = 1, 2
TAIL_BYTES = 4096
DEFAULT_LIMIT = 1024 * 1024


class LogShipper:
    def __init__(
        self,
        pool: db.Pool,
        *,
        run_id: RunId,
        attempt: int,
        token: FencingToken,
        limit: int = DEFAULT_LIMIT,
        interval: float = 0.1,
    ) -> None:
        self.pool = pool
        self.run_id = run_id
        self.attempt = attempt
        self.token = token
        self.limit = limit
        self.interval = interval
        self.pending: list[tuple[int, bytes]] = []
        # Bytes taken for the database so far: pending, in flight, or written.
        self.accepted = 0
        self.truncated = False
        self.note = (
            f"\n[hourglass: output cut here; at most {limit} bytes are kept in the database]\n"
        ).encode()
        # The last bytes of each stream, for an attempt that ends without an executor's
        # outcome (cancelled while running).
        self.tails = {STDOUT: bytearray(), STDERR: bytearray()}
        self._task: asyncio.Task[None] | None = None

    def tail(self, stream: int) -> str:
        return self.tails[stream].decode("utf-8", errors="replace")

    def write(self, stream: int, data: bytes) -> None:
        """Takes output from the executor; never blocks it."""
        tail = self.tails[stream]
        tail += data
        del tail[:-TAIL_BYTES]
        note = self.note
        # Room for the data, keeping room for the note so that the two stay within the limit.
        room = self.limit - len(note) - self.accepted
        if len(data) > room:
            if self.truncated:
                return
            self.truncated = True
            kept = data[: max(room, 0)]
            if kept:
                self.pending.append((stream, kept))
            self.pending.append((STDERR, note))
            self.accepted += len(kept) + len(note)
        else:
            self.pending.append((stream, data))
            self.accepted += len(data)
        if self._task is None:
            self._task = asyncio.create_task(self._flush_soon(), name=f"logs {self.run_id}")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.interval)
        self._task = None
        await self.flush()

    async def flush(self) -> None:
        chunks, self.pending = self.pending, []
        if not chunks:
            return
        async for attempt in retrying.forever(max_wait=2):
            with attempt:
                async with db.transaction(self.pool) as conn:
                    await runs.append_logs(
                        conn,
                        run_id=self.run_id,
                        attempt=self.attempt,
                        token=self.token,
                        chunks=chunks,
                    )

    async def close(self) -> None:
        """Ships what is left; called before the attempt's result is written."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
