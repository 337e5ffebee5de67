"""Serving the API: JobScheduler, Locks (when given etcd), plus the standard health and
reflection services, so any reflection client (grpcurl, Postman, evans) can call it without
the .proto files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hourglass.api.auth import Authenticator
from hourglass.api.events import Hub
from hourglass.api.interceptors import Metrics, UndecodableIsInvalid
from hourglass.api.locks import Locks
from hourglass.api.service import JobScheduler
from hourglass.api.uploads import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BINARY, UploadLimits
from hourglass.artifact_quota import DEFAULT_MAX_ARTIFACT_BYTES
from hourglass.artifacts import ArtifactStore
from hourglass.clock import Clock
from hourglass.locks import Etcd
from hourglass.mutex import Mutexes
from hourglass.store import db
from hourglass.v1 import locks_pb2, locks_pb2_grpc
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobScheduler"].full_name
LOCKS_NAME = locks_pb2.DESCRIPTOR.services_by_name["Locks"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True)
class Tls:
    """PEM files of the server's certificate and key; with client_ca, clients must present a
    certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )


@dataclass
class ApiServer:
    server: grpc.aio.Server
    hub: Hub
    port: int
    # The locks behind the Locks service; None when the server was started without etcd.
    locks: Mutexes | None = None

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        await self.hub.stop()


async def start(
    pool: db.Pool,
    listen: str,
    *,
    dsn: str,
    auth: Authenticator,
    tls: Tls | None = None,
    artifact_store: ArtifactStore | None = None,
    max_binary: int = DEFAULT_MAX_BINARY,
    upload_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    artifact_quota: int = DEFAULT_MAX_ARTIFACT_BYTES,
    clock: Clock | None = None,
    etcd: Etcd | None = None,
) -> ApiServer:
    """Starts serving on `listen` (HOST:PORT; port 0 picks a free port). `auth` is
    auth.Tokens(pool) in production and auth.Insecure() only when asked for explicitly.
    With `etcd`, it also serves the Locks service (under the same `auth`)."""
    limits = UploadLimits(
        max_binary=max_binary, idle_timeout=upload_idle_timeout, default_quota=artifact_quota
    )
    hub = Hub(dsn)
    await hub.start()
    # SO_REUSEPORT: `hourglass api --processes N` binds one port in N processes, and the
    # kernel spreads the connections over them (hourglass/cli/api_processes.py).
    server = grpc.aio.server(
        interceptors=[Metrics(), UndecodableIsInvalid()], options=[("grpc.so_reuseport", 1)]
    )
    service = JobScheduler(
        pool,
        hub=hub,
        auth=auth,
        artifact_store=artifact_store,
        upload_limits=limits,
        clock=clock,
    )
    pb_grpc.add_JobSchedulerServicer_to_server(service, server)
    served = [SERVICE_NAME]
    mutexes = None
    if etcd is not None:
        mutexes = Mutexes(etcd, clock=clock)
        locks_pb2_grpc.add_LocksServicer_to_server(Locks(mutexes, auth=auth), server)
        served.append(LOCKS_NAME)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*served, HEALTH_NAME, reflection.SERVICE_NAME), server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, tls.credentials())
    if port == 0:
        await hub.stop()
        raise OSError(f"cannot listen on {listen}: the address is taken or invalid")
    await server.start()
    for name in ("", *served):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("API serving %s on port %d", " and ".join(served), port)
    return ApiServer(server=server, hub=hub, port=port, locks=mutexes)
