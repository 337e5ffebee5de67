"""The flags of the local executor's attempt sandbox and output caps, shared by `hourglass
worker` and `hourglass dev`. Kept apart from the components so that building the parser stays
cheap for every client command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_UIDS = "200000-265535"
DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024


def _uid_range(text: str) -> range:
    from hourglass.workers.executors.sandbox import parse_uid_range

    try:
        return parse_uid_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def add(parser: argparse.ArgumentParser, *, escape_hatch: bool) -> None:
    """Adds the sandbox flags; `escape_hatch` adds --unsandboxed (`hourglass dev` only)."""
    group = parser.add_argument_group(
        "attempt sandbox (local executor)",
        "Each attempt runs as its own uid, in its own PID, mount, IPC, UTS and network"
        " namespaces and cgroup. Needs root, util-linux and cgroups.",
    )
    group.add_argument(
        "--sandbox-uids",
        type=_uid_range,
        default=DEFAULT_UIDS,
        metavar="FIRST-LAST",
        help=f"uids (and gids) attempts run as, one per attempt at a time (default {DEFAULT_UIDS})",
    )
    group.add_argument(
        "--sandbox-network",
        choices=("private", "host"),
        default="private",
        help="private (default): loopback only. host: the host's network, which WEAKENS"
        " isolation: jobs can reach every service this host reaches, such as PostgreSQL and"
        " etcd",
    )
    group.add_argument(
        "--sandbox-run-dir",
        type=Path,
        default=Path("/run/hourglass"),
        help="root-only folder for the uid and worker locks (default /run/hourglass)",
    )
    group.add_argument(
        "--sandbox-pids-max",
        type=_positive,
        default=4096,
        help="most processes and threads of one attempt (default 4096)",
    )
    group.add_argument(
        "--log-max-bytes",
        type=_positive,
        default=DEFAULT_LOG_MAX_BYTES,
        help="most bytes of one attempt's output kept in its --log-dir file (default 64 MiB)",
    )
    if escape_hatch:
        group.add_argument(
            "--unsandboxed",
            action="store_true",
            help="run jobs as your own user with no isolation: only on your own machine, for"
            " jobs you trust",
        )


def config(args: argparse.Namespace) -> Any:
    """The SandboxConfig the flags ask for, or None with --unsandboxed."""
    if getattr(args, "unsandboxed", False):
        return None
    from hourglass.workers.executors.sandbox import SandboxConfig

    return SandboxConfig(
        uids=args.sandbox_uids,
        network=args.sandbox_network,
        run_dir=args.sandbox_run_dir,
        pids_max=args.sandbox_pids_max,
    )
