"""`hourglass serve <case> --name <resource>`: one case's server for one resource.

Before serving, the case's migrations (`Case.migrations`) are applied into the resource's own
PostgreSQL schema (`hourglass.cases.schema_name`), and the server gets a database URL whose
connections see only that schema. The flags and environment variables follow `hourglass api`:
`--database-url`/HOURGLASS_DATABASE_URL, `--etcd`/HOURGLASS_ETCD_ENDPOINTS,
`--metrics-listen`/HOURGLASS_METRICS_LISTEN, the global `--log-format`, plus
`--redis-url`/HOURGLASS_REDIS_URL and `--spec` (the resource's spec, a JSON file: the
ConfigMap the operator mounts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hourglass import cases, health
from hourglass.cli.options import command, kubernetes_namespace

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50061"


def add_parser(commands: Any, *, add_metrics_option: Any) -> None:
    """Registers `serve` on the CLI's subcommands."""
    env = os.environ.get
    serve = command(
        commands,
        "serve",
        help="serve a case (leaderboard, ...) for one resource, after migrating its schema",
        examples=[
            "hourglass serve leaderboard --name scores --resource-namespace games"
            " --database-url postgresql://... --redis-url redis://redis:6379/0",
        ],
    )
    serve.add_argument("case", metavar="CASE", help="the case: " + (", ".join(cases.NAMES) or "-"))
    serve.add_argument("--name", required=True, help="the resource's name (its schema's name)")
    kubernetes_namespace(
        serve,
        "--resource-namespace",
        dest="resource_namespace",
        default=env("HOURGLASS_RESOURCE_NAMESPACE", ""),
        metavar="K8S_NAMESPACE",
        help="the resource's Kubernetes namespace, part of its schema's name"
        " (env HOURGLASS_RESOURCE_NAMESPACE)",
    )
    serve.add_argument(
        "--database-url",
        default=env("HOURGLASS_DATABASE_URL", ""),
        help="PostgreSQL DSN (env HOURGLASS_DATABASE_URL)",
    )
    serve.add_argument(
        "--redis-url",
        default=env("HOURGLASS_REDIS_URL", ""),
        help="redis://HOST:PORT/DB (env HOURGLASS_REDIS_URL)",
    )
    serve.add_argument(
        "--etcd",
        default=env("HOURGLASS_ETCD_ENDPOINTS", ""),
        help="etcd endpoints HOST:PORT[,HOST:PORT] (env HOURGLASS_ETCD_ENDPOINTS)",
    )
    serve.add_argument(
        "--listen",
        default=env("HOURGLASS_LISTEN", DEFAULT_LISTEN),
        help=f"gRPC address HOST:PORT (env HOURGLASS_LISTEN, default {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--http-listen",
        default=env("HOURGLASS_HTTP_LISTEN", ""),
        metavar="HOST:PORT",
        help="HTTP address, for cases with an HTTP face (env HOURGLASS_HTTP_LISTEN)",
    )
    serve.add_argument(
        "--role",
        default=env("HOURGLASS_CASE_ROLE", ""),
        help="which of the case's servers to run, for a case with several (the shortener:"
        " read, write); default all (env HOURGLASS_CASE_ROLE)",
    )
    serve.add_argument(
        "--artifacts",
        default=env("HOURGLASS_ARTIFACTS", ""),
        metavar="URL",
        help="object store for cases that keep blobs: a folder or s3://bucket/prefix"
        "?endpoint=... (env HOURGLASS_ARTIFACTS)",
    )
    serve.add_argument(
        "--spec",
        type=Path,
        default=Path(env("HOURGLASS_SPEC_FILE", "")) if env("HOURGLASS_SPEC_FILE") else None,
        help="the resource's spec as a JSON object (env HOURGLASS_SPEC_FILE; default {})",
    )
    add_metrics_option(serve)


def read_spec(path: Path | None) -> dict[str, Any]:
    """The spec in `path` ({} for None); ValueError naming the file and the reason."""
    if path is None:
        return {}
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"--spec {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--spec {path}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--spec {path}: must hold a JSON object, not {type(value).__name__}")
    return value


