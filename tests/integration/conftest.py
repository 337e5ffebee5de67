from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from hourglass import artifacts
from hourglass.api import server as api_server
from hourglass.api.auth import Insecure
from hourglass.store import db
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc


@pytest.fixture
async def api_address(pool: db.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A real gRPC server on a free loopback port, serving this test's database, with a local
    artifact store in a temporary folder."""
    server = await api_server.start(
        pool,
        "127.0.0.1:0",
        dsn=database_url,
        auth=Insecure(),
        artifact_store=artifacts.LocalArtifactStore(tmp_path / "artifacts"),
    )
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace=None)


@pytest.fixture
async def stub(api_address: str) -> AsyncIterator[pb_grpc.JobSchedulerStub]:
    async with grpc.aio.insecure_channel(api_address) as channel:
        yield pb_grpc.JobSchedulerStub(channel)
