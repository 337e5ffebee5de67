"""What every case page shares: the context it is called with, the one way it calls its
case's gRPC server, and how a refusal becomes a message beside a form's input.

A case page builds a request from the query or the form and lets the case's server judge it,
as the job pages do with the API: the error next to an input is the server's own
"<field>: <reason>". A server that does not answer is not an error of the form: `rpc` raises
CaseDown, and the page router shows that the case is unreachable (503) instead of a 500.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from hourglass.console.client import ApiError, api_error
from hourglass.console.sessions import Session

Values = dict[str, Any]
TIMEOUT = 15.0
# What a server that is down, restarting or unreachable answers.
_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class CaseDown(Exception):
    """The case's server did not answer: not deployed at that address, or down."""


@dataclass(frozen=True)
class Context:
    """What a page is called with: the request, a channel to its case's server, and the
    signed-in session (its API token, and what this session keeps for the case)."""

    request: web.Request
    channel: grpc.aio.Channel
    session: Session

    @property
    def token(self) -> str:
        return self.session.token

    def kept(self, case: str) -> dict[str, Any]:
        """What this session keeps for `case` (links made here, workspace tokens)."""
        kept: dict[str, Any] = self.session.cases.setdefault(case, {})
        return kept


Show = Callable[[Context], Awaitable[Values]]
# A form's POST: where to go next on success (a path), or the error values to show.
Act = Callable[[Context], Awaitable[str | Values]]


@dataclass(frozen=True)
class CasePage:
    name: str
    title: str
    show: Show
    act: Act | None = None


async def rpc(method: Any, request: Any, *, token: str = "") -> Any:
    """Calls a unary method of a case's stub; ApiError when it refuses, CaseDown when its
    server does not answer. `token` travels as `authorization: Bearer`, as with the API."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        return await method(request, metadata=metadata, timeout=TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _DOWN:
            raise CaseDown(exc.details() or exc.code().name) from None
        raise api_error(exc) from None


def refused(exc: ApiError, inputs: Mapping[str, str], form: Mapping[str, str]) -> Values:
    """The values that show a refusal beside its input: the input the field's first name
    maps to in `inputs`, or "form" (above the form) when none does. A refusal other than
    INVALID_ARGUMENT that still names its field ("workspace: 'x' exists already") counts."""
    match = _NAMED.match(exc.message)
    field = exc.field or (match.group(1) if match else "")
    name = field.split(".")[0].split("[")[0]
    return {"error": exc.message, "error_input": inputs.get(name, "form"), "form": dict(form)}


def remember(kept: dict[str, Any], key: str, value: Any, *, limit: int) -> None:
    """Keeps `value` under `key` as the newest entry, forgetting the oldest past `limit`, so
    that nobody can grow a session without bound."""
    kept.pop(key, None)
    kept[key] = value
    while len(kept) > limit:
        kept.pop(next(iter(kept)))


def no_error() -> Values:
    return {"error": "", "error_input": "", "form": {}}
