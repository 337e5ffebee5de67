"""Running components in this process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hourglass import artifacts, health, retrying
from hourglass.api import auth, kube_auth
from hourglass.api import server as api_server
from hourglass.api.uploads import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BINARY
from hourglass.artifact_quota import DEFAULT_MAX_ARTIFACT_BYTES
from hourglass.locks import Etcd
from hourglass.store import db
from hourglass.workers.claimer import Claimer, ClaimerConfig
from hourglass.workers.executors.base import Executor
from hourglass.workers.executors.host import Host
from hourglass.workers.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from hourglass.workers.executors.local import DEFAULT_LOG_LIMIT, BinaryCache, LocalExecutor
from hourglass.workers.executors.sandbox import SandboxConfig
from hourglass.workers.maintenance import Maintenance, MaintenanceConfig
from hourglass.workers.producer import Producer
from hourglass.workers.worker import Worker
from hourglass.workers.worker_config import WorkerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Components:
    """Which components to run, and their settings."""

    dsn: str
    etcd_endpoints: str = ""
    etcd_prefix: str = "/hourglass/"
    api_listen: str | None = None
    # Serve without authentication (every caller in the "default" namespace).
    api_insecure: bool = False
    api_tls: api_server.Tls | None = None
    # Kubernetes service accounts ("NAMESPACE/NAME") that may call with their own tokens
    # (TokenReview), each mapped to an hourglass namespace; and the audience their tokens name.
    api_service_accounts: Mapping[str, str] = field(default_factory=dict)
    api_token_audience: str = kube_auth.DEFAULT_AUDIENCE
    api_max_binary: int = DEFAULT_MAX_BINARY
    # An upload that sends nothing for this many seconds is ended.
    api_upload_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # Bytes of binaries a namespace may own unless `hourglass quota set` says otherwise.
    api_artifact_quota: int = DEFAULT_MAX_ARTIFACT_BYTES
    producer: bool = False
    worker: WorkerConfig | None = None
    claimer: ClaimerConfig | None = None
    maintenance: MaintenanceConfig | None = None
    # Where each attempt's output is kept (local executor), up to log_max_bytes per attempt.
    log_dir: Path | None = None
    log_max_bytes: int = DEFAULT_LOG_LIMIT
    # The local executor's attempt sandbox; None runs jobs as this process's user, unisolated
    # (`hourglass dev --unsandboxed` only).
    sandbox: SandboxConfig | None = None
    # The artifact store of uploaded binaries: a folder or an s3:// URL.
    artifacts: str | None = None
    # Where workers keep the binaries they fetched.
    binary_cache: Path | None = None
    # Run attempts as Kubernetes Jobs with these settings instead of local processes.
    kubernetes: KubernetesConfig | None = None


def _watch_children_with_pidfd(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11's default child watcher starts a thread per child process: a sixth of a
    busy worker's time (docs/benchmarks.md). Linux's pidfds need none; 3.12 uses them by
    default."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # a kernel without pidfds (before 5.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)


def _authenticator(
    components: Components, pool: db.Pool, closers: list[Callable[[], None]]
) -> auth.Authenticator:
    if components.api_insecure:
        return auth.Insecure()
    tokens = auth.Tokens(pool)
    if not components.api_service_accounts:
        return tokens
    api = kube_auth.kubernetes_client()
    closers.append(api.close)
    accounts = kube_auth.ServiceAccounts(
        api, accounts=components.api_service_accounts, audience=components.api_token_audience
    )
    return kube_auth.Combined(tokens, accounts)


def _freeze_start_up_heap() -> None:
    """Takes what the process holds once started (modules, protobuf descriptors, the gRPC
    server) out of the garbage collector's full passes: they are never garbage, and each full
    pass walked them all. A ScheduleJobs of 1,000 jobs makes enough objects to run one, and
    the collector took 30 us per job, 100 ms a full pass; frozen, 3 us (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


async def _open_pool(dsn: str) -> db.Pool:
    async for attempt in retrying.forever():
        with attempt:
            return await db.open_pool(dsn)
    raise AssertionError("unreachable")


async def run(
    components: Components,
    on_ready: Callable[[int | None], None] | None = None,
    *,
    checks: health.Health = health.PROCESS,
) -> None:
    """Runs the chosen components until a signal. A worker drains on SIGTERM first. Their
    readiness checks go into `checks` (served on /readyz with the metrics)."""
    loop = asyncio.get_running_loop()
    _watch_children_with_pidfd(loop)
    host = None
    if components.worker is not None and components.kubernetes is None and components.sandbox:
        # Before anything else: a worker that cannot sandbox says so at once, rather than
        # after waiting for its database (SandboxError ends the process).
        host = Host(components.sandbox)
        host.start()
    # The monitor runs from the start: while the database is still out of reach the process
    # is alive (/healthz) and not ready (/readyz).
    checks.add("database", health.pending("connecting"))
    monitor = asyncio.create_task(checks.run(), name="health")
    try:
        await _run(components, host, on_ready, checks)
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        if host is not None:
            host.stop()


async def _run(
    components: Components,
    host: Host | None,
    on_ready: Callable[[int | None], None] | None,
    checks: health.Health,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A component started while PostgreSQL is unreachable retries until it connects, and a
    # SIGTERM meanwhile must still stop it.
    opening = asyncio.create_task(_open_pool(components.dsn))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([opening, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not opening.done():
        opening.cancel()
        log.info("stopped before the database could be reached")
        return
    stopped.cancel()
    pool = opening.result()
    checks.add("database", lambda: db.ping(pool))
    store = artifacts.open_store(components.artifacts) if components.artifacts else None
    etcd = (
        Etcd(components.etcd_endpoints, components.etcd_prefix)
        if components.etcd_endpoints
        else None
    )
    if etcd is not None:
        checks.add("etcd", etcd.ping)
    tasks: list[asyncio.Task[None]] = []
    worker: Worker | None = None
    server: api_server.ApiServer | None = None
    closers: list[Callable[[], None]] = []

    def spawn(name: str, coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.create_task(coro, name=name))

    try:
        port = None
        if components.api_listen is not None:
            server = await api_server.start(
                pool,
                components.api_listen,
                dsn=components.dsn,
                auth=_authenticator(components, pool, closers),
                tls=components.api_tls,
                artifact_store=store,
                max_binary=components.api_max_binary,
                upload_idle_timeout=components.api_upload_idle_timeout,
                artifact_quota=components.api_artifact_quota,
                etcd=etcd,
            )
            port = server.port
        if components.producer:
            spawn("producer", Producer(pool=pool, dsn=components.dsn).run())
        if components.claimer is not None:
            assert etcd is not None, "the claimer needs etcd"
            maintenance = Maintenance(
                pool=pool, artifact_store=store, config=components.maintenance
            )
            claimer = Claimer(
                pool=pool, etcd=etcd, config=components.claimer, maintenance=maintenance
            )
            checks.add(
                "claimer lease", health.lease_check("the claimer's etcd lease", claimer.holds_lease)
            )
            spawn("claimer", claimer.run())
        if components.worker is not None:
            assert etcd is not None, "the worker needs etcd"
            executor: Executor
            if components.kubernetes is not None:
                kubernetes = KubernetesExecutor(components.kubernetes)
                closers.append(kubernetes.close)
                executor = kubernetes
            else:
                binaries = None
                if store is not None:
                    cache = components.binary_cache or Path.home() / ".cache" / "hourglass" / "bin"
                    binaries = BinaryCache(store, cache)
                if host is None:
                    log.warning("attempts run unsandboxed, as this process's user")
                executor = LocalExecutor(
                    log_dir=components.log_dir,
                    binaries=binaries,
                    sandbox=host,
                    log_limit=components.log_max_bytes,
                )
            worker = Worker(
                pool=pool,
                dsn=components.dsn,
                etcd=etcd,
                executor=executor,
                config=components.worker,
            )
            checks.add(
                "worker lease", health.lease_check("the worker's etcd lease", worker.holds_lease)
            )
            spawn("worker", worker.run())
        if server is not None:
            _freeze_start_up_heap()
        if on_ready is not None:
            on_ready(port)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping")
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            await server.stop(grace=2)
        for task in tasks:
            if task.get_name() != "worker":
                task.cancel()
        if worker is not None:
            # The worker drains its attempts; past the grace (or while it is stuck retrying
            # an outage) it is cancelled, and the claimer takes its runs back.
            worker_task = next(t for t in tasks if t.get_name() == "worker")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(worker_task), worker.config.shutdown_grace + 5
                )
            worker_task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for close in closers:
            close()
        if etcd is not None:
            await etcd.close()
        await pool.close()
