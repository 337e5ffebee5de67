"""WatchJob: a job and its runs, then every change of every run, in order, with a cursor.

The changes come from the run event log (`hourglass.store.events`), never from re-reading
the runs: a re-read shows where a run is now, so a run that was queued, ran and finished
between two reads looked finished at once. A NOTIFY only wakes the stream, which then reads
the events after its cursor; a missed notification costs latency (the poll), never an event.
How a cursor works, and why it misses nothing, is in `hourglass.run_events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from hourglass import run_events
from hourglass.api import convert, validation
from hourglass.api.auth import Authenticator
from hourglass.api.events import Hub
from hourglass.domain import Attempt, Job, JobId, Run, RunId
from hourglass.run_events import Cursor
from hourglass.store import db, events, jobs, runs
from hourglass.v1 import scheduler_pb2 as pb

# A stream that sent nothing for this long sends its cursor alone (a bookmark), so that a
# client resuming after a quiet hour does not hold a cursor older than the event retention.
BOOKMARK_EVERY = 60.0
EXPIRED = "cursor expired, re-list: its changes were pruned; watch again without a cursor"
UNKNOWN = (
    "cursor expired, re-list: it is newer than this database (restored from a backup, or"
    " another installation's); watch again without a cursor"
)


def parse_cursor(text: str) -> Cursor | None:
    """The request's cursor, None when empty; Invalid naming the field otherwise."""
    if not text:
        return None
    try:
        return Cursor.parse(text)
    except ValueError:
        raise validation.Invalid("cursor", "is not a cursor this server returned") from None


class JobWatch:
    """One WatchJob stream: the caller has been authenticated and `job_id` validated."""

    def __init__(
        self,
        pool: db.Pool,
        *,
        hub: Hub,
        auth: Authenticator,
        poll: float,
        bookmark_every: float = BOOKMARK_EVERY,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.auth = auth
        self.poll = poll
        self.bookmark_every = bookmark_every

    async def stream(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        job_id: JobId,
        namespace: str,
        cursor: Cursor | None,
    ) -> AsyncIterator[pb.WatchJobResponse]:
        """Subscribing before the first read means no change falls between the list (or the
        cursor) and the stream: a change committed after the read still notifies."""
        with self.hub.subscribe(str(job_id)) as subscription:
            if cursor is None:
                job, recent, position = await self._list(job_id, namespace)
                if job is None:
                    await _not_found(context, job_id)
                sent_job = convert.job_to_pb(job)
                yield pb.WatchJobResponse(job=sent_job, cursor=str(position))
                for run in reversed(recent):
                    yield pb.WatchJobResponse(run=convert.run_to_pb(run), cursor=str(position))
            else:
                async with self.pool.connection() as conn:
                    found = await jobs.get(conn, job_id, namespace=namespace)
                    pruned_below, xmax_now = await events.horizon(conn)
                if found is None:
                    await _not_found(context, job_id)
                # Refused before anything is sent; checked again with every read.
                await _check(context, cursor, pruned_below=pruned_below, xmax_now=xmax_now)
                position = cursor
                sent_job = convert.job_to_pb(found)
                yield pb.WatchJobResponse(job=sent_job, cursor=str(position))
            loop = asyncio.get_running_loop()
            last_sent, sent_position = loop.time(), position
            top = position.top
            if top is not None:
                # Resumed inside a read: finish that read first, then go on after it.
                async with self.pool.connection() as conn:
                    rest = await events.read_rest(conn, job_id, cursor=position)
                    pruned_below, xmax_now = await events.horizon(conn)
                    attempts = await runs.attempts_of(conn, [e.run_id for e in rest])
                await _check(context, position, pruned_below=pruned_below, xmax_now=xmax_now)
                for event in rest:
                    position = position.within(top, event.id)
                    last_sent, sent_position = loop.time(), position
                    yield pb.WatchJobResponse(run=_run_pb(event, attempts), cursor=str(position))
                position = Cursor(top)
            while True:
                async with self.pool.connection() as conn:
                    read = await events.read_after(conn, job_id, after=position.base)
                    current = await jobs.get(conn, job_id)
                    attempts = await runs.attempts_of(conn, [e.run_id for e in read.events])
                await _check(
                    context, position, pruned_below=read.pruned_below, xmax_now=read.snapshot.xmax
                )
                if current is None:
                    return  # deleted: the stream ends
                job_message = convert.job_to_pb(current)
                if job_message != sent_job:
                    sent_job = job_message
                    last_sent, sent_position = loop.time(), position
                    yield pb.WatchJobResponse(job=job_message, cursor=str(position))
                for index, event in enumerate(read.events):
                    last = index == len(read.events) - 1
                    at = Cursor(read.snapshot) if last else position.within(read.snapshot, event.id)
                    last_sent, sent_position = loop.time(), at
                    yield pb.WatchJobResponse(run=_run_pb(event, attempts), cursor=str(at))
                position = Cursor(read.snapshot)
                if loop.time() - last_sent >= self.bookmark_every and position != sent_position:
                    last_sent, sent_position = loop.time(), position
                    yield pb.WatchJobResponse(cursor=str(position))
                await subscription.wait(self.poll)
                await self.auth.recheck(context)

    async def _list(self, job_id: JobId, namespace: str) -> tuple[Job | None, list[Run], Cursor]:
        """The job, its recent runs and the cursor that follows them, from one snapshot:
        the events after the cursor are exactly the changes the list does not show."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            position = await events.snapshot(conn)
            job = await jobs.get(conn, job_id, namespace=namespace)
            recent = await runs.list_for_job(conn, job_id, limit=10) if job else []
        return job, recent, Cursor(position)


def _run_pb(event: events.RunEvent, attempts: dict[RunId, tuple[Attempt, ...]]) -> pb.Run:
    """The run as the change left it."""
    return convert.run_to_pb(
        Run(
            id=event.run_id,
            job_id=event.job_id,
            scheduled_at=event.scheduled_at,
            state=event.state,
            attempt=event.attempt,
            created_at=event.created_at,
            finished_at=event.finished_at,
            attempts=run_events.attempts_at(
                event.state, event.attempt, attempts.get(event.run_id, ())
            ),
            trigger=event.trigger,
            reason=event.reason,
        )
    )


async def _check(
    context: grpc.aio.ServicerContext[Any, Any],
    cursor: Cursor,
    *,
    pruned_below: int,
    xmax_now: int,
) -> None:
    """Ends the stream with OUT_OF_RANGE (like etcd's compacted revision, Kubernetes' 410
    Gone) when events after `cursor` may be gone or cannot be told apart."""
    if run_events.expired(cursor, pruned_below=pruned_below):
        await context.abort(grpc.StatusCode.OUT_OF_RANGE, EXPIRED)
    if run_events.unknown(cursor, xmax_now=xmax_now):
        await context.abort(grpc.StatusCode.OUT_OF_RANGE, UNKNOWN)


async def _not_found(context: grpc.aio.ServicerContext[Any, Any], job_id: JobId) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} not found")
    raise AssertionError("abort raises")
