"""The Leaderboard's schema: migrations and schema.sql agree, inside a schema of its own."""

from __future__ import annotations

import psycopg

from hourglass.cases.leaderboard import store

_SHAPE = """
SELECT 'column', c.table_name || '.' || c.column_name || ' ' || c.data_type || ' '
       || c.is_nullable || ' ' || coalesce(c.column_default, '') || ' ' || c.is_identity
  FROM information_schema.columns c WHERE c.table_schema = %(s)s
UNION ALL
SELECT 'index', replace(indexdef, %(s)s || '.', '') FROM pg_indexes WHERE schemaname = %(s)s
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = %(s)s::regnamespace
ORDER BY 1, 2
"""


def shape(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[tuple[object, ...]]:
    conn.execute(f"SET search_path TO {schema}")
    rows = conn.execute(_SHAPE, {"s": schema}).fetchall()
    return [
        (kind, str(text).replace(schema + ".", ""))
        for kind, text in rows
        if "leaderboard_migrations" not in str(text)
    ]


def test_migrations_make_exactly_schema_sql(database_url: str) -> None:
    assert store.prepare(database_url, "lb_migrated") == ["0001_initial.sql"]
    assert store.prepare(database_url, "lb_migrated") == []  # idempotent
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA lb_declared")
        conn.execute("SET search_path TO lb_declared")
        conn.execute(store.FOLDER.joinpath("schema.sql").read_text().encode())
        assert shape(conn, "lb_migrated") == shape(conn, "lb_declared")
        assert shape(conn, "lb_migrated")


def test_schema_names_are_plain_and_distinct() -> None:
    assert store.schema_for("games") == "lb_games"
    assert store.schema_for("my-games") != store.schema_for("my_games")
    assert len(store.schema_for("x" * 253)) <= 63
    assert store.schema_for('a"; DROP').startswith("lb_a___drop_")
