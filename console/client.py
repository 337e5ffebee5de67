"""The console's one way to the API: a grpc.aio channel, and every call made with the
signed-in user's token as its `authorization` metadata. What the API refuses is refused here
too; the console adds no permission of its own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

TIMEOUT = 15.0
# "<field path>: <reason>", as api/validation.py words INVALID_ARGUMENT.
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.+)$", re.DOTALL)


@dataclass(frozen=True)
class ApiError(Exception):
    """A refused call: its status, the field it names (INVALID_ARGUMENT), and the message."""

    code: grpc.StatusCode
    message: str
    field: str = ""

    def __str__(self) -> str:
        return self.message


def api_error(exc: grpc.aio.AioRpcError) -> ApiError:
    details = exc.details() or exc.code().name
    field = ""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        match = _FIELD.match(details)
        if match:
            field = match.group(1)
    return ApiError(code=exc.code(), message=details, field=field)


class Api:
    """One channel for the whole console; the token travels per call."""

    def __init__(
        self,
        server: str,
        *,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        if tls_ca is None:
            self._channel = grpc.aio.insecure_channel(server)
        else:
            # A client certificate too, for an API that asks for one (mutual TLS).
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes(),
                private_key=tls_key.read_bytes() if tls_key else None,
                certificate_chain=tls_cert.read_bytes() if tls_cert else None,
            )
            self._channel = grpc.aio.secure_channel(server, credentials)
        self.scheduler = pb_grpc.JobSchedulerStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    @staticmethod
    def _metadata(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def call(self, method: str, request: Any, *, token: str) -> Any:
        """Calls a unary JobScheduler method; ApiError when the API refuses."""
        try:
            return await getattr(self.scheduler, method)(
                request, metadata=self._metadata(token), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise api_error(exc) from None

    async def stream(self, method: str, request: Any, *, token: str) -> AsyncIterator[Any]:
        """A server-streaming method's messages until it ends; ApiError when refused."""
        call = getattr(self.scheduler, method)(request, metadata=self._metadata(token))
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise api_error(exc) from None
        finally:
            call.cancel()

    async def whoami(self, token: str) -> str:
        """Checks a token with the cheapest call; ApiError (UNAUTHENTICATED) for a bad one.
        Returns the namespace it sees, when it has a job to tell ("" otherwise)."""
        answer = await self.call("ListJobs", pb.ListJobsRequest(page_size=1), token=token)
        return str(answer.jobs[0].namespace) if answer.jobs else ""

    async def needs_token(self) -> bool:
        """Whether the API refuses a call without a token (an --insecure API does not)."""
        try:
            await self.whoami("")
        except ApiError as exc:
            return bool(exc.code == grpc.StatusCode.UNAUTHENTICATED)
        return False
