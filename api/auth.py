"""Who is calling: bearer tokens resolved to namespaces.

A token is `authorization: Bearer <token>` metadata; the store keeps only its sha256. Lookups
are cached for a few seconds so that a busy client costs no query per call; a revoked token
stops working within that time.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import grpc

from hourglass.store import db, tokens

DEFAULT_NAMESPACE = "default"


class Authenticator(Protocol):
    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The caller's namespace; aborts the call with UNAUTHENTICATED when it has none."""
        ...


class Insecure:
    """No authentication (`--insecure`): every caller is in the default namespace."""

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return DEFAULT_NAMESPACE


class Tokens:
    def __init__(self, pool: db.Pool, *, cache_seconds: float = 5.0) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, str | None]] = {}

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        token = _bearer(context)
        if not token:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no token: send 'authorization: Bearer <token>' (hourglass --token, or "
                "HOURGLASS_TOKEN); make one with `hourglass token create --namespace NAME`",
            )
        key = tokens.digest(token)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_seconds:
            namespace = cached[1]
        else:
            async with self.pool.connection() as conn:
                namespace = await tokens.namespace_of(conn, token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, namespace)
        if namespace is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
        assert namespace is not None
        return namespace


def _bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
