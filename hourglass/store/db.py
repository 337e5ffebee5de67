"""Connections: a pool per process, transactions, and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[dict[str, Any]]
Pool = AsyncConnectionPool[Connection]
# Errors worth retrying: the server went away or refused for now, not a bug in a statement.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)

# Channels. Producers notify RUNS_CHANNEL when they queue runs; the API notifies JOBS_CHANNEL
# when a job is stored or changed, so a producer sleeping until the next due time re-plans.
RUNS_CHANNEL = "hourglass_runs"
JOBS_CHANNEL = "hourglass_jobs"


# psycopg_pool doubles the delay between its attempts to reconnect with no upper bound (1, 2,
# 4, ... s), and callers wait on the pool meanwhile: after a PostgreSQL restart a component
# sat idle for seconds, after a long outage for minutes. Retrying at a steady pace keeps the
# backoff bounded; the cost is one connection attempt per pool every half second while the
# server is down. (The fault suite's PostgreSQL restart scenarios catch a regression.)
AttemptWithBackoff.INITIAL_DELAY = 0.5
AttemptWithBackoff.DELAY_BACKOFF = 1.0


async def check_connection(conn: Connection) -> None:
    """The pool's check before lending a connection: raises if it is broken, so that a
    restarted server costs one failed check rather than a failed statement.

    A round trip per borrow was a tenth of a ScheduleJob (docs/benchmarks.md), so the round
    trip is made only when the connection's socket has something to read while it sits idle
    in the pool: the end of the connection (the server stopped, or terminated the backend),
    or a message to look at. A connection whose socket is quiet is lent at once.
    """
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        raise psycopg.OperationalError("the connection is closed or inside a transaction")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


async def open_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 8, check_idle_after: float = 0.0
) -> Pool:
    """A pool that checks connections before lending them (check_connection), so a restarted
    server costs one failed check rather than a failed statement. With `check_idle_after` > 0 only a
    connection idle that many seconds is checked (one round trip less per loan on a busy
    pool, where a restart is noticed within that time anyway); math.inf never checks, for
    a caller that retries a failed statement itself (a read)."""
    pool: Pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        check=_checker(check_idle_after),
        reset=_returned if check_idle_after > 0 else None,
        open=False,
        reconnect_timeout=3600,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def ping(pool: Pool, *, timeout: float = 5.0) -> None:
    """Raises unless PostgreSQL answers a query through the pool now (readiness probes)."""
    async with pool.connection(timeout=timeout) as conn:
        await conn.execute("SELECT 1")


# When each connection of a pool with check_idle_after last came back to it.
_RETURNED: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


async def _returned(conn: Connection) -> None:
    _RETURNED[conn] = time.monotonic()


def _checker(idle_after: float) -> Callable[[Connection], Awaitable[None]] | None:
    if idle_after <= 0:
        return check_connection
    if math.isinf(idle_after):
        return None

    async def check(conn: Connection) -> None:
        if time.monotonic() - _RETURNED.get(conn, 0.0) >= idle_after:
            await AsyncConnectionPool.check_connection(conn)

    return check


@contextlib.asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """A connection inside one transaction, committed when the block exits cleanly."""
    async with pool.connection() as conn, conn.transaction():
        yield conn


async def notify(conn: Connection, channel: str) -> None:
    await conn.execute(f"NOTIFY {channel}")


class Wakeups:
    """Sets an event whenever a NOTIFY arrives on a channel, reconnecting when the server goes.

    A component waits on `wait(timeout)`, which returns on a notification or when the timeout
    (its polling fallback) runs out, whichever is first.
    """

    def __init__(
        self, dsn: str, channel: str, on_payload: Callable[[str], None] | None = None
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_payload = on_payload
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"listen {self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, timeout: float) -> bool:
        """True when woken by a notification, False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0))
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    def poke(self) -> None:
        """Wakes the waiter from inside the process (e.g. when a slot frees up)."""
        self._event.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    # Anything notified while we were not listening is unknown: look once.
                    self._event.set()
                    async for notification in conn.notifies():
                        if self._on_payload is not None:
                            self._on_payload(notification.payload)
                        self._event.set()
            except psycopg.OperationalError as exc:
                log.warning("listen on %s lost (%s); reconnecting", self._channel, exc)
                self._event.set()
                await asyncio.sleep(1)
