"""The options of the long-running processes (dev, api, producer, worker, claimer, operator,
migrate, fetch-binary): what each command accepts, with its help. `components` runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import platformdirs

from hourglass import artifact_quota
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
)


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
        " slot starts one at once (default 8 x concurrency, and never more than about a"
        " second of the slots' work; 0 turns it off)",
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
