"""The long-running processes and their housekeeping: dev, api, producer, worker, claimer,
operator, migrate, fetch-binary. Heavy imports wait until a command runs, so that building
the parser stays cheap for every client command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import platformdirs

from hourglass import artifact_quota, durations
from hourglass.cli import admin, api_auth_options, api_processes, dev_cases, sandbox_options
from hourglass.cli.options import (
    DEFAULT_LISTEN,
    add_artifacts_option,
    add_metrics_option,
    add_store_options,
    command,
    duration,
    env,
    env_path,
    kubernetes_namespace,
    require,
)

COMMANDS = ("dev", "api", "producer", "worker", "claimer", "fetch-binary", "operator", "migrate")


def add_parsers(commands: Any) -> None:
    """Adds the component commands to the top-level subparsers."""
    _add_dev(commands)
    _add_api(commands)
    producer = command(
        commands,
        "producer",
        help="queue runs for due fires",
        examples=["HOURGLASS_DATABASE_URL=postgresql://... hourglass producer"],
    )
    add_store_options(producer, etcd=False)
    add_metrics_option(producer)
    _add_worker(commands)
    claimer = command(
        commands,
        "claimer",
        help="take back runs whose worker died, and delete old finished runs",
        examples=["hourglass claimer --database-url postgresql://... --etcd etcd:2379"],
    )
    add_store_options(claimer)
    add_metrics_option(claimer)
    claimer.add_argument("--lease-ttl", type=int, default=10, help="seconds (default 10)")
    add_artifacts_option(claimer)
    claimer.add_argument(
        "--retention",
        type=duration,
        default=env("HOURGLASS_RETENTION", "30d"),
        help="keep finished runs this long (env HOURGLASS_RETENTION, default 30d)",
    )
    claimer.add_argument(
        "--event-retention",
        type=duration,
        default=env("HOURGLASS_EVENT_RETENTION", "15m"),
        help="keep run state changes this long: how old a `watch` cursor may resume from"
        " (env HOURGLASS_EVENT_RETENTION, default 15m)",
    )
    fetch = command(
        commands,
        "fetch-binary",
        help="fetch an uploaded binary and verify its digest (the runner's init container)",
        examples=[
            "hourglass fetch-binary sha256:9f86d0... /work/bin --artifacts s3://bin",
            "HOURGLASS_BINARY_URL=https://... hourglass fetch-binary sha256:9f86d0... /work/bin",
        ],
    )
    fetch.add_argument("digest", metavar="DIGEST", help="sha256:<hex>")
    fetch.add_argument("destination", type=Path, metavar="PATH")
    add_artifacts_option(fetch)
    fetch.add_argument(
        "--url",
        default=env("HOURGLASS_BINARY_URL"),
        help="a signed URL of exactly this binary, instead of --artifacts: how a Kubernetes"
        " job pod, which holds no store credential, gets it (env HOURGLASS_BINARY_URL)",
    )
    _add_operator(commands)
    migrate = command(
        commands,
        "migrate",
        help="bring the database schema up to date",
        examples=["hourglass migrate --database-url postgresql://hourglass@db/hourglass"],
    )
    add_store_options(migrate, etcd=False)


def _add_dev(commands: Any) -> None:
    dev = command(
        commands,
        "dev",
        help="run everything on embedded PostgreSQL and etcd with the local executor",
        examples=["hourglass dev", "hourglass dev --unsandboxed --case leaderboard"],
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env("HOURGLASS_DATA_DIR", platformdirs.user_data_dir("hourglass"))),
        help="where the embedded databases and run logs live (env HOURGLASS_DATA_DIR)",
    )
    dev.add_argument("--listen", default=DEFAULT_LISTEN, help="API address HOST:PORT")
    dev.add_argument("--concurrency", type=int, default=32, help="attempts run at once")
    dev.add_argument(
        "--console",
        default="auto",
        metavar="HOST:PORT",
        help="serve the web console here (default: port 8642 beside the API, or a free one;"
        " '' for none)",
    )
    dev.add_argument(
        "--tokens",
        action="store_true",
        help="the API requires tokens, as in production: make them with `hourglass token"
        " create --database-url <the database it prints>`",
    )
    add_metrics_option(dev)
    sandbox_options.add(dev, escape_hatch=True)
    dev_cases.add_options(dev)


def _add_api(commands: Any) -> None:
    api = command(
        commands,
        "api",
        help="serve the gRPC API (and the Locks service, given --etcd)",
        examples=[
            "hourglass api --database-url postgresql://... --etcd etcd:2379 --listen 0.0.0.0:50051"
            " --tls-cert tls.crt --tls-key tls.key",
        ],
    )
    add_store_options(api)
    add_metrics_option(api)
    api.add_argument("--listen", default=DEFAULT_LISTEN, help="API address HOST:PORT")
    add_artifacts_option(api)
    api.add_argument(
        "--insecure",
        action="store_true",
        help="serve without tokens: every caller is in the default namespace",
    )
    api_processes.add_option(api)
    api_auth_options.add(api)
    api.add_argument("--tls-cert", type=Path, default=env_path("HOURGLASS_TLS_CERT"))
    api.add_argument("--tls-key", type=Path, default=env_path("HOURGLASS_TLS_KEY"))
    api.add_argument(
        "--tls-client-ca",
        type=Path,
        default=env_path("HOURGLASS_TLS_CLIENT_CA"),
        help="require client certificates signed by this CA (mutual TLS)",
    )
    api.add_argument(
        "--max-binary-size",
        type=int,
        default=256 * 1024 * 1024,
        help="largest binary UploadBinary accepts, in bytes (default 256 MiB)",
    )
    api.add_argument(
        "--upload-idle-timeout",
        type=admin.positive_duration,
        default=admin.positive_duration("30s"),
        help="end an upload that sends nothing for this long, keeping nothing (default 30s)",
    )
    api.add_argument(
        "--artifact-quota",
        type=admin.byte_size,
        default=artifact_quota.DEFAULT_MAX_ARTIFACT_BYTES,
        metavar="SIZE",
        help="bytes of binaries a namespace may upload unless `hourglass quota set` gave it"
        " its own quota (default 1GiB)",
    )


def _add_worker(commands: Any) -> None:
    worker = command(
        commands,
        "worker",
        help="claim and execute queued runs",
        examples=[
            "hourglass worker --database-url postgresql://... --etcd etcd:2379",
            "hourglass worker --executor kubernetes --job-namespace hgjobs ...",
        ],
    )
    add_store_options(worker)
    add_metrics_option(worker)
    worker.add_argument("--lease-ttl", type=int, default=10, help="seconds (default 10)")
    worker.add_argument("--concurrency", type=int, default=32, help="attempts run at once")
    worker.add_argument(
        "--claim-ahead",
        type=int,
        default=None,
        metavar="N",
        help="runs held beyond the free slots while attempts take under a second, so a freed"
        " slot starts one at once (default 4 x concurrency; 0 turns it off)",
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes, each with its own lease, sharing --concurrency; process"
        " i serves metrics on the --metrics-listen port + i (default 1)",
    )
    worker.add_argument("--worker-id", default="", help="default HOSTNAME-PID")
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to let running attempts finish before handing them back",
    )
    worker.add_argument("--log-dir", type=Path, help="keep each attempt's full output here")
    add_artifacts_option(worker)
    worker.add_argument("--binary-cache", type=Path, help="where fetched binaries are kept")
    worker.add_argument(
        "--executor",
        choices=("local", "kubernetes"),
        default=env("HOURGLASS_EXECUTOR", "local"),
        help="run attempts as local processes or as Kubernetes Jobs (env HOURGLASS_EXECUTOR)",
    )
    kubernetes_namespace(
        worker,
        "--job-namespace",
        dest="job_namespace",
        default=env("HOURGLASS_JOB_NAMESPACE", "default"),
        metavar="K8S_NAMESPACE",
        help="Kubernetes namespace of Jobs whose job names none (env HOURGLASS_JOB_NAMESPACE)",
    )
    worker.add_argument(
        "--allowed-job-namespaces",
        default=env("HOURGLASS_ALLOWED_JOB_NAMESPACES", ""),
        metavar="K8S_NAMESPACES",
        help="comma-separated Kubernetes namespaces, besides --job-namespace, where "
        "ScheduledJobs' Jobs may run; the worker needs RBAC there "
        "(env HOURGLASS_ALLOWED_JOB_NAMESPACES)",
    )
    worker.add_argument(
        "--job-template-tenants",
        default=env("HOURGLASS_JOB_TEMPLATE_TENANTS", ""),
        metavar="NAMESPACES",
        help="comma-separated hourglass namespaces whose jobs may choose a Kubernetes "
        "namespace and job template (the operator's); such a job may use any Secret and "
        "ServiceAccount there (env HOURGLASS_JOB_TEMPLATE_TENANTS)",
    )
    worker.add_argument(
        "--runner-image",
        default=env("HOURGLASS_RUNNER_IMAGE", "hourglass:0.1.0"),
        help="image that runs uploaded binaries (env HOURGLASS_RUNNER_IMAGE)",
    )
    worker.add_argument("--job-ttl", type=int, default=3600, help="seconds a finished Job stays")
    worker.add_argument(
        "--job-service-account",
        default=env("HOURGLASS_JOB_SERVICE_ACCOUNT", ""),
        help="service account of the Jobs' pods, one with no rights (the chart's "
        "<release>-hourglass-job); its token is never mounted (env HOURGLASS_JOB_SERVICE_ACCOUNT)",
    )
    worker.add_argument(
        "--job-run-as-user",
        type=int,
        default=10001,
        help="user and group id the Jobs' containers run as; never 0 (default 10001)",
    )
    sandbox_options.add(worker, escape_hatch=False)


def _add_operator(commands: Any) -> None:
    from hourglass.cli import serve

    operator = command(
        commands,
        "operator",
        help="reconcile ScheduledJob resources (scheduledjobs.hourglass.io)",
        examples=[
            "hourglass operator --server hourglass-api:50051",
            "hourglass operator --watch-namespace team-a --watch-namespace team-b",
        ],
    )
    operator.add_argument(
        "--server",
        default=env("HOURGLASS_SERVER", DEFAULT_LISTEN),
        help="the hourglass API HOST:PORT (env HOURGLASS_SERVER)",
    )
    kubernetes_namespace(
        operator,
        "--watch-namespace",
        dest="namespaces",
        append=True,
        default=[],
        metavar="K8S_NAMESPACE",
        help="watch this Kubernetes namespace (repeatable; default: all namespaces)",
    )
    operator.add_argument(
        "--lease",
        default="hourglass-operator",
        help="name of the Lease that elects one active operator ('' turns election off)",
    )
    operator.add_argument(
        "--token", default=env("HOURGLASS_TOKEN"), help="API token (env HOURGLASS_TOKEN)"
    )
    operator.add_argument(
        "--token-file",
        default=env("HOURGLASS_TOKEN_FILE"),
        help="read the API token from this file, again whenever it changes: a projected"
        " service account token the API accepts (env HOURGLASS_TOKEN_FILE)",
    )
    operator.add_argument(
        "--tls-ca", default=env("HOURGLASS_TLS_CA"), help="CA of the API's TLS certificate"
    )
    add_metrics_option(operator)
    serve.add_platform_options(operator)


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
        from hourglass.workers.worker import default_worker_id

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
    from hourglass.workers.worker import WorkerConfig, default_worker_id

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
