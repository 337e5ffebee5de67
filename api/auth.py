"""Who is calling: bearer tokens resolved to namespaces.

A token is `authorization: Bearer <token>` metadata; the store keeps only its sha256. Lookups
are cached for `cache_seconds` so that a busy client costs no query per call; a revoked token
stops working within that time. A token's expiry needs no query: the cache keeps it and every
call compares it with the clock.

Open streams (WatchJob, GetRunLogs with follow) call `recheck` at least every
`recheck_interval`. A recheck accepts a cached answer only half as old as a call does, and
streams recheck every half lifetime, so a stream of a revoked token ends at most
`cache_seconds` after the revocation, without a query per stream: the streams of one token
share its cache entry.

Kubernetes service accounts may call too, with their own tokens (api/kube_auth.py).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, Protocol

import grpc

from hourglass.clock import Clock, SystemClock
from hourglass.store import db, tokens

DEFAULT_NAMESPACE = "default"
DEFAULT_CACHE_SECONDS = 5.0
# Forget every cached token past this many, so random tokens cannot grow memory.
_MAX_CACHED = 10_000


class Authenticator(Protocol):
    # How often an open stream calls `recheck`, in seconds.
    recheck_interval: float

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The caller's namespace; aborts the call with UNAUTHENTICATED when it has none."""
        ...

    async def recheck(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Aborts an open stream with UNAUTHENTICATED once its token stopped working."""
        ...


class Insecure:
    """No authentication (`--insecure`): every caller is in the default namespace."""

    recheck_interval = math.inf

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return DEFAULT_NAMESPACE

    async def recheck(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        return None


def refusal(found: tokens.Found | None, *, now: datetime) -> str | None:
    """Why a token does not work at `now` (the UNAUTHENTICATED message), or None if it does.
    An expired token is told so, with the way to get a new one: its holder knew it was real."""
    if found is None or found.revoked:
        return "unknown or revoked token"
    if found.expires_at is not None and found.expires_at <= now:
        return (
            f"token expired at {found.expires_at.isoformat(timespec='seconds')}; ask an admin"
            f" for a new one: `hourglass token create --namespace {found.namespace} --ttl 30d`"
        )
    return None


class Tokens:
    def __init__(
        self,
        pool: db.Pool,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        if cache_seconds <= 0:
            raise ValueError(f"cache_seconds must be positive, got {cache_seconds}")
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.recheck_interval = cache_seconds / 2
        self.clock = clock or SystemClock()
        self._cache: dict[bytes, tuple[float, tokens.Found | None]] = {}

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return await self._resolve(context, max_age=self.cache_seconds)

    async def recheck(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._resolve(context, max_age=self.recheck_interval)

    async def _resolve(self, context: grpc.aio.ServicerContext[Any, Any], *, max_age: float) -> str:
        token = bearer(context)
        if not token:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no token: send 'authorization: Bearer <token>' (hourglass --token, or "
                "HOURGLASS_TOKEN); make one with `hourglass token create --namespace NAME`",
            )
        key = tokens.digest(token)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < max_age:
            found = cached[1]
        else:
            async with self.pool.connection() as conn:
                found = await tokens.find(conn, token)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (now, found)
        reason = refusal(found, now=self.clock.now())
        if reason is not None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        assert found is not None
        return found.namespace


def bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The call's `authorization: Bearer <token>`, or "" (api/kube_auth.py reads it too)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
