"""`hourglass dev`: the whole service in one process on embedded PostgreSQL and etcd."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys

from hourglass.cli import dev_cases, sandbox_options, services
from hourglass.embedded import EmbeddedEtcd, EmbeddedPostgres
from hourglass.store import migrate
from hourglass.workers.claimer import ClaimerConfig
from hourglass.workers.executors.sandbox import SandboxError
from hourglass.workers.worker import WorkerConfig

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
    try:
        chosen = dev_cases.choose(args.cases)
    except ValueError as error:
        print(f"hourglass dev: --case: {error}", file=sys.stderr)
        return 2
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
            api_insecure=True,
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

        try:
            if planned:
                asyncio.run(
                    dev_cases.run_beside(components, planned, database_url=dsn, on_ready=ready)
                )
            else:
                asyncio.run(services.run(components, on_ready=ready))
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
