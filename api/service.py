"""The JobScheduler service: the requests of hourglass.v1, answered from the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

import grpc

from hourglass import artifact_quota, artifacts, ownership
from hourglass.api import answers, bulk_submit, convert, revisions, run_queries, validation, watch
from hourglass.api.auth import Authenticator
from hourglass.api.events import Hub
from hourglass.api.submit import Submits
from hourglass.api.uploads import DEFAULT_MAX_BINARY, UploadIdle, UploadLimits, Uploads
from hourglass.clock import Clock, SystemClock
from hourglass.domain import Job, JobId, Run, RunId, RunSummary
from hourglass.store import db, fires, jobs, quotas, run_lists, runs
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BINARY", "JobScheduler"]
# How often a stream re-reads without a notification: a safety net, not the mechanism.
STREAM_POLL = 2.0


class JobScheduler(pb_grpc.JobSchedulerServicer):
    """Each call first learns the caller's namespace from its token; a job or run of another
    namespace is answered exactly like one that does not exist (NOT_FOUND)."""

    def __init__(
        self,
        pool: db.Pool,
        *,
        hub: Hub,
        auth: Authenticator,
        artifact_store: artifacts.ArtifactStore | None = None,
        upload_limits: UploadLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.auth = auth
        self.clock = clock or SystemClock()
        self.uploads = (
            Uploads(pool, artifact_store, limits=upload_limits or UploadLimits(), clock=clock)
            if artifact_store is not None
            else None
        )
        # Streams wait at most this long between re-checks of their token.
        self.stream_poll = min(STREAM_POLL, auth.recheck_interval)
        self.watches = watch.JobWatch(pool, hub=hub, auth=auth, poll=self.stream_poll)
        self.submits = Submits(pool)

    async def _own_job(
        self, context: grpc.aio.ServicerContext[Any, Any], job_id: JobId, namespace: str
    ) -> Job:
        async with self.pool.connection() as conn:
            job = await jobs.get(conn, job_id, namespace=namespace)
        if job is None:
            await answers.not_found(context, job_id)
        return job

    async def _own_run(
        self, context: grpc.aio.ServicerContext[Any, Any], run_id: RunId, namespace: str
    ) -> Run:
        async with self.pool.connection() as conn:
            run = await runs.get(conn, run_id)
            owner = await jobs.get(conn, run.job_id, namespace=namespace) if run else None
        if run is None or owner is None:
            await answers.run_not_found(context, run_id)
        return run

    async def _changeable_job(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        job_id: JobId,
        namespace: str,
        *,
        request: Any,
        change: ownership.Change,
    ) -> Job:
        """The caller's job, once it may be changed: a managed job refuses a change that its
        manager would undo, unless the request names that manager or forces it."""
        job = await self._own_job(context, job_id, namespace)
        refused = ownership.refusal(
            job_id=str(job_id),
            managed_by=job.managed_by,
            manager=validation.manager(request.manager),
            force=request.force,
            change=change,
        )
        if refused is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refused)
        if job.managed_by and request.force and request.manager != job.managed_by:
            log.warning("job %s (managed by %s): forced %s", job_id, job.managed_by, change)
        return job

    @answers.answers_invalid
    async def ScheduleJob(
        self, request: pb.ScheduleJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleJobResponse:
        namespace = await self.auth.namespace(context)
        try:
            job_id = await self.submits.schedule_job(
                request, namespace=namespace, now=self.clock.now()
            )
        except jobs.RequestConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        return pb.ScheduleJobResponse(job_id=str(job_id))

    @answers.answers_invalid
    async def ScheduleJobs(
        self, request: pb.ScheduleJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleJobsResponse:
        namespace = await self.auth.namespace(context)
        try:
            ids = await bulk_submit.schedule_jobs(
                self.pool, request.requests, namespace=namespace, now=self.clock.now()
            )
        except jobs.RequestConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        log.info("%d jobs scheduled in namespace %s", len(ids), namespace)
        return pb.ScheduleJobsResponse(job_ids=[str(job_id) for job_id in ids])

    @answers.answers_invalid
    async def GetJobStatus(
        self, request: pb.GetJobStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobStatusResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        limit = validation.page_size(
            request.recent_runs, default=10, maximum=100, field="recent_runs"
        )
        job = await self._own_job(context, job_id, namespace)
        async with self.pool.connection() as conn:
            recent = await runs.list_for_job(conn, job_id, limit=limit)
        return pb.GetJobStatusResponse(
            job=convert.job_to_pb(job), recent_runs=[convert.run_to_pb(r) for r in recent]
        )

    @answers.answers_invalid
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        namespace = await self.auth.namespace(context)
        limit = validation.page_size(request.page_size, default=50, maximum=500)
        after = answers.decode_token(request.page_token) if request.page_token else None
        name = validation.name_filter(request.name)
        id_range = validation.id_range(request.id_prefix)
        async with self.pool.connection() as conn:
            page = await jobs.list_page(
                conn, namespace=namespace, limit=limit + 1, after=after, name=name, ids=id_range
            )
        token = ""
        if len(page) > limit:
            page = page[:limit]
            token = answers.encode_token(page[-1].created_at.isoformat(), page[-1].id)
        return pb.ListJobsResponse(
            jobs=[convert.job_to_pb(job) for job in page], next_page_token=token
        )

    @answers.answers_invalid
    async def UpdateJob(
        self, request: pb.UpdateJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        now = self.clock.now()
        spec = validation.job_spec(request.spec, now=now)
        await self._changeable_job(
            context, job_id, namespace, request=request, change=ownership.Change.UPDATE
        )
        async with db.transaction(self.pool) as conn:
            await quotas.admit_schedules(conn, namespace, [spec.schedule], now=now)
            job = await jobs.update(conn, job_id, spec=spec, now=now)
        if job is None:
            await answers.not_found(context, job_id)
        return pb.UpdateJobResponse(job=convert.job_to_pb(job))

    @answers.answers_invalid
    async def ListJobRevisions(
        self, request: pb.ListJobRevisionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobRevisionsResponse:
        namespace = await self.auth.namespace(context)
        page = await revisions.list_page(self.pool, request, namespace=namespace)
        if page is None:
            await answers.not_found(context, validation.job_id(request.job_id))
        return page

    @answers.answers_invalid
    async def PauseJob(
        self, request: pb.PauseJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PauseJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        await self._changeable_job(
            context, job_id, namespace, request=request, change=ownership.Change.PAUSE
        )
        async with db.transaction(self.pool) as conn:
            job = await jobs.pause(conn, job_id, now=self.clock.now())
        if job is None:
            await answers.not_found(context, job_id)
        return pb.PauseJobResponse(job=convert.job_to_pb(job))

    @answers.answers_invalid
    async def ResumeJob(
        self, request: pb.ResumeJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResumeJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        await self._changeable_job(
            context, job_id, namespace, request=request, change=ownership.Change.RESUME
        )
        async with db.transaction(self.pool) as conn:
            job = await jobs.resume(conn, job_id, now=self.clock.now())
        if job is None:
            await answers.not_found(context, job_id)
        return pb.ResumeJobResponse(job=convert.job_to_pb(job))

    @answers.answers_invalid
    async def TriggerJob(
        self, request: pb.TriggerJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TriggerJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        await self._own_job(context, job_id, namespace)
        async with db.transaction(self.pool) as conn:
            await quotas.lock(conn, namespace)
            run_id = await fires.trigger(conn, job_id, now=self.clock.now())
            if run_id is None:
                await answers.not_found(context, job_id)
            await quotas.enforce_queued(conn, namespace)
            run = await runs.get(conn, run_id)
        assert run is not None
        return pb.TriggerJobResponse(run=convert.run_to_pb(run))

    @answers.answers_invalid
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        await self._changeable_job(
            context, job_id, namespace, request=request, change=ownership.Change.CANCEL
        )
        async with db.transaction(self.pool) as conn:
            job = await jobs.cancel(conn, job_id, now=self.clock.now())
        if job is None:
            await answers.not_found(context, job_id)
        log.info("job %s cancelled", job_id)
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    @answers.answers_invalid
    async def DeleteJob(
        self, request: pb.DeleteJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteJobResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        await self._changeable_job(
            context, job_id, namespace, request=request, change=ownership.Change.DELETE
        )
        async with db.transaction(self.pool) as conn:
            if not await jobs.delete(conn, job_id, now=self.clock.now()):
                await answers.not_found(context, job_id)
        log.info("job %s deleted", job_id)
        return pb.DeleteJobResponse()

    @answers.answers_invalid
    async def Backfill(
        self, request: pb.BackfillRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BackfillResponse:
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        start, end = validation.time_range(
            getattr(request, "from"),
            request.to,
            has_start=request.HasField("from"),
            has_end=request.HasField("to"),
        )
        await self._own_job(context, job_id, namespace)
        try:
            async with db.transaction(self.pool) as conn:
                await quotas.lock(conn, namespace)
                queued = await fires.backfill(
                    conn, job_id, start=start, end=end, now=self.clock.now()
                )
                await quotas.enforce_queued(conn, namespace)
        except ValueError as exc:
            raise validation.Invalid("to", str(exc)) from None
        if queued is None:
            await answers.not_found(context, job_id)
        return pb.BackfillResponse(queued=queued)

    @answers.answers_invalid
    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRunsResponse:
        namespace = await self.auth.namespace(context)
        query = run_queries.parse(request)
        before = answers.decode_token(request.page_token) if request.page_token else None
        if query.job_id is not None:
            await self._own_job(context, query.job_id, namespace)
        window = run_lists.Window(
            namespace=namespace,
            job_id=query.job_id,
            ids=query.ids,
            start=query.start,
            end=query.end,
        )
        page: Sequence[Run | RunSummary]
        async with self.pool.connection() as conn:
            if query.summary:
                page = await run_lists.summaries(conn, window, limit=query.limit + 1, before=before)
            else:
                page = await run_lists.page(conn, window, limit=query.limit + 1, before=before)
        token = ""
        if len(page) > query.limit:
            page = page[: query.limit]
            token = answers.encode_token(page[-1].scheduled_at.isoformat(), page[-1].id)
        return pb.ListRunsResponse(
            runs=[
                convert.run_summary_to_pb(run)
                if isinstance(run, RunSummary)
                else convert.run_to_pb(run)
                for run in page
            ],
            next_page_token=token,
        )

    @answers.answers_invalid
    async def CancelRun(
        self, request: pb.CancelRunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelRunResponse:
        namespace = await self.auth.namespace(context)
        run_id = validation.run_id(request.run_id)
        await self._own_run(context, run_id, namespace)
        async with db.transaction(self.pool) as conn:
            await runs.request_cancel(
                conn, [run_id], reason="cancelled by a user", now=self.clock.now()
            )
            run = await runs.get(conn, run_id)
        if run is None:
            await answers.run_not_found(context, run_id)
        return pb.CancelRunResponse(run=convert.run_to_pb(run))

    @answers.streams_invalid
    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        """Sends the job and its recent runs (or, from a cursor, the job), then every change
        of every run, in order (`hourglass.api.watch`)."""
        namespace = await self.auth.namespace(context)
        job_id = validation.job_id(request.job_id)
        cursor = watch.parse_cursor(request.cursor)
        async for message in self.watches.stream(
            context, job_id=job_id, namespace=namespace, cursor=cursor
        ):
            yield message

    @answers.streams_invalid
    async def GetRunLogs(
        self, request: pb.GetRunLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.GetRunLogsResponse]:
        namespace = await self.auth.namespace(context)
        run_id = validation.run_id(request.run_id)
        await self._own_run(context, run_id, namespace)
        last = 0
        with self.hub.subscribe(str(run_id)) as subscription:
            while True:
                # Through the cache: a busy stream costs no query per round.
                await self.auth.recheck(context)
                async with self.pool.connection() as conn:
                    run = await runs.get(conn, run_id)
                    chunks = await runs.read_logs(conn, run_id, after_seq=last)
                if run is None:
                    return  # deleted meanwhile
                for seq, attempt, stream, data in chunks:
                    last = seq
                    yield pb.GetRunLogsResponse(
                        attempt=attempt, stream=pb.LogStream.Name(stream), data=data
                    )
                if chunks:
                    continue  # there may be more already
                if not request.follow or run.state.terminal:
                    return
                await subscription.wait(self.stream_poll)

    async def UploadBinary(
        self,
        request_iterator: AsyncIterable[pb.UploadBinaryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UploadBinaryResponse:
        namespace = await self.auth.namespace(context)
        if self.uploads is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server has no artifact store; start it with --artifacts",
            )
        assert self.uploads is not None
        try:
            return await self.uploads.receive(request_iterator, namespace=namespace)
        except (artifacts.ArtifactTooLarge, artifact_quota.QuotaExceeded) as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except UploadIdle as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        raise AssertionError("abort raises")
