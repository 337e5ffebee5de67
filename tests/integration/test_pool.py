"""The pool's check before lending (db.check_connection): a connection the server ended is
never lent, though a quiet connection is lent without a round trip."""

from __future__ import annotations

import select
import time

import psycopg

from hourglass.store import db


async def test_a_connection_whose_backend_was_terminated_is_not_lent(database_url: str) -> None:
    pool = await db.open_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT pg_backend_pid() AS pid")
            row = await cursor.fetchone()
            assert row is not None
            first = row["pid"]
            socket = conn.fileno()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # The server's goodbye reaches the pooled connection's socket.
        deadline = time.monotonic() + 30
        while not select.select([socket], [], [], 0.1)[0]:
            assert time.monotonic() < deadline, "the terminated connection never heard of it"
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT pg_backend_pid() AS pid")
            row = await cursor.fetchone()
        assert row is not None and row["pid"] != first
    finally:
        await pool.close()
