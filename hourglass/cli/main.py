"""Entry point of the `hourglass` command.

Exit codes: 0 success; 1 a failure (server unreachable, job not found); 2 bad input, whether
argparse or the server (INVALID_ARGUMENT, ALREADY_EXISTS) found it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import platformdirs

from hourglass import artifact_quota, durations, logs
from hourglass.cli import admin, client, dev_cases, quota, sandbox_options, serve
from hourglass.cli import locks as lock_commands

DEFAULT_LISTEN = "127.0.0.1:50051"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _duration(text: str) -> str:
    try:
        durations.parse(text)
    except ValueError as exc:  # argparse prints it as a usage error and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_store_options(parser: argparse.ArgumentParser, *, etcd: bool = True) -> None:
    parser.add_argument(
        "--database-url",
        default=_env("HOURGLASS_DATABASE_URL"),
        help="PostgreSQL DSN (env HOURGLASS_DATABASE_URL)",
    )
    if etcd:
        parser.add_argument(
            "--etcd",
            default=_env("HOURGLASS_ETCD_ENDPOINTS"),
            help="etcd endpoints HOST:PORT[,HOST:PORT] (env HOURGLASS_ETCD_ENDPOINTS)",
        )
        parser.add_argument(
            "--etcd-prefix",
            default=_env("HOURGLASS_ETCD_PREFIX", "/hourglass/"),
            help="key prefix of this installation in etcd (env HOURGLASS_ETCD_PREFIX)",
        )


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use ISO 8601 with a zone, e.g. 2026-12-01T09:00:00+01:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone offset, e.g. +00:00")
    return value


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", type=_timestamp, help="once, at an ISO 8601 time with a zone")
    when.add_argument("--after", type=_duration, help="once, after a delay (90s, 1h30m)")
    when.add_argument("--cron", help="cron expression, 5 fields or 6 with seconds first")
    when.add_argument("--every", type=_duration, help="repeatedly, every interval (2s, 5m)")
    parser.add_argument("--tz", default="", help="IANA time zone of --cron (default UTC)")
    parser.add_argument("--jitter", type=_duration, help="with --every: random start delay")
    parser.add_argument("--start", type=_timestamp, help="no fire before this time")
    parser.add_argument("--end", type=_timestamp, help="no fire after this time")
    parser.add_argument("--name", default="", help="default: the command's name")
    parser.add_argument("--max-attempts", type=int, default=1, help="tries per fire")
    parser.add_argument("--timeout", type=_duration, help="kill an attempt after this long")
    parser.add_argument("--retry-backoff", type=_duration, help="first retry delay (1s)")
    parser.add_argument(
        "--overlap",
        choices=("allow", "skip", "buffer_one", "replace"),
        default="allow",
        help="when a fire comes while a run is active (default allow)",
    )
    parser.add_argument(
        "--catch-up",
        choices=("all", "latest", "skip"),
        default="all",
        help="fires missed while hourglass was down (default all)",
    )
    parser.add_argument("--catch-up-window", type=_duration, help="how late a fire may run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="like --env, but never shown by status, logs or revisions",
    )
    parser.add_argument("--image", default="", help="container image (Kubernetes executor)")
    parser.add_argument("--workdir", default="", help="working directory of the process")
    for name in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
        parser.add_argument(
            f"--{name}",
            default="",
            metavar="QUANTITY",
            help=f"Kubernetes container {name.replace('-', ' ')}",
        )
    parser.add_argument(
        "--binary", type=Path, help="upload this file and run it (ARGS after -- are its args)"
    )
    # The command after `--` is split off before parsing (see main); argparse's REMAINDER
    # would also swallow options that follow a positional JOB.
    parser.set_defaults(argv=[])


def _add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        default=_env("HOURGLASS_METRICS_LISTEN"),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env HOURGLASS_METRICS_LISTEN)",
    )


def _add_artifacts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        default=_env("HOURGLASS_ARTIFACTS"),
        help="store of uploaded binaries: a folder or s3://bucket/prefix?endpoint=URL"
        " (env HOURGLASS_ARTIFACTS)",
    )


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=_env("HOURGLASS_SERVER", DEFAULT_LISTEN),
        help=f"API address HOST:PORT (env HOURGLASS_SERVER, default {DEFAULT_LISTEN})",
    )
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument(
        "--token", default=_env("HOURGLASS_TOKEN"), help="API token (env HOURGLASS_TOKEN)"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_env_path("HOURGLASS_TLS_CA"),
        help="connect with TLS, trusting this CA (env HOURGLASS_TLS_CA)",
    )
    parser.add_argument("--tls-cert", type=Path, default=_env_path("HOURGLASS_TLS_CLIENT_CERT"))
    parser.add_argument("--tls-key", type=Path, default=_env_path("HOURGLASS_TLS_CLIENT_KEY"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass", description="Schedule commands; run every fire at least once."
    )
    parser.add_argument("--log-level", default=_env("HOURGLASS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("HOURGLASS_LOG_FORMAT", "text"),
        help="json: one object per line with job_id, run_id, attempt, fencing_token fields",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev", help="run everything on embedded PostgreSQL and etcd with the local executor"
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("HOURGLASS_DATA_DIR", platformdirs.user_data_dir("hourglass"))),
        help="where the embedded databases and run logs live (env HOURGLASS_DATA_DIR)",
    )
    dev.add_argument("--listen", default=DEFAULT_LISTEN, help="API address HOST:PORT")
    dev.add_argument("--concurrency", type=int, default=32, help="attempts run at once")
    _add_metrics_option(dev)
    sandbox_options.add(dev, escape_hatch=True)
    dev_cases.add_options(dev)

    api = commands.add_parser(
        "api", help="serve the gRPC API (and the Locks service, given --etcd)"
    )
    _add_store_options(api)
    _add_metrics_option(api)
    api.add_argument("--listen", default=DEFAULT_LISTEN, help="API address HOST:PORT")
    _add_artifacts_option(api)
    api.add_argument(
        "--insecure",
        action="store_true",
        help="serve without tokens: every caller is in the default namespace",
    )
    api.add_argument("--tls-cert", type=Path, default=_env_path("HOURGLASS_TLS_CERT"))
    api.add_argument("--tls-key", type=Path, default=_env_path("HOURGLASS_TLS_KEY"))
    api.add_argument(
        "--tls-client-ca",
        type=Path,
        default=_env_path("HOURGLASS_TLS_CLIENT_CA"),
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

    admin.add_parsers(commands, add_store_options=_add_store_options)
    serve.add_parser(commands, add_metrics_option=_add_metrics_option)
    # The Leaderboard's admin client (what its ScheduledJobs run): its own parser reads the rest.
    # (No option prefix of its own, so every word, --help and --server included, reaches it.)
    leaderboard = commands.add_parser(
        "leaderboard", add_help=False, prefix_chars="\0", help="a Leaderboard's admin calls"
    )
    leaderboard.add_argument("case_args", nargs="*", metavar="rollup|retention --server HOST:PORT")
    # The UrlShortener's client (its write service, and what its ScheduledJobs run), the same way.
    shortener = commands.add_parser(
        "shortener", add_help=False, prefix_chars="\0", help="a UrlShortener's calls"
    )
    shortener.add_argument("case_args", nargs="*", metavar="--server HOST:PORT shorten|paste|...")
    # The Feed's client (users, follows, posts, timelines; what its ScheduledJobs run).
    feed = commands.add_parser("feed", add_help=False, prefix_chars="\0", help="a Feed's calls")
    feed.add_argument("case_args", nargs="*", metavar="user|follow|post|timeline|... --server H:P")

    quota.add_parser(commands, add_store_options=_add_store_options)
    lock_commands.add_parsers(commands, add_client_options=_add_client_options)

    producer = commands.add_parser("producer", help="queue runs for due fires")
    _add_store_options(producer, etcd=False)
    _add_metrics_option(producer)

    worker = commands.add_parser("worker", help="claim and execute queued runs")
    _add_store_options(worker)
    _add_metrics_option(worker)
    worker.add_argument("--lease-ttl", type=int, default=10, help="seconds (default 10)")
    worker.add_argument("--concurrency", type=int, default=32, help="attempts run at once")
    worker.add_argument("--worker-id", default="", help="default HOSTNAME-PID")
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to let running attempts finish before handing them back",
    )
    worker.add_argument("--log-dir", type=Path, help="keep each attempt's full output here")
    _add_artifacts_option(worker)
    worker.add_argument("--binary-cache", type=Path, help="where fetched binaries are kept")
    worker.add_argument(
        "--executor",
        choices=("local", "kubernetes"),
        default=_env("HOURGLASS_EXECUTOR", "local"),
        help="run attempts as local processes or as Kubernetes Jobs (env HOURGLASS_EXECUTOR)",
    )
    worker.add_argument(
        "--namespace",
        default=_env("HOURGLASS_JOB_NAMESPACE", "default"),
        help="Kubernetes namespace of the Jobs (env HOURGLASS_JOB_NAMESPACE)",
    )
    worker.add_argument(
        "--runner-image",
        default=_env("HOURGLASS_RUNNER_IMAGE", "hourglass:0.1.0"),
        help="image that runs uploaded binaries (env HOURGLASS_RUNNER_IMAGE)",
    )
    worker.add_argument("--job-ttl", type=int, default=3600, help="seconds a finished Job stays")
    worker.add_argument(
        "--job-service-account",
        default=_env("HOURGLASS_JOB_SERVICE_ACCOUNT", ""),
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

    claimer = commands.add_parser("claimer", help="take back runs whose worker died")
    _add_store_options(claimer)
    _add_metrics_option(claimer)
    claimer.add_argument("--lease-ttl", type=int, default=10, help="seconds (default 10)")
    _add_artifacts_option(claimer)
    claimer.add_argument(
        "--retention",
        type=_duration,
        default=_env("HOURGLASS_RETENTION", "30d"),
        help="keep finished runs this long (env HOURGLASS_RETENTION, default 30d)",
    )

    fetch = commands.add_parser(
        "fetch-binary",
        help="fetch an uploaded binary and verify its digest (the runner's init container)",
    )
    fetch.add_argument("digest", metavar="DIGEST", help="sha256:<hex>")
    fetch.add_argument("destination", type=Path, metavar="PATH")
    _add_artifacts_option(fetch)

    operator = commands.add_parser(
        "operator", help="reconcile ScheduledJob resources (scheduledjobs.hourglass.io)"
    )
    operator.add_argument(
        "--server",
        default=_env("HOURGLASS_SERVER", DEFAULT_LISTEN),
        help="the hourglass API HOST:PORT (env HOURGLASS_SERVER)",
    )
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this Kubernetes namespace (repeatable; default: all namespaces)",
    )
    operator.add_argument(
        "--lease",
        default="hourglass-operator",
        help="name of the Lease that elects one active operator ('' turns election off)",
    )
    operator.add_argument(
        "--token", default=_env("HOURGLASS_TOKEN"), help="API token (env HOURGLASS_TOKEN)"
    )
    operator.add_argument(
        "--tls-ca", default=_env("HOURGLASS_TLS_CA"), help="CA of the API's TLS certificate"
    )
    serve.add_platform_options(operator)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _add_store_options(migrate, etcd=False)

    schedule = commands.add_parser(
        "schedule",
        help="schedule a command (or an uploaded --binary); prints the job id",
        usage="hourglass schedule (--at TIME | --after D | --cron EXPR [--tz ZONE] | --every D)"
        " [options] -- COMMAND [ARGS...]",
    )
    _add_client_options(schedule)
    _add_spec_options(schedule)
    schedule.add_argument("--request-id", default="", help="idempotency key (default: random)")

    update = commands.add_parser(
        "update",
        help="replace a job's spec (schedule, command, policies); history is kept",
        usage="hourglass update JOB (--at | --after | --cron | --every) [options] -- COMMAND ...",
    )
    _add_client_options(update)
    update.add_argument("job_id", metavar="JOB")
    _add_spec_options(update)

    for name, text in (
        ("pause", "stop a job's fires until it is resumed"),
        ("resume", "fire a paused job again, from its next fire time after now"),
        ("trigger", "run a job now, outside its schedule; prints the run id"),
        ("delete", "delete a job and its history (a running run is terminated)"),
        ("watch", "stream a job's changes and its runs' state changes as they happen"),
    ):
        command = commands.add_parser(name, help=text)
        _add_client_options(command)
        command.add_argument("job_id", metavar="JOB")

    backfill = commands.add_parser("backfill", help="run the fires of a past time range")
    _add_client_options(backfill)
    backfill.add_argument("job_id", metavar="JOB")
    backfill.add_argument("--from", dest="start", required=True, type=_timestamp, metavar="TIME")
    backfill.add_argument("--to", dest="end", required=True, type=_timestamp, metavar="TIME")

    cancel_run = commands.add_parser("cancel-run", help="cancel one run (terminates it if running)")
    _add_client_options(cancel_run)
    cancel_run.add_argument("run_id", metavar="RUN")

    logs = commands.add_parser("logs", help="print a run's output")
    _add_client_options(logs)
    logs.add_argument("run_id", metavar="RUN")
    logs.add_argument("--follow", "-f", action="store_true", help="keep following a live run")

    upload = commands.add_parser("upload", help="upload a binary; prints its digest")
    _add_client_options(upload)
    upload.add_argument("path", type=Path, metavar="FILE")

    status = commands.add_parser("status", help="a job and its recent runs")
    _add_client_options(status)
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--runs", type=int, default=10, help="recent runs to show")

    jobs = commands.add_parser("jobs", help="list jobs")
    _add_client_options(jobs)
    jobs.add_argument("--limit", type=int, default=50)

    runs = commands.add_parser("runs", help="list a job's runs and attempts")
    _add_client_options(runs)
    runs.add_argument("job_id", metavar="JOB")
    runs.add_argument("--limit", type=int, default=50)

    cancel = commands.add_parser("cancel", help="stop a job's future fires")
    _add_client_options(cancel)
    cancel.add_argument("job_id", metavar="JOB")
    return parser


def _require(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if not getattr(args, name.replace("-", "_")):
            env = {"database-url": "HOURGLASS_DATABASE_URL", "etcd": "HOURGLASS_ETCD_ENDPOINTS"}
            parser.error(f"--{name} is required (or set {env[name]})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in words:
        split = words.index("--")
        words, command = words[:split], words[split + 1 :]
    args = parser.parse_args(words)
    if command:
        if not hasattr(args, "argv"):
            parser.error("only schedule, update and lock take a command after --")
        args.argv = command
    logs.configure(args.log_level, args.log_format)
    if args.command in lock_commands.COMMANDS:
        return lock_commands.run(parser, args)
    if args.command in client.COMMANDS:
        return client.run(parser, args)
    if getattr(args, "metrics_listen", ""):
        from hourglass import metrics

        metrics.serve(args.metrics_listen)
    if args.command == "dev":
        from hourglass.cli import dev

        return dev.run(args)
    if args.command == "serve":
        return serve.run(parser, args)
    if args.command == "leaderboard":
        from hourglass.cases.leaderboard import cli as leaderboard_cli

        return leaderboard_cli.main(args.case_args)
    if args.command == "shortener":
        from hourglass.cases.shortener import cli as shortener_cli

        return shortener_cli.main(args.case_args)
    if args.command == "feed":
        from hourglass.cases.feed import cli as feed_cli

        return feed_cli.main(args.case_args)
    if args.command == "fetch-binary":
        return _fetch_binary(parser, args)
    if args.command == "operator":
        from hourglass.operator import main as operator_main

        operator_main.run(
            args.server,
            args.namespaces or None,
            args.lease or None,
            token=args.token or None,
            tls_ca=args.tls_ca or None,
            platform=serve.platform(parser, args),
        )
        return 0
    if args.command in admin.COMMANDS:
        return admin.run(parser, args)
    if args.command == "quota":
        return quota.run(parser, args)
    if args.command == "migrate":
        _require(parser, args, "database-url")
        from hourglass.store import migrate

        applied = migrate.apply(args.database_url)
        print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    return _run_component(parser, args)


def _fetch_binary(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Writes the binary to PATH, executable, only if its bytes match the digest."""
    from hourglass import artifacts

    if not args.artifacts:
        parser.error("--artifacts is required (or set HOURGLASS_ARTIFACTS)")
    try:
        digest = artifacts.parse_digest(args.digest)
        store = artifacts.open_store(args.artifacts)
    except ValueError as exc:
        parser.error(str(exc))
    try:
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
        namespace=args.namespace,
        runner_image=args.runner_image,
        artifacts_url=args.artifacts or "",
        ttl_seconds_after_finished=args.job_ttl,
        service_account=args.job_service_account,
        run_as_user=args.job_run_as_user,
    )


