"""What every case's server does the same way: a gRPC server with health and reflection
(so grpcurl and friends need no .proto files) whose calls are measured and whose
undecodable requests get INVALID_ARGUMENT, and a Redis client that fails fast."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import redis.asyncio as redis
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Histogram
from redis.backoff import NoBackoff
from redis.retry import Retry

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Measures every call of `service` in `latency` (labels method, code), and answers a
    request that does not even parse (a string that is not UTF-8, bytes cut short) with
    INVALID_ARGUMENT, not grpcio's INTERNAL."""

    def __init__(self, service: ServiceDescriptor, latency: Histogram) -> None:
        self.service = service
        self.latency = latency
        # The wrapped handler of each method, made once: grpcio asks on every call.
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self.wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        service, _, name = details.method.lstrip("/").partition("/")
        if handler is None or service != self.service.full_name or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        parse = handler.request_deserializer
        undecodable = object()
        input_type = self.service.methods_by_name[name].input_type.name
        latency = self.latency

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return undecodable

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                if request is undecodable:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"request: not a valid {input_type}"
                        " (a string that is not UTF-8, or bytes cut short)",
                    )
                return await inner(request, context)
            finally:
                code = context.code()
                label = code.name if isinstance(code, grpc.StatusCode) else "OK"
                latency.labels(name, label).observe(time.perf_counter() - started)

        wrapped = grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
        self.wrapped[details.method] = wrapped
        return wrapped


async def start_grpc(
    listen: str,
    service: ServiceDescriptor,
    add_servicer: Callable[[grpc.aio.Server], None],
    latency: Histogram,
) -> tuple[grpc.aio.Server, int]:
    """A started server for one case service (plus health and reflection); (server, port)."""
    server = grpc.aio.server(interceptors=[Guard(service, latency)])
    add_servicer(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service.full_name, HEALTH_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    await server.start()
    for name in ("", service.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast when Redis is away (the caller then answers from
    PostgreSQL) rather than retrying with a backoff while the caller waits."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 1),
    )
