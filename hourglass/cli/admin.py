"""`hourglass quota`: an administrator's view of each namespace's quotas, run against the
database like `hourglass token` (tenants have no API to change their own limits)."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from hourglass import policies
from hourglass.cli import tables

T = TypeVar("T")

QUOTA_OPTIONS = {
    "max_jobs": "--max-jobs",
    "max_queued_runs": "--max-queued-runs",
    "max_fires_per_second": "--max-fires-per-second",
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


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    add_store_options: Callable[..., None],
) -> None:
    quota = commands.add_parser(
        "quota", help="show and change namespace quotas (needs --database-url)"
    )
    actions = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")
    get = actions.add_parser("get", help="a namespace's quotas: its own, or the defaults")
    set_ = actions.add_parser("set", help="change some of a namespace's quotas")
    reset = actions.add_parser("reset", help="give a namespace the defaults again")
    listing = actions.add_parser("list", help="the defaults and every namespace with its own")
    for parser in (get, set_, reset, listing):
        add_store_options(parser, etcd=False)
    for parser in (get, set_, reset):
        parser.add_argument("--namespace", required=True, help="the tenant")
    set_.add_argument("--max-jobs", type=_count, help="jobs the namespace may hold")
    set_.add_argument(
        "--max-queued-runs", type=_count, help="runs it may have queued (waiting to start)"
    )
    set_.add_argument(
        "--max-fires-per-second",
        type=_rate,
        help="fires per second: a faster schedule is refused; the producer paces the rest",
    )


def _row(namespace: str, quota: policies.Quota, source: str) -> list[object]:
    return [
        namespace,
        quota.max_jobs,
        quota.max_queued_runs,
        f"{quota.max_fires_per_second:g}",
        source,
    ]


def _given(value: T | None, current: T) -> T:
    return current if value is None else value


HEADERS = ["NAMESPACE", "MAX JOBS", "MAX QUEUED RUNS", "MAX FIRES/S", "SOURCE"]


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
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
                if args.quota_command == "list":
                    rows = [_row("(default)", policies.Quota(), "default")]
                    rows += [
                        _row(q.namespace, q.quota, "own") for q in await quotas.list_custom(conn)
                    ]
                    print(tables.render(HEADERS, rows))
                    return 0
                current = await quotas.get(conn, args.namespace)
                if args.quota_command == "reset":
                    await quotas.reset(conn, args.namespace)
                    print(f"namespace {args.namespace!r} has the default quotas")
                    return 0
                quota = current.quota
                if args.quota_command == "set":
                    quota = policies.Quota(
                        max_jobs=_given(args.max_jobs, quota.max_jobs),
                        max_queued_runs=_given(args.max_queued_runs, quota.max_queued_runs),
                        max_fires_per_second=_given(
                            args.max_fires_per_second, quota.max_fires_per_second
                        ),
                    )
                    await quotas.put(conn, args.namespace, quota, now=datetime.now(UTC))
                source = "own" if current.custom or args.quota_command == "set" else "default"
                print(tables.render(HEADERS, [_row(args.namespace, quota, source)]))
        finally:
            await pool.close()
        return 0

    return asyncio.run(act())
