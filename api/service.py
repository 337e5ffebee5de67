"""The JobScheduler service: the requests of hourglass.v1, answered from the store."""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc

from hourglass.api import convert, validation
from hourglass.clock import Clock, SystemClock
from hourglass.domain import JobId
from hourglass.store import db, jobs, runs
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]


def _answers_invalid(method: Handler[Response]) -> Handler[Response]:
    """Maps validation errors to INVALID_ARGUMENT naming the field and the reason."""

    @wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        try:
            return await method(self, request, context)
        except validation.Invalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this only satisfies the type checker

    return wrapper


async def _not_found(context: grpc.aio.ServicerContext[Any, Any], job_id: JobId) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} not found")
    raise AssertionError("abort raises")


def _encode_token(*parts: Any) -> str:
    return base64.urlsafe_b64encode("|".join(str(p) for p in parts).encode()).decode()


def _decode_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, ident = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError):
        raise validation.Invalid("page_token", "is not a token this server returned") from None


def request_digest(request: pb.ScheduleJobRequest) -> bytes:
    """What a request_id is bound to: the request without its id, serialized
    deterministically (map entries sorted), hashed."""
    body = pb.ScheduleJobRequest()
    body.CopyFrom(request)
    body.request_id = ""
    return hashlib.sha256(body.SerializeToString(deterministic=True)).digest()


class JobScheduler(pb_grpc.JobSchedulerServicer):
    def __init__(self, pool: db.Pool, clock: Clock | None = None) -> None:
        self.pool = pool
        self.clock = clock or SystemClock()

    @_answers_invalid
    async def ScheduleJob(
        self, request: pb.ScheduleJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleJobResponse:
        now = self.clock.now()
        spec = validation.job_spec(request, now=now)
        try:
            async with db.transaction(self.pool) as conn:
                job_id, created = await jobs.create(
                    conn,
                    spec=spec,
                    now=now,
                    request_id=request.request_id,
                    request_digest=request_digest(request) if request.request_id else b"",
                )
        except jobs.RequestConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        if created:
            log.info("job %s (%s) scheduled", job_id, spec.name)
        return pb.ScheduleJobResponse(job_id=str(job_id))

    @_answers_invalid
    async def GetJobStatus(
        self, request: pb.GetJobStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobStatusResponse:
        job_id = validation.job_id(request.job_id)
        limit = validation.page_size(
            request.recent_runs, default=10, maximum=100, field="recent_runs"
        )
        async with self.pool.connection() as conn:
            job = await jobs.get(conn, job_id)
            if job is None:
                await _not_found(context, job_id)
            recent = await runs.list_for_job(conn, job_id, limit=limit)
        return pb.GetJobStatusResponse(
            job=convert.job_to_pb(job), recent_runs=[convert.run_to_pb(r) for r in recent]
        )

    @_answers_invalid
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        limit = validation.page_size(request.page_size, default=50, maximum=500)
        after = _decode_token(request.page_token) if request.page_token else None
        async with self.pool.connection() as conn:
            page = await jobs.list_page(conn, limit=limit + 1, after=after)
        token = ""
        if len(page) > limit:
            page = page[:limit]
            token = _encode_token(page[-1].created_at.isoformat(), page[-1].id)
        return pb.ListJobsResponse(
            jobs=[convert.job_to_pb(job) for job in page], next_page_token=token
        )

    @_answers_invalid
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobResponse:
        job_id = validation.job_id(request.job_id)
        async with db.transaction(self.pool) as conn:
            job = await jobs.cancel(conn, job_id, now=self.clock.now())
        if job is None:
            await _not_found(context, job_id)
        log.info("job %s cancelled", job_id)
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    @_answers_invalid
    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRunsResponse:
        job_id = validation.job_id(request.job_id)
        limit = validation.page_size(request.page_size, default=50, maximum=500)
        before = _decode_token(request.page_token) if request.page_token else None
        async with self.pool.connection() as conn:
            if await jobs.get(conn, job_id) is None:
                await _not_found(context, job_id)
            page = await runs.list_for_job(conn, job_id, limit=limit + 1, before=before)
        token = ""
        if len(page) > limit:
            page = page[:limit]
            token = _encode_token(page[-1].scheduled_at.isoformat(), page[-1].id)
        return pb.ListRunsResponse(runs=[convert.run_to_pb(r) for r in page], next_page_token=token)
