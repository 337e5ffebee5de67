"""Calls to the Kubernetes API for the executor: in a thread, retried while the failure is
transient (connection errors, 5xx, 429), and anything else turned into an ApiError whose text
is the API server's own message. The kubernetes client is synchronous, hence the threads."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client as k8s
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from hourglass.workers.executors.kube_manifests import Refused

log = logging.getLogger("hourglass.workers.executors.kubernetes")

# At most this many bytes of a pod's log are kept (tail_bytes).
LOG_KEEP = 1024 * 1024

TRANSIENT_STATUS = frozenset({0, 408, 429, 500, 502, 503, 504})


class ApiError(Refused):
    """The API refused a call (status > 0), or could not be reached (status 0)."""

    def __init__(self, action: str, status: int, message: str) -> None:
        self.action = action
        self.status = status
        self.message = message
        if status:
            text = f"Kubernetes API refused to {action}: {self.detail}"
        else:
            text = f"Kubernetes API unreachable while trying to {action}: {message}"
        super().__init__(text)

    @property
    def detail(self) -> str:
        return f"{self.status} {self.message}" if self.status else self.message


async def call_api(
    action: str,
    call: Callable[..., Any],
    *args: Any,
    retry_seconds: float,
    request_timeout: float,
    decode: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """`call` in a thread, its JSON body as plain data (or `decode` of the raw response);
    transient failures retried with backoff for up to `retry_seconds`, anything else raised
    as ApiError."""
    decoder = decode or json_body
    kwargs.setdefault("_request_timeout", request_timeout)

    def run() -> Any:
        response = call(*args, _preload_content=False, **kwargs)
        try:
            return decoder(response)
        finally:
            response.release_conn()

    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_after_delay(retry_seconds),
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
        before_sleep=functools.partial(_warn, action),
        reraise=True,
    )
    try:
        async for try_ in retrying:
            with try_:
                return await asyncio.to_thread(run)
    except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise api_error(action, exc) from None
    raise AssertionError("unreachable: tenacity returns or raises")


def json_body(response: Any) -> Any:
    return json.loads(response.data)


def tail_bytes(response: Any) -> bytes:
    """The last LOG_KEEP bytes of a streamed response, without holding more in memory."""
    kept = bytearray()
    for chunk in chunks(response):
        kept += chunk
        if len(kept) > LOG_KEEP:
            del kept[: len(kept) - LOG_KEEP]
    return bytes(kept)


def chunks(response: Any) -> Iterator[bytes]:
    yield from response.stream(65536)


def transient(exc: BaseException) -> bool:
    if isinstance(exc, k8s.ApiException):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def api_error(action: str, exc: BaseException) -> ApiError:
    if isinstance(exc, k8s.ApiException):
        return ApiError(action, int(exc.status or 0), api_message(exc))
    return ApiError(action, 0, str(exc) or type(exc).__name__)


def api_message(exc: Any) -> str:
    """The Status message the API server sent, else the HTTP reason."""
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = ""
    return f"{exc.reason}: {message}" if message else str(exc.reason or "no reason given")


def _warn(action: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0
    reason = api_error(action, error).detail if error else "unknown error"
    log.warning("cannot %s yet (%s); retrying in %.1fs", action, reason, sleep)