def _run_component(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hourglass.cli import services
    from hourglass.workers.claimer import ClaimerConfig
    from hourglass.workers.maintenance import MaintenanceConfig
    from hourglass.workers.worker import WorkerConfig, default_worker_id

    _require(parser, args, "database-url")
    if args.command in ("worker", "claimer"):
        _require(parser, args, "etcd")
    try:
        components = services.Components(
            dsn=args.database_url,
            etcd_endpoints=getattr(args, "etcd", ""),
            etcd_prefix=getattr(args, "etcd_prefix", "/hourglass/"),
            api_listen=args.listen if args.command == "api" else None,
            api_insecure=getattr(args, "insecure", False),
            api_tls=_server_tls(parser, args) if args.command == "api" else None,
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
                lease_ttl=args.lease_ttl,
                worker_id=args.worker_id or default_worker_id(),
                shutdown_grace=args.shutdown_grace,
            )
            if args.command == "worker"
            else None,
            claimer=ClaimerConfig(lease_ttl=args.lease_ttl) if args.command == "claimer" else None,
            maintenance=MaintenanceConfig(retention=durations.parse(args.retention))
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

    def ready(port: int | None) -> None:
        if port is not None:
            print(f"hourglass api serving on {args.listen.rsplit(':', 1)[0]}:{port}", flush=True)
        else:
            print(f"hourglass {args.command} running", flush=True)

    from hourglass.workers.executors.sandbox import SandboxError

    try:
        asyncio.run(services.run(components, on_ready=ready))
    except SandboxError as exc:
        print(f"hourglass {args.command}: cannot sandbox attempts: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
