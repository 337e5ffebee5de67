"""Running the operator: leader election on a Lease, then kopf while this process leads.

`run()` blocks until it is stopped: by SIGINT/SIGTERM when it runs in the main thread, or by
the `stop` event from another thread (the tests do that). When leadership is lost, kopf is
stopped and the process campaigns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import kopf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from hourglass import cases, health
from hourglass.operator import cases as case_handlers
from hourglass.operator import handlers, kube, leader, resources, sj_refresh
from hourglass.operator.api_client import Api
from hourglass.operator.token_file import TokenFile

log = logging.getLogger(__name__)

DEFAULT_LEASE = "hourglass-operator"


class _QuietRefresh(logging.Filter):
    """Drops kopf's line for every successful status refresh (one per resource per tick)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'refresh' succeeded")


def _quiet_refreshes() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(existing, _QuietRefresh) for existing in objects.filters):
        objects.addFilter(_QuietRefresh())


def _settings(*, in_main_thread: bool) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    prefix = resources.GROUP
    settings.persistence.finalizer = handlers.FINALIZER
    # Progress and the last handled spec go into annotations, so the status holds only what
    # the schema describes.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    # The resources and namespaces are those at startup: no list/watch of CRDs or namespaces,
    # so no cluster-wide RBAC beyond the ScheduledJobs themselves.
    settings.scanning.disabled = True
    # Leadership comes from the Lease, not from kopf's peering.
    settings.peering.standalone = True
    settings.posting.reporting_component = "hourglass-operator"
    settings.posting.event_name_prefix = "hourglass-"
    # Watches that hang silently (a dead load balancer) are restarted.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # A resource being deleted keeps its finalizer until its timers have exited. A timer caught
    # mid-call (a status refresh waiting on the API server) is checked again only after
    # `cancellation_polling`, 60 s by default: deleting a case's resource then took a minute.
    # The refresh is one short API call, so check again each second.
    settings.background.cancellation_polling = 1
    if not in_main_thread:
        # kopf SIGKILLs its thread when it does not exit in time; in a thread that is the host
        # process (a test run, say).
        settings.process.ultimate_exiting_timeout = None
    return settings


async def _operate(
    *,
    registry: kopf.OperatorRegistry,
    namespaces: Sequence[str] | None,
    stop: asyncio.Event,
    ready: threading.Event | None,
    in_main_thread: bool,
) -> None:
    """kopf until `stop` is set (or kopf exits on its own, say on a signal)."""
    await kopf.operator(
        registry=registry,
        settings=_settings(in_main_thread=in_main_thread),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces or ()),
        stop_flag=stop,
        ready_flag=ready,
    )


async def _main(
    *,
    server: str,
    namespaces: Sequence[str] | None,
    lease: str | None,
    lease_namespace: str | None,
    identity: str | None,
    token: str | TokenFile | None,
    tls_ca: bytes | None,
    cfg: handlers.Config,
    checks: health.Health,
    platform: cases.Platform | None,
    lease_duration: float,
    stop_event: threading.Event | None,
    ready: threading.Event | None,
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()

    def install_signals() -> None:
        if in_main_thread:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(number, stopping.set)

    install_signals()
    watcher = asyncio.create_task(_watch(stop_event, stopping)) if stop_event else None

    elector: leader.LeaseElector | None = None
    api_client: client.ApiClient | None = None
    if lease is not None:
        api_client = kube.api_client()
        elector = leader.LeaseElector(
            api_client,
            name=lease,
            namespace=lease_namespace or leader.own_namespace(),
            identity=identity or leader.default_identity(),
            lease_duration=lease_duration,
            renew_deadline=lease_duration * 2 / 3,
            retry_period=lease_duration * 2 / 15,
        )

    if tls_ca is None:
        channel = grpc.aio.insecure_channel(server)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca)
        channel = grpc.aio.secure_channel(server, credentials)
    reconciler = handlers.Reconciler(Api(channel, cfg.rpc_timeout, token), cfg)
    checks.add("hourglass api", _api_check(channel, cfg.rpc_timeout))
    monitor = asyncio.create_task(checks.run(), name="health")
    registry = handlers.build_registry(
        reconciler, cfg, refresh=sj_refresh.Refresher(reconciler).refresh
    )
    plurals = [resources.PLURAL]
    cases_client: client.ApiClient | None = None
    if platform is not None:
        cases_client = kube.api_client()
        plurals += case_handlers.register(
            registry,
            case_handlers.Kube(cases_client),
            platform,
            refresh_interval=cfg.refresh_interval,
        )
    log.info(
        "operator for %s in %s, API %s",
        ", ".join(plurals),
        ", ".join(namespaces) if namespaces else "all namespaces",
        server,
    )
    try:
        while not stopping.is_set():
            if elector is not None and not await elector.acquire(stopping):
                break
            # Stops kopf: set on a stop, or when the Lease is lost.
            kopf_stop = asyncio.Event()
            relay = asyncio.create_task(_relay(stopping, kopf_stop))
            holder = (
                asyncio.create_task(_hold(elector, stopping, kopf_stop))
                if elector is not None
                else None
            )
            # Tasks made before kopf starts are not kopf's to cancel when it stops.
            await asyncio.sleep(0)
            try:
                await _operate(
                    registry=registry,
                    namespaces=namespaces,
                    stop=kopf_stop,
                    ready=ready,
                    in_main_thread=in_main_thread,
                )
            finally:
                lost = holder is not None and holder.done() and not stopping.is_set()
                for task in (relay, holder):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
            install_signals()  # kopf put in its own while it ran
            if not lost:
                break  # kopf stopped on a stop or a signal: so does the operator
            log.warning("leadership lost; campaigning again")
    finally:
        monitor.cancel()
        if watcher is not None:
            watcher.cancel()
        if elector is not None:
            await asyncio.to_thread(elector.release)
        for opened in (api_client, cases_client):
            if opened is not None:
                opened.close()  # type: ignore[no-untyped-call]
        await channel.close()


