"""`hourglass` with a what-if applied in memory, for bench/whatif.py:

    python -m bench.patched [--pidfd] [--no-pool-check] [--pool-size N] [--unsandboxed] \
        -- worker ...

Nothing in hourglass changes on disk; each patch is the smallest in-process stand-in for a
change the benchmark suggests, so its effect can be measured before anyone makes it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any


def pidfd_child_watcher() -> None:
    """Python 3.12's default on Linux: one pidfd in the event loop per child, instead of 3.11's
    ThreadedChildWatcher (a new thread blocked in waitpid for every child)."""
    import asyncio.unix_events as unix_events

    if sys.version_info >= (3, 12):
        return

    def _init_watcher(self: Any) -> None:
        with unix_events.events._lock:  # type: ignore[attr-defined]
            if self._watcher is None:
                self._watcher = unix_events.PidfdChildWatcher()
                if threading.current_thread() is threading.main_thread():
                    self._watcher.attach_loop(self._local._loop)

    unix_events._UnixDefaultEventLoopPolicy._init_watcher = _init_watcher  # type: ignore[attr-defined]


def no_pool_check() -> None:
    """Pools lend connections without a round trip to test them first."""
    from psycopg_pool import AsyncConnectionPool

    async def check_connection(conn: Any) -> None:
        return None

    AsyncConnectionPool.check_connection = staticmethod(check_connection)  # type: ignore[method-assign]


def pool_size(size: int) -> None:
    """Pools of `size` connections instead of 8 (the worker runs 32 attempts at once)."""
    from hourglass.store import db

    original = db.open_pool

    async def open_pool(
        dsn: str, *, min_size: int = 1, max_size: int = 8, check_idle_after: float = 0.0
    ) -> db.Pool:
        return await original(
            dsn, min_size=min_size, max_size=size, check_idle_after=check_idle_after
        )

    db.open_pool = open_pool  # type: ignore[assignment]


def unsandboxed() -> None:
    """The worker's attempts run as the worker's own children, as `hourglass dev
    --unsandboxed` runs them: what pgqueuer and the loops do, for a like-for-like figure. The
    worker itself offers no such flag (jobs are untrusted code)."""
    from hourglass.cli import sandbox_options

    sandbox_options.config = lambda args: None


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m bench.patched")
    parser.add_argument("--pidfd", action="store_true")
    parser.add_argument("--no-pool-check", action="store_true")
    parser.add_argument("--pool-size", type=int, default=0)
    parser.add_argument("--unsandboxed", action="store_true")
    args = parser.parse_args(argv[:split])
    if args.pidfd:
        pidfd_child_watcher()
    if args.no_pool_check:
        no_pool_check()
    if args.pool_size:
        pool_size(args.pool_size)
    if args.unsandboxed:
        unsandboxed()
    from hourglass.cli import main as cli

    return cli.main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())
