"""Group commit: concurrent calls share one write, and each caller is answered after it.

A Shorten costs one INSERT committed before the answer; one commit per call makes the commit
(a round trip and a WAL flush) the bound on links per second. Here a call joins a queue; while
one flush is in flight the calls that arrive wait for the next, which takes them all (up to
`max_batch`) in one statement. Nothing is answered before the flush that holds it returned, so
"durable on return" holds for every caller; a flush that fails fails each of its callers.

At most one flush runs at a time per server, so batches grow with the load by themselves: a
lone caller waits for no timer, and eight concurrent callers share about one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 500


class GroupCommit(Generic[T, R]):
    """`flush(items)` writes a batch and returns one result per item, in order: a value, or an
    exception that its caller alone gets (an item refused on its own)."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.flush = flush
        self.max_batch = max_batch
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.runner is None:
            self.runner = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self.pending:
                batch = self.pending[: self.max_batch]
                del self.pending[: self.max_batch]
                try:
                    results = await self.flush([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.runner = None
            # Cancelled (the server stopping): nobody will flush what is left.
            for _, future in [*batch, *self.pending]:
                future.cancel()  # no-op for an answered one
            self.pending.clear()

    async def close(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
