"""`hourglass console`: the web console, as its own process (the chart's Deployment), and the
piece `hourglass dev` runs beside the API. The console is a client of the API: it needs the
API's address, never the database's."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hourglass.cli.options import DEFAULT_LISTEN, command, env, env_path

COMMANDS = ("console",)
DEFAULT_CONSOLE = "127.0.0.1:8642"


def case_server(text: str) -> tuple[str, str]:
    """CASE=HOST:PORT (argparse type)."""
    name, sep, address = text.partition("=")
    if not sep or not name or ":" not in address:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give CASE=HOST:PORT, e.g. leaderboard=lb:50061"
        )
    return name, address


def add_parser(commands: Any) -> None:
    console = command(
        commands,
        "console",
        help="serve the web console (a client of the API: sign in with an API token)",
        examples=[
            "hourglass console --server 127.0.0.1:50051",
            "hourglass console --server hourglass-api:50051 --listen 0.0.0.0:8642 --secure-cookies",
        ],
    )
    console.add_argument(
        "--server",
        default=env("HOURGLASS_SERVER", DEFAULT_LISTEN),
        help="the hourglass API HOST:PORT (env HOURGLASS_SERVER)",
    )
    console.add_argument(
        "--listen",
        default=env("HOURGLASS_CONSOLE_LISTEN", DEFAULT_CONSOLE),
        help=f"HTTP address HOST:PORT (env HOURGLASS_CONSOLE_LISTEN, default {DEFAULT_CONSOLE})",
    )
    console.add_argument(
        "--tls-ca", type=Path, default=env_path("HOURGLASS_TLS_CA"), help="CA of the API's TLS"
    )
    console.add_argument(
        "--tls-cert",
        type=Path,
        default=env_path("HOURGLASS_TLS_CERT"),
        help="client certificate, for an API that requires one (mutual TLS)",
    )
    console.add_argument("--tls-key", type=Path, default=env_path("HOURGLASS_TLS_KEY"))
    console.add_argument(
        "--secure-cookies",
        action="store_true",
        default=env("HOURGLASS_CONSOLE_SECURE_COOKIES") == "1",
        help="mark the session cookie Secure (__Host- prefix): set it when browsers reach the"
        " console over HTTPS, e.g. through a TLS Ingress (env HOURGLASS_CONSOLE_SECURE_COOKIES=1)",
    )
    console.add_argument(
        "--case-server",
        type=case_server,
        action="append",
        default=[],
        metavar="CASE=HOST:PORT",
        help="show this case's page, talking to its gRPC server (repeatable)",
    )


def config(args: argparse.Namespace) -> Any:
    from hourglass.console.app import Config

    return Config(
        server=args.server,
        listen=args.listen,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        secure_cookies=args.secure_cookies,
        case_servers=dict(args.case_server),
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if (args.tls_cert or args.tls_key) and not (args.tls_cert and args.tls_key and args.tls_ca):
        parser.error("--tls-cert and --tls-key go together, and need --tls-ca")
    for path in (args.tls_ca, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            parser.error(f"{path}: no such file")
    try:
        settings = config(args)
        from hourglass.console.cases import CaseServers

        CaseServers(settings.case_servers)
    except ValueError as exc:
        parser.error(f"--case-server: {exc}")
    asyncio.run(
        _serve(settings, lambda url: print(f"hourglass console: serving {url}", flush=True))
    )
    return 0


async def _serve(settings: Any, on_ready: Callable[[str], None]) -> None:
    from hourglass.console import app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await app.serve(settings, stop, on_ready)
