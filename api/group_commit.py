"""Group commit for ScheduleJob: the calls of one namespace that arrive while its last
statement is in flight share the next one.

A namespace's submits are serialized (its max_jobs count must be exact: the statement locks
the namespace's row of namespace_counts), and the lock is held through each commit's WAL
flush. One call per transaction made the namespace's rate one flush and one lock hand-over
per job; on a busy machine each hand-over also waits for the next backend to be scheduled,
and 8 clients managed fewer calls than one (docs/benchmarks.md). Here, per API process and
namespace, one statement at a time is in flight; the calls that arrive meanwhile wait and go
together in the next one, so one lock and one flush serve them all. A lone call waits for
nothing: it finds nothing in flight and goes at once.

Every caller is answered only after the commit that stored its job. The jobs are admitted in
arrival order (hourglass.store.admitted): one left out by a quota gets None and takes the
full path alone, which refuses it and says why, while the others are stored. A batch that
fails as a whole (a lost connection, a value the database refuses) is retried job by job,
so one job's failure is only its own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from hourglass.domain import JobId
from hourglass.store import admitted, db

log = logging.getLogger(__name__)

# Calls one statement may carry; more wait for the next. Bounds how long the lock is held.
MAX_BATCH = 64


@dataclass(slots=True)
class _Queue:
    waiting: list[tuple[admitted.Prepared, asyncio.Future[JobId | None]]] = field(
        default_factory=list
    )
    # The task storing this namespace's batches; None when nothing is in flight.
    task: asyncio.Task[None] | None = None


class GroupCommit:
    """Stores prepared jobs, batching the concurrent ones of each namespace (see above)."""

    def __init__(self, pool: db.Pool, *, max_batch: int = MAX_BATCH) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self._queues: dict[str, _Queue] = {}

    async def store(self, prepared: admitted.Prepared) -> JobId | None:
        """The job's id once committed; None when it must take the full path."""
        queue = self._queues.setdefault(prepared.namespace, _Queue())
        future: asyncio.Future[JobId | None] = asyncio.get_running_loop().create_future()
        queue.waiting.append((prepared, future))
        if queue.task is None:
            queue.task = asyncio.create_task(self._drain(prepared.namespace, queue))
        # A caller that goes away (its deadline passed) does not stop its batch.
        return await asyncio.shield(future)

    async def _drain(self, namespace: str, queue: _Queue) -> None:
        """Stores batches until no call waits, then removes the namespace's queue."""
        batch: list[tuple[admitted.Prepared, asyncio.Future[JobId | None]]] = []
        try:
            while queue.waiting:
                batch = queue.waiting[: self.max_batch]
                del queue.waiting[: self.max_batch]
                await self._store(batch)
                batch = []
        finally:
            # Cancelled (the server is stopping): the calls still waiting are answered too.
            for _, future in batch + queue.waiting:
                _answer(future, error=asyncio.CancelledError())
            queue.waiting.clear()
            queue.task = None
            del self._queues[namespace]

    async def _store(
        self, batch: list[tuple[admitted.Prepared, asyncio.Future[JobId | None]]]
    ) -> None:
        try:
            async with self.pool.connection() as conn:
                stored = await admitted.store(conn, [prepared for prepared, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _answer(batch[0][1], error=exc)
                return
            log.warning("a batch of %d jobs failed (%s); storing them one by one", len(batch), exc)
            for one in batch:
                await self._store([one])
            return
        for (_, future), job_id in zip(batch, stored, strict=True):
            _answer(future, job_id=job_id)


def _answer(
    future: asyncio.Future[JobId | None],
    *,
    job_id: JobId | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(job_id)
