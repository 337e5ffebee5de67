"""The Locks service: named locks with fencing tokens for the caller's namespace.

The recipe lives in the core (`hourglass.mutex`); this module checks the requests, resolves
the caller's namespace, and maps outcomes to answers. Every lock is scoped by the namespace
of the caller's token, so a lock of another namespace is another lock: it cannot be seen,
taken, kept alive or released from here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from hourglass import metrics, mutex
from hourglass.api import convert
from hourglass.api.auth import Authenticator
from hourglass.api.validation import Invalid
from hourglass.locks import TRANSIENT_ERRORS
from hourglass.v1 import locks_pb2 as pb
from hourglass.v1 import locks_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]
_MAX_NANOS = 999_999_999


def name(value: str) -> str:
    reason = mutex.check_name(value)
    if reason is not None:
        raise Invalid("name", reason)
    return value


def holder(value: str) -> str:
    if len(value) > mutex.MAX_HOLDER:
        raise Invalid("holder", f"must be at most {mutex.MAX_HOLDER} characters")
    if not value.isprintable():
        raise Invalid("holder", "must hold only printable characters")
    return value


def lease(value: int) -> int:
    if value <= 0:
        raise Invalid("lease", "is required: the lease Acquire returned")
    return value


def seconds(message: Duration, field: str) -> float:
    """A Duration as seconds, refusing what google.protobuf.Duration itself forbids."""
    if not -_MAX_NANOS <= message.nanos <= _MAX_NANOS:
        raise Invalid(f"{field}.nanos", f"must be between -{_MAX_NANOS} and {_MAX_NANOS}")
    if message.seconds and message.nanos and (message.seconds < 0) != (message.nanos < 0):
        raise Invalid(field, "seconds and nanos must have the same sign")
    return message.seconds + message.nanos / 1e9


def ttl(request: pb.AcquireRequest) -> int:
    if not request.HasField("ttl"):
        raise Invalid("ttl", f"is required: from {mutex.MIN_TTL}s to {mutex.MAX_TTL}s")
    value = seconds(request.ttl, "ttl")
    reason = mutex.check_ttl(value)
    if reason is not None:
        raise Invalid("ttl", reason)
    return mutex.lease_seconds(value)


def wait(request: pb.AcquireRequest) -> float:
    value = seconds(request.wait, "wait") if request.HasField("wait") else 0.0
    reason = mutex.check_wait(value)
    if reason is not None:
        raise Invalid("wait", reason)
    return value


def _entry(entry: mutex.Entry) -> pb.LockEntry:
    message = pb.LockEntry(lease=entry.lease, token=entry.token, holder=entry.holder)
    since = convert.timestamp(entry.since)
    if since is not None:
        message.since.CopyFrom(since)
    return message


def _answers(method: Handler[Response]) -> Handler[Response]:
    """Invalid input is INVALID_ARGUMENT naming the field; etcd out of reach is UNAVAILABLE
    (safe to retry: a failed Acquire leaves no key behind, its lease is revoked or expires)."""

    @wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        try:
            return await method(self, request, context)
        except Invalid as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except mutex.LeaseExpired as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"{exc}; try again")
        except TRANSIENT_ERRORS as exc:
            log.warning("locks: etcd unreachable: %s", exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "etcd is unreachable; try again")

    return wrapper


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str
) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("abort raises")


class Locks(pb_grpc.LocksServicer):
    def __init__(self, mutexes: mutex.Mutexes, *, auth: Authenticator) -> None:
        self.mutexes = mutexes
        self.auth = auth

    @_answers
    async def Acquire(
        self, request: pb.AcquireRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AcquireResponse:
        namespace = await self.auth.namespace(context)
        lock, lease_ttl = name(request.name), ttl(request)
        waiting, who = wait(request), holder(request.holder)
        outcome = await self.mutexes.acquire(
            namespace=namespace, name=lock, ttl=lease_ttl, wait=waiting, holder=who
        )
        if isinstance(outcome, mutex.Busy):
            metrics.lock_acquisitions.labels("busy").inc()
            response = pb.AcquireResponse(acquired=False)
            if outcome.holder is not None:
                response.holder.CopyFrom(_entry(outcome.holder))
            return response
        metrics.lock_acquisitions.labels("acquired").inc()
        response = pb.AcquireResponse(acquired=True, lease=outcome.lease, token=outcome.token)
        response.ttl.FromSeconds(outcome.ttl)
        return response

    @_answers
    async def KeepAlive(
        self, request: pb.KeepAliveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.KeepAliveResponse:
        namespace = await self.auth.namespace(context)
        lock, held = name(request.name), lease(request.lease)
        remaining = await self.mutexes.keep_alive(namespace=namespace, name=lock, lease=held)
        if remaining is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, _not_held(lock, held))
        response = pb.KeepAliveResponse()
        response.ttl.FromSeconds(remaining)
        return response

    @_answers
    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReleaseResponse:
        namespace = await self.auth.namespace(context)
        lock, held = name(request.name), lease(request.lease)
        if not await self.mutexes.release(namespace=namespace, name=lock, lease=held):
            await _abort(context, grpc.StatusCode.NOT_FOUND, _not_held(lock, held))
        return pb.ReleaseResponse()

    @_answers
    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeResponse:
        namespace = await self.auth.namespace(context)
        lock = name(request.name)
        queue = await self.mutexes.describe(namespace=namespace, name=lock)
        response = pb.DescribeResponse(
            name=lock, waiters=[_entry(w) for w in queue.waiters], waiting=queue.waiting
        )
        if queue.holder is not None:
            response.holder.CopyFrom(_entry(queue.holder))
        if queue.holder_ttl is not None:
            response.holder_ttl.FromSeconds(queue.holder_ttl)
        return response


def _not_held(lock: str, held: int) -> str:
    return f"lease {held:x} does not hold lock {lock!r}: it expired or was released"