def _api_check(channel: grpc.aio.Channel, timeout: float) -> health.Check:
    """Readiness: the hourglass API answers its gRPC health check with SERVING."""
    stub: Any = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        request = health_pb2.HealthCheckRequest(service="")
        try:
            response = await stub.Check(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise health.NotReady(f"the hourglass API: {error.code().name}") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise health.NotReady("the hourglass API is not serving")

    return check


async def _watch(outside: threading.Event, inside: asyncio.Event) -> None:
    """Passes a stop from another thread into this loop."""
    # Polled: a thread blocked in outside.wait() would outlive the loop when nobody sets it.
    while not outside.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    inside.set()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _hold(
    elector: leader.LeaseElector, stopping: asyncio.Event, kopf_stop: asyncio.Event
) -> None:
    await elector.hold(stopping)
    kopf_stop.set()


def run(
    server: str,
    namespaces: Sequence[str] | None = None,
    lease: str | None = DEFAULT_LEASE,
    *,
    token: str | None = None,
    token_file: str | None = None,
    tls_ca: str | None = None,
    lease_namespace: str | None = None,
    identity: str | None = None,
    refresh_interval: float = 5.0,
    lease_duration: float = 15.0,
    platform: cases.Platform | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Runs the ScheduledJob operator until stopped; blocks.

    server: the hourglass API, HOST:PORT.
    namespaces: the namespaces to serve; None or empty: all of them.
    lease: the name of the coordination.k8s.io Lease that elects the one active operator;
        None: no election (a single replica, or a developer's laptop).
    token: the API token, sent as `authorization: Bearer <token>`; None: none (a server
        started with --insecure).
    token_file: a file holding the token instead, re-read when it changes (the service
        account token that the chart projects, which the kubelet rotates).
    tls_ca: a PEM file of the CA that signed the API's certificate: TLS; None: plaintext.
    lease_namespace: where the Lease lives (default: $POD_NAMESPACE, else the service
        account's namespace, else "default").
    identity: this candidate's name in the Lease (default: $POD_NAME or the host name, plus
        a random suffix).
    refresh_interval: seconds between status refreshes of each resource.
    lease_duration: seconds a leader's Lease lasts without renewal (renewed every 2/15 of it,
        given up after 2/3 of it without a renewal).
    platform: what the cases' objects refer to (image, Secret, etcd): reconcile the custom
        resource of every case in `hourglass.cases` too; None: ScheduledJobs only.
    stop, ready: for running it in a thread: set `stop` to stop it; `ready` is set once kopf
        is serving.
    """
    _quiet_refreshes()
    cfg = handlers.Config(server=server, refresh_interval=refresh_interval)
    asyncio.run(
        _main(
            server=server,
            namespaces=namespaces,
            lease=lease,
            lease_namespace=lease_namespace,
            identity=identity,
            token=TokenFile(token_file) if token_file else token,
            tls_ca=Path(tls_ca).read_bytes() if tls_ca else None,
            cfg=cfg,
            checks=health.PROCESS,
            platform=platform,
            lease_duration=lease_duration,
            stop_event=stop,
            ready=ready,
        )
    )
