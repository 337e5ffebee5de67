"""How the JobScheduler answers: domain errors as gRPC statuses, NOT_FOUND alike for what
does not exist and what belongs to another namespace, and the page tokens of its lists."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc

from hourglass import quota_rules
from hourglass.api import validation
from hourglass.domain import JobId, RunId
from hourglass.store import jobs

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]
StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]]


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    """Maps domain errors to statuses: validation to INVALID_ARGUMENT naming the field and the
    reason, a namespace quota to RESOURCE_EXHAUSTED naming the quota and its value, a state
    that forbids the change to FAILED_PRECONDITION."""
    if isinstance(exc, validation.Invalid):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, quota_rules.QuotaExceeded):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, jobs.UnknownArtifact):
        # NOT_FOUND whether another namespace uploaded it or nobody did: no difference shows.
        await context.abort(grpc.StatusCode.NOT_FOUND, f"spec.task.binary: {exc}")
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    raise AssertionError("abort raises")


DOMAIN_ERRORS = (
    validation.Invalid,
    jobs.UnknownArtifact,
    jobs.NotAllowed,
    quota_rules.QuotaExceeded,
)


def answers_invalid(method: Handler[Response]) -> Handler[Response]:
    @wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        try:
            return await method(self, request, context)
        except DOMAIN_ERRORS as exc:
            await abort_for(exc, context)

    return wrapper


def streams_invalid(method: StreamHandler[Response]) -> StreamHandler[Response]:
    @wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        try:
            async for item in method(self, request, context):
                yield item
        except DOMAIN_ERRORS as exc:
            await abort_for(exc, context)

    return wrapper


async def not_found(context: grpc.aio.ServicerContext[Any, Any], job_id: JobId) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} not found")
    raise AssertionError("abort raises")


async def run_not_found(context: grpc.aio.ServicerContext[Any, Any], run_id: RunId) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"run {run_id} not found")
    raise AssertionError("abort raises")


def encode_token(*parts: Any) -> str:
    return base64.urlsafe_b64encode("|".join(str(p) for p in parts).encode()).decode()


def decode_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, ident = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError):
        raise validation.Invalid("page_token", "is not a token this server returned") from None
