"""`hourglass quota`: an administrator's view of each namespace's quotas, run against the
database like `hourglass token` (tenants have no API to change their own limits).

Five quotas: jobs, queued runs and fires per second (`namespace_quotas`, enforced by the
store and the producer), running runs (`namespace_quotas`, honoured by the workers' fair
claim) and bytes of uploaded binaries (`artifact_quotas`, enforced by the
API at upload time, whose default is the API's --artifact-quota)."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from hourglass import artifact_quota, quota_rules, sizes
from hourglass.cli import output, tables
from hourglass.cli.options import command

T = TypeVar("T")

QUOTA_OPTIONS = {
    "max_jobs": "--max-jobs",
    "max_queued_runs": "--max-queued-runs",
    "max_fires_per_second": "--max-fires-per-second",
    "max_running_runs": "--max-running-runs",
    "max_artifact_bytes": "--max-artifact-bytes",
}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return value


def _artifact_bytes(text: str) -> int:
    """A size in bytes (10GiB, 500MB), or "default" (stored as -1: back to the API's)."""
    if text.strip() == "default":
        return DEFAULT
    try:
        return sizes.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'default'") from None


# --max-artifact-bytes default: the namespace goes back to the API's --artifact-quota.
DEFAULT = -1


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    add_store_options: Callable[..., None],
) -> None:
    quota = command(
        commands,
        "quota",
        help="show and change namespace quotas (needs --database-url)",
        description=__doc__,
        examples=["hourglass quota list", "hourglass quota set --namespace team-a --max-jobs 500"],
    )
    actions = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")
    get = command(
        actions,
        "get",
        help="a namespace's quotas: its own, or the defaults",
        examples=["hourglass quota get --namespace team-a -o yaml"],
    )
    set_ = command(
        actions,
        "set",
        help="change some of a namespace's quotas",
        examples=[
            "hourglass quota set --namespace team-a --max-jobs 500 --max-fires-per-second 20",
            "hourglass quota set --namespace team-a --max-artifact-bytes default",
        ],
    )
    reset = command(
        actions,
        "reset",
        help="give a namespace the defaults again",
        examples=["hourglass quota reset --namespace team-a"],
    )
    listing = command(
        actions,
        "list",
        help="the defaults and every namespace with its own",
        examples=["hourglass quota list", "hourglass quota list -o json"],
    )
    for parser in (get, set_, reset, listing):
        add_store_options(parser, etcd=False)
    for parser in (get, set_, listing):
        output.add_option(parser)
    for parser in (get, set_, reset):
        parser.add_argument("--namespace", required=True, help="the tenant namespace")
    set_.add_argument("--max-jobs", type=_count, help="jobs the namespace may hold")
    set_.add_argument(
        "--max-queued-runs", type=_count, help="runs it may have queued (waiting to start)"
    )
    set_.add_argument(
        "--max-fires-per-second",
        type=_rate,
        help="fires per second: a faster schedule is refused; the producer paces the rest",
    )
    set_.add_argument(
        "--max-running-runs",
        type=_count,
        help="runs it may have running at once (the claim leaves the other slots to other"
        f" namespaces; default {quota_rules.DEFAULT_MAX_RUNNING_RUNS})",
    )
    set_.add_argument(
        "--max-artifact-bytes",
        type=_artifact_bytes,
        metavar="SIZE",
        help="bytes of uploaded binaries it may own (10GiB, 500MB), or 'default' (the API's"
        f" --artifact-quota, {sizes.format(artifact_quota.DEFAULT_MAX_ARTIFACT_BYTES)} unless"
        " set)",
    )


def _row(
    namespace: str, quota: quota_rules.Quota, artifact_bytes: int | None, source: str
) -> list[object]:
    return [
        namespace,
        quota.max_jobs,
        quota.max_queued_runs,
        f"{quota.max_fires_per_second:g}",
        quota.max_running_runs,
        "default" if artifact_bytes is None else sizes.format(artifact_bytes),
        source,
    ]


def _given(value: T | None, current: T) -> T:
    return current if value is None else value


HEADERS = [
    "NAMESPACE",
    "MAX JOBS",
    "MAX QUEUED RUNS",
    "MAX FIRES/S",
    "MAX RUNNING",
    "MAX ARTIFACTS",
    "SOURCE",
]


def _render(fmt: str, rows: list[list[object]]) -> str:
    """The table, or for json and yaml one object per namespace with its limits as numbers
    (max_artifact_bytes: null when the namespace has the API's default)."""
    keys = ["namespace", *QUOTA_OPTIONS, "source"]
    items = [dict(zip(keys, row, strict=True)) for row in rows]
    for item, row in zip(items, rows, strict=True):
        item["max_fires_per_second"] = float(str(row[3]))
        item["max_artifact_bytes"] = None if row[5] == "default" else sizes.parse(str(row[5]))
    return output.render(fmt, items, table=lambda: tables.render(HEADERS, rows))


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hourglass.store import artifacts as artifact_rows
    from hourglass.store import db, quotas

    if not args.database_url:
        parser.error("--database-url is required (or set HOURGLASS_DATABASE_URL)")
    if getattr(args, "namespace", None) is not None and not args.namespace.strip():
        parser.error("--namespace must not be empty")
    changes = [field for field in QUOTA_OPTIONS if getattr(args, field, None) is not None]
    if args.quota_command == "set" and not changes:
        parser.error("quota set: give at least one of " + ", ".join(QUOTA_OPTIONS.values()))

    async def act() -> int:
        pool = await db.open_pool(args.database_url)
        try:
            async with db.transaction(pool) as conn:
                artifact_quotas = dict(await artifact_rows.list_quotas(conn))
                if args.quota_command == "list":
                    rows = [_row("(default)", quota_rules.Quota(), None, "default")]
                    custom = {q.namespace: q.quota for q in await quotas.list_custom(conn)}
                    for namespace in sorted({*custom, *artifact_quotas}):
                        limits = custom.get(namespace, quota_rules.Quota())
                        rows.append(_row(namespace, limits, artifact_quotas.get(namespace), "own"))
                    print(_render(args.output, rows))
                    return 0
                current = await quotas.get(conn, args.namespace)
                if args.quota_command == "reset":
                    await quotas.reset(conn, args.namespace)
                    await artifact_rows.set_quota(conn, args.namespace, None)
                    print(f"namespace {args.namespace!r} has the default quotas")
                    return 0
                artifact_bytes = artifact_quotas.get(args.namespace)
                quota = current.quota
                if args.quota_command == "set":
                    quota = quota_rules.Quota(
                        max_jobs=_given(args.max_jobs, quota.max_jobs),
                        max_queued_runs=_given(args.max_queued_runs, quota.max_queued_runs),
                        max_fires_per_second=_given(
                            args.max_fires_per_second, quota.max_fires_per_second
                        ),
                        max_running_runs=_given(args.max_running_runs, quota.max_running_runs),
                    )
                    if changes != ["max_artifact_bytes"]:
                        await quotas.put(conn, args.namespace, quota, now=datetime.now(UTC))
                    if args.max_artifact_bytes is not None:
                        artifact_bytes = (
                            None if args.max_artifact_bytes == DEFAULT else args.max_artifact_bytes
                        )
                        await artifact_rows.set_quota(conn, args.namespace, artifact_bytes)
                own = current.custom or artifact_bytes is not None
                source = "own" if own or args.quota_command == "set" else "default"
                print(_render(args.output, [_row(args.namespace, quota, artifact_bytes, source)]))
        finally:
            await pool.close()
        return 0

    return asyncio.run(act())
