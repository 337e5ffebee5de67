"""Options and help shared by many commands, so that one flag name means one thing everywhere.

`--namespace` is always the tenant namespace (the one a token belongs to). A Kubernetes
namespace has a flag named for its role: `--job-namespace` (worker), `--watch-namespace`
(operator), `--resource-namespace` (serve); their old spelling `--namespace` still works
there, with a warning.

Every command is made by `command()`, which asks for a description and examples: a unit test
walks the parser and holds every command to it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hourglass import durations
from hourglass.cli import output

DEFAULT_LISTEN = "127.0.0.1:50051"


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def command(
    commands: Any,
    name: str,
    *,
    help: str,
    description: str = "",
    examples: Sequence[str],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with what it does and ends with examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description or (help[:1].upper() + help[1:] + "."),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    return parser


class _DeprecatedSpelling(argparse.Action):
    """An old flag name that still works, saying once which name to use instead."""

    def __init__(self, *args: Any, new: str, append: bool = False, **kwargs: Any) -> None:
        self.new, self.append = new, append
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"hourglass: {option_string} is deprecated here; use {self.new} (--namespace now"
            " always means the tenant namespace)",
            file=sys.stderr,
        )
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def kubernetes_namespace(
    parser: argparse.ArgumentParser, flag: str, *, dest: str, append: bool = False, **kwargs: Any
) -> None:
    """A Kubernetes namespace option `flag`, with `--namespace` as its deprecated spelling."""
    parser.add_argument(flag, dest=dest, action="append" if append else "store", **kwargs)
    parser.add_argument(
        "--namespace",
        dest=dest,
        action=_DeprecatedSpelling,
        new=flag,
        append=append,
        help=argparse.SUPPRESS,
    )


def duration(text: str) -> str:
    try:
        durations.parse(text)
    except ValueError as exc:  # argparse prints it as a usage error and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use ISO 8601 with a zone, e.g. 2026-12-01T09:00:00+01:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone offset, e.g. +00:00")
    return value


def add_store_options(parser: argparse.ArgumentParser, *, etcd: bool = True) -> None:
    parser.add_argument(
        "--database-url",
        default=env("HOURGLASS_DATABASE_URL"),
        help="PostgreSQL DSN (env HOURGLASS_DATABASE_URL)",
    )
    if etcd:
        parser.add_argument(
            "--etcd",
            default=env("HOURGLASS_ETCD_ENDPOINTS"),
            help="etcd endpoints HOST:PORT[,HOST:PORT] (env HOURGLASS_ETCD_ENDPOINTS)",
        )
        parser.add_argument(
            "--etcd-prefix",
            default=env("HOURGLASS_ETCD_PREFIX", "/hourglass/"),
            help="key prefix of this installation in etcd (env HOURGLASS_ETCD_PREFIX)",
        )


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        default=env("HOURGLASS_METRICS_LISTEN"),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, and liveness and readiness"
        " at /healthz and /readyz (env HOURGLASS_METRICS_LISTEN)",
    )


def add_artifacts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        default=env("HOURGLASS_ARTIFACTS"),
        help="store of uploaded binaries: a folder or s3://bucket/prefix?endpoint=URL"
        " (env HOURGLASS_ARTIFACTS)",
    )


def add_client_options(parser: argparse.ArgumentParser, *, shows: bool = True) -> None:
    """How to reach the API; `shows` adds -o for a command that prints what it got back."""
    parser.add_argument(
        "--server",
        default=env("HOURGLASS_SERVER", DEFAULT_LISTEN),
        help=f"API address HOST:PORT (env HOURGLASS_SERVER, default {DEFAULT_LISTEN})",
    )
    if shows:
        output.add_option(parser)
    parser.add_argument(
        "--token", default=env("HOURGLASS_TOKEN"), help="API token (env HOURGLASS_TOKEN)"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=env_path("HOURGLASS_TLS_CA"),
        help="connect with TLS, trusting this CA (env HOURGLASS_TLS_CA)",
    )
    parser.add_argument("--tls-cert", type=Path, default=env_path("HOURGLASS_TLS_CLIENT_CERT"))
    parser.add_argument("--tls-key", type=Path, default=env_path("HOURGLASS_TLS_CLIENT_KEY"))


_VARIABLES = {"database-url": "HOURGLASS_DATABASE_URL", "etcd": "HOURGLASS_ETCD_ENDPOINTS"}


def require(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if not getattr(args, name.replace("-", "_")):
            parser.error(f"--{name} is required (or set {_VARIABLES[name]})")
