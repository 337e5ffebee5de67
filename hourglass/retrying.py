"""Riding out outages: components retry transient failures with bounded backoff, never exit.

A transient failure is one where trying again later can succeed: PostgreSQL or etcd
restarting, a network blip, a pool waiting for a connection. Anything else is a bug and is
raised.
"""

from __future__ import annotations

import logging

from psycopg_pool import PoolTimeout
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from hourglass import locks
from hourglass.store import db

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *db.TRANSIENT_ERRORS,
    *locks.TRANSIENT_ERRORS,
    PoolTimeout,
)


def _warn(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0
    log.warning("transient failure (%s); retrying in %.1fs", error, sleep)


def forever(max_wait: float = 2.0) -> AsyncRetrying:
    """Retries transient failures with exponential backoff capped at `max_wait`, forever."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        wait=wait_exponential(multiplier=0.1, max=max_wait) + wait_random(0, 0.5),
        before_sleep=_warn,
        reraise=True,
    )
