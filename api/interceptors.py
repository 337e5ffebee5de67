"""Measures every API call: latency by method and status code."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from hourglass import metrics
from hourglass.api import validation, wire_errors
from hourglass.v1 import locks_pb2
from hourglass.v1 import scheduler_pb2 as pb

_SERVICES = {
    service.full_name: service
    for service in (
        pb.DESCRIPTOR.services_by_name["JobScheduler"],
        locks_pb2.DESCRIPTOR.services_by_name["Locks"],
    )
}


class Metrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method.rsplit("/", 1)[-1]
        if handler is None or not details.method.startswith("/hourglass."):
            return handler
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    _observe(method, context, started)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streams are measured by their own nature: long-lived


def _observe(method: str, context: grpc.aio.ServicerContext[Any, Any], started: float) -> None:
    code = context.code()
    name = code.name if isinstance(code, grpc.StatusCode) else "OK"
    metrics.api_latency.labels(method, name).observe(time.perf_counter() - started)


class UndecodableIsInvalid(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """grpcio answers UNKNOWN when it cannot parse a request (a string that is not UTF-8,
    bytes cut short); this answers INVALID_ARGUMENT naming the field, as for any invalid field."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service_name, _, name = details.method.lstrip("/").partition("/")
        service = _SERVICES.get(service_name)
        if handler is None or service is None or name not in service.methods_by_name:
            return handler
        request_type = service.methods_by_name[name].input_type
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return wire_errors.undecodable(request_type, data)

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(request, validation.Invalid):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))

        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def checked_unary_unary(request: Any, context: Any) -> Any:
                await refuse(request, context)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked_unary_unary, request_deserializer=deserialize, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def checked_unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await refuse(request, context)
                async for response in unary_stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                checked_unary_stream,
                request_deserializer=deserialize,
                response_serializer=serialize,
            )
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            async def checked_stream_unary(requests: AsyncIterable[Any], context: Any) -> Any:
                async def checked() -> AsyncIterator[Any]:
                    async for request in requests:
                        await refuse(request, context)
                        yield request

                return await stream_unary(checked(), context)

            return grpc.stream_unary_rpc_method_handler(
                checked_stream_unary,
                request_deserializer=deserialize,
                response_serializer=serialize,
            )
        return handler
