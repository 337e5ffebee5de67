"""Runs the long-running processes and their housekeeping: dev, api, producer, worker,
claimer, operator, migrate, fetch-binary (their options are `component_options`). Heavy
imports wait until a command runs, so that building the parser stays cheap for every client
command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from hourglass import artifact_quota, durations
from hourglass.cli import api_auth_options, api_processes, sandbox_options
from hourglass.cli.options import require

COMMANDS = ("dev", "api", "producer", "worker", "claimer", "fetch-binary", "operator", "migrate")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if getattr(args, "metrics_listen", ""):
        from hourglass import health

        health.serve(args.metrics_listen)
    if args.command == "dev":
        from hourglass.cli import dev

        return dev.run(args)
    if args.command == "fetch-binary":
        return _fetch_binary(parser, args)
    if args.command == "operator":
        from hourglass.cli import serve
        from hourglass.operator import main as operator_main

        if args.token and args.token_file:
            parser.error("--token and --token-file exclude each other (or unset HOURGLASS_TOKEN)")
        operator_main.run(
            args.server,
            args.namespaces or None,
            args.lease or None,
            token=args.token or None,
            token_file=args.token_file or None,
            tls_ca=args.tls_ca or None,
            platform=serve.platform(parser, args),
        )
        return 0
    if args.command == "migrate":
        require(parser, args, "database-url")
        from hourglass.store import migrate

        applied = migrate.apply(args.database_url)
        print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    if args.command == "worker" and args.processes != 1:
        from hourglass.cli import worker_processes
        from hourglass.workers.worker_config import default_worker_id

        require(parser, args, "database-url")
        require(parser, args, "etcd")
        try:
            slots = worker_processes.split_slots(args.concurrency, args.processes)
        except ValueError as exc:
            parser.error(str(exc))
        return worker_processes.supervise(
            args.words,
            processes=len(slots),
            concurrency=args.concurrency,
            worker_id=args.worker_id or default_worker_id(),
            metrics=args.metrics_listen,
        )
    return _run_component(parser, args)


def _fetch_binary(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Writes the binary to PATH, executable, only if its bytes match the digest."""
    from hourglass import artifact_urls, artifacts

    if not args.artifacts and not args.url:
        parser.error("--artifacts or --url is required (or set HOURGLASS_ARTIFACTS)")
    try:
        digest = artifacts.parse_digest(args.digest)
        store = None if args.url else artifacts.open_store(args.artifacts)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if store is None:
            artifact_urls.fetch_url(args.url, digest, args.destination)
        else:
            asyncio.run(store.fetch(digest, args.destination))
    except artifacts.ArtifactError as exc:
        print(f"hourglass: {exc}", file=sys.stderr)
        return 1
    args.destination.chmod(0o755)
    print(f"{digest} verified and written to {args.destination}")
    return 0


def _server_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    from hourglass.api.server import Tls

    if not args.tls_cert and not args.tls_key:
        if args.tls_client_ca:
            parser.error("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca):
        if path is not None and not path.is_file():
            parser.error(f"{path}: no such file")
    return Tls(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)


def _kubernetes(args: argparse.Namespace) -> Any:
    if args.command != "worker" or args.executor != "kubernetes":
        return None
    from hourglass.workers.executors.kubernetes import KubernetesConfig

    return KubernetesConfig(
        namespace=args.job_namespace,
        runner_image=args.runner_image,
        artifacts_url=args.artifacts or "",
        ttl_seconds_after_finished=args.job_ttl,
        service_account=args.job_service_account,
        run_as_user=args.job_run_as_user,
        job_namespaces=_names(args.allowed_job_namespaces),
        template_tenants=_names(args.job_template_tenants),
    )


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _run_component(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hourglass.cli import services
    from hourglass.workers.claimer import ClaimerConfig
    from hourglass.workers.maintenance import MaintenanceConfig
    from hourglass.workers.worker_config import WorkerConfig, default_worker_id

    require(parser, args, "database-url")
    if args.command in ("worker", "claimer"):
        require(parser, args, "etcd")
    try:
        components = services.Components(
            dsn=args.database_url,
            etcd_endpoints=getattr(args, "etcd", ""),
            etcd_prefix=getattr(args, "etcd_prefix", "/hourglass/"),
            api_listen=args.listen if args.command == "api" else None,
            api_insecure=getattr(args, "insecure", False),
            api_tls=_server_tls(parser, args) if args.command == "api" else None,
            api_service_accounts=api_auth_options.service_accounts(parser, args),
            api_token_audience=getattr(args, "kubernetes_token_audience", "hourglass"),
            api_max_binary=getattr(args, "max_binary_size", 256 * 1024 * 1024),
            api_upload_idle_timeout=(
                args.upload_idle_timeout.total_seconds() if args.command == "api" else 30.0
            ),
            api_artifact_quota=getattr(
                args, "artifact_quota", artifact_quota.DEFAULT_MAX_ARTIFACT_BYTES
            ),
            producer=args.command == "producer",
            worker=WorkerConfig(
                concurrency=args.concurrency,
                claim_ahead=args.claim_ahead,
                lease_ttl=args.lease_ttl,
                worker_id=args.worker_id or default_worker_id(),
                shutdown_grace=args.shutdown_grace,
            )
            if args.command == "worker"
            else None,
            claimer=ClaimerConfig(lease_ttl=args.lease_ttl) if args.command == "claimer" else None,
            maintenance=MaintenanceConfig(
                retention=durations.parse(args.retention),
                event_retention=durations.parse(args.event_retention),
            )
            if args.command == "claimer"
            else None,
            log_dir=getattr(args, "log_dir", None),
            log_max_bytes=getattr(args, "log_max_bytes", sandbox_options.DEFAULT_LOG_MAX_BYTES),
            sandbox=sandbox_options.config(args)
            if args.command == "worker" and args.executor == "local"
            else None,
            artifacts=getattr(args, "artifacts", None) or None,
            binary_cache=getattr(args, "binary_cache", None),
            kubernetes=_kubernetes(args),
        )
    except ValueError as exc:
        parser.error(str(exc))

    others = api_processes.others(parser, args)

    def ready(port: int | None) -> None:
        if port is None:
            print(f"hourglass {args.command} running", flush=True)
            return
        host = args.listen.rsplit(":", 1)[0]
        if api_processes.index():
            api_processes.say_ready()
        elif others is None:
            print(f"hourglass api serving on {host}:{port}", flush=True)
        else:
            api_processes.start_in_background(others, host=host, port=port)

    from hourglass.workers.executors.sandbox import SandboxError

    try:
        asyncio.run(services.run(components, on_ready=ready))
    except SandboxError as exc:
        print(f"hourglass {args.command}: cannot sandbox attempts: {exc}", file=sys.stderr)
        return 1
    finally:
        if others is not None:
            others.stop()
    return 1 if others is not None and others.failed else 0
