"""Serving the API: JobScheduler plus the standard health and reflection services, so any
reflection client (grpcurl, Postman, evans) can call it without the .proto files."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hourglass.api.service import JobScheduler
from hourglass.clock import Clock
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobScheduler"].full_name


async def start(
    pool: db.Pool, listen: str, clock: Clock | None = None
) -> tuple[grpc.aio.Server, int]:
    """Starts the server on `listen` (HOST:PORT; port 0 picks one); returns it and its port."""
    server = grpc.aio.server()
    pb_grpc.add_JobSchedulerServicer_to_server(JobScheduler(pool, clock), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}: the address is taken or invalid")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("API serving %s on port %d", SERVICE_NAME, port)
    return server, port