def settings(
    case: cases.Case,
    *,
    name: str,
    namespace: str,
    database_url: str,
    redis_url: str,
    etcd_endpoints: str,
    listen: str,
    http_listen: str | None,
    metrics_listen: str | None,
    spec: Mapping[str, Any],
    role: str = "",
    artifacts: str = "",
) -> cases.Settings:
    """The case's Settings for one resource: its schema, and a database URL scoped to it."""
    from hourglass.store import migrate

    schema = cases.schema_name(case.name, name, namespace)
    return cases.Settings(
        name=name,
        database_url=migrate.scoped_dsn(database_url, schema),
        redis_url=redis_url,
        etcd_endpoints=etcd_endpoints,
        listen=listen,
        http_listen=http_listen or None,
        metrics_listen=metrics_listen or None,
        spec=spec,
        namespace=namespace,
        schema=schema,
        role=role,
        artifacts=artifacts,
    )


async def migrate_case(case: cases.Case, *, database_url: str, schema: str) -> list[str]:
    """Applies the case's migrations into `schema`, riding out a database that is not up yet
    (pods start in any order)."""
    # Imported here: every `hourglass` command imports this module, most never need these.
    from hourglass import retrying
    from hourglass.store import migrate

    async for attempt in retrying.forever():
        with attempt:
            return await asyncio.to_thread(
                migrate.apply, database_url, folder=case.migrations, schema=schema
            )
    raise AssertionError("unreachable")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        case = cases.get(args.case)
    except ValueError as error:
        parser.error(f"CASE: {error}")
    for flag in ("database_url", "redis_url"):
        if not getattr(args, flag):
            variable = f"HOURGLASS_{flag.upper()}"
            parser.error(f"--{flag.replace('_', '-')} is required (or set {variable})")
    try:
        spec = read_spec(args.spec)
        chosen = settings(
            case,
            name=args.name,
            namespace=args.resource_namespace,
            database_url=args.database_url,
            redis_url=args.redis_url,
            etcd_endpoints=args.etcd,
            listen=args.listen,
            http_listen=args.http_listen,
            metrics_listen=args.metrics_listen,
            spec=spec,
            role=args.role,
            artifacts=args.artifacts,
        )
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(_serve(case, chosen, database_url=args.database_url))
    return 0


async def _serve(case: cases.Case, chosen: cases.Settings, *, database_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    applied = await migrate_case(case, database_url=database_url, schema=chosen.schema)
    log.info(
        "%s %s: schema %s%s",
        case.name,
        chosen.name,
        chosen.schema,
        f" (applied {', '.join(applied)})" if applied else " (up to date)",
    )
    addresses = [f"gRPC on {chosen.listen}"]
    if chosen.http_listen:
        addresses.append(f"HTTP on {chosen.http_listen}")
    print(f"hourglass serve {case.name} {chosen.name}: {', '.join(addresses)}", flush=True)
    # /healthz on the metrics port: the loop turns (the case's own probes are on its HTTP port).
    monitor = asyncio.create_task(health.PROCESS.run(), name="health")
    try:
        await case.serve(chosen, stop)
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor


def add_platform_options(operator: argparse.ArgumentParser) -> None:
    """The operator's view of the installation that the cases' servers run in."""
    env = os.environ.get
    operator.add_argument(
        "--case-image",
        default=env("HOURGLASS_CASE_IMAGE", ""),
        help="image of the cases' servers; set: reconcile the cases' resources too"
        " (env HOURGLASS_CASE_IMAGE)",
    )
    operator.add_argument(
        "--case-secret",
        default=env("HOURGLASS_CASE_SECRET", ""),
        help="Secret with database-url and redis-url for the cases' servers, in each"
        " resource's namespace (env HOURGLASS_CASE_SECRET)",
    )
    operator.add_argument(
        "--case-etcd",
        default=env("HOURGLASS_CASE_ETCD_ENDPOINTS", ""),
        help="etcd endpoints for the cases' servers (env HOURGLASS_CASE_ETCD_ENDPOINTS)",
    )


def platform(parser: argparse.ArgumentParser, args: argparse.Namespace) -> cases.Platform | None:
    """The Platform the operator's flags describe; None without --case-image."""
    if not args.case_image:
        return None
    if not args.case_secret:
        parser.error("--case-image needs --case-secret (or set HOURGLASS_CASE_SECRET)")
    return cases.Platform(
        image=args.case_image, secret=args.case_secret, etcd_endpoints=args.case_etcd
    )
