"""Applies the numbered SQL files of a migrations folder that a database has not seen yet.

The scheduler's own schema lives in `public` (hourglass/store/migrations). Each case
resource gets a PostgreSQL schema of its own (`schema=`), with its own bookkeeping table, so
two resources of a case (or two cases) never share a table, and a case's migrations run on
their own version line. `scoped_dsn` gives the case's server connections whose search_path
is that schema and nothing else, so its unqualified SQL can only name its own tables.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
# Serialises concurrent `hourglass migrate` runs (several pods starting at once). A schema's
# migrations take the two-key lock (_LOCK_KEY, hashtext(schema)), a key space of its own.
_LOCK_KEY = 0x686F7572  # "hour"
# PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
MAX_SCHEMA = 63
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _store_folder() -> Traversable:
    return importlib.resources.files("hourglass.store")


def migrations(folder: Traversable | None = None) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration in `folder`/migrations (default: the
    scheduler's), in order."""
    base = folder if folder is not None else _store_folder()
    found = []
    for entry in (base / "migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def schema_sql(folder: Traversable | None = None) -> str:
    """The whole current schema, `folder`/schema.sql (default: the scheduler's)."""
    base = folder if folder is not None else _store_folder()
    return (base / "schema.sql").read_text()


def check_schema_name(schema: str) -> str:
    """`schema` if it is a plain lower-case identifier; ValueError naming the rule otherwise.

    Plain names need no quoting anywhere (psql, search_path, pg_dump), and refusing the rest
    keeps a resource's name from ever reaching SQL unescaped."""
    if not _SCHEMA.fullmatch(schema) or schema.startswith("pg_"):
        raise ValueError(
            f"schema {schema!r}: must be 1-{MAX_SCHEMA} characters of a-z, 0-9 and _, "
            "not start with a digit or pg_"
        )
    return schema


def scoped_dsn(dsn: str, schema: str) -> str:
    """`dsn` with search_path set to `schema` alone for every connection made from it (the
    libpq `options` parameter), keeping any options the DSN had."""
    check_schema_name(schema)
    options = str(conninfo_to_dict(dsn).get("options") or "")
    extra = f"-c search_path={schema}"
    return make_conninfo(dsn, options=f"{options} {extra}".strip())


def apply(dsn: str, *, folder: Traversable | None = None, schema: str | None = None) -> list[str]:
    """Brings the database up to date; returns the names of the migrations it applied.

    folder: holds migrations/ (and schema.sql); default: the scheduler's.
    schema: apply into this PostgreSQL schema (created if missing), with its own
        `hourglass_migrations` table; default: the connection's search_path (`public`).
    """
    if schema is not None:
        check_schema_name(schema)
    applied = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        if schema is None:
            lock: tuple[sql.Composable, tuple[object, ...]] = (
                sql.SQL("(%s)"),
                (_LOCK_KEY,),
            )
        else:
            lock = (sql.SQL("(%s, hashtext(%s))"), (_LOCK_KEY, schema))
        conn.execute(sql.SQL("SELECT pg_advisory_lock") + lock[0], lock[1])
        try:
            if schema is not None:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                # Session-wide: every statement of the migrations lands in the schema.
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS hourglass_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM hourglass_migrations")}
            for version, name, text in migrations(folder):
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute(
                        "INSERT INTO hourglass_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                log.info("applied migration %s%s", name, f" in schema {schema}" if schema else "")
                applied.append(name)
        finally:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock") + lock[0], lock[1])
    return applied
