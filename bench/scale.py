"""Scenario 4, scale: does firing cost follow the number of due jobs, not the table size?

The jobs table is bulk-loaded (INSERT ... SELECT generate_series) with interval jobs due over
the next 30 days, first 10,000 of them, then 1,000,000. At each size, after VACUUM ANALYZE,
cycles of: make 500 random jobs due (fire times a few seconds ago), then
  - EXPLAIN (ANALYZE, BUFFERS) of the producer's due-job query (SELECT * FROM jobs WHERE
    next_fire_at <= now ORDER BY next_fire_at LIMIT 500 FOR UPDATE SKIP LOCKED), rolled back;
  - one producer cycle: one transaction of hourglass.store.fires.fire_due(limit=500), timed
    from the pool borrow to the commit.
The figures are medians of cycles that each start after a VACUUM; then cycles without one
show the effect of the dead index entries each fire leaves at the head of jobs_next_fire_at
until (auto)vacuum removes them. Buffers touched by the query are reported too: unlike
milliseconds they do not depend on what else the machine is doing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench.env import Bench, load, say
from bench.report import Row

DUE = 500
CHUNK = 100_000
TARGET = 1.2
DUE_QUERY = """
    SELECT * FROM jobs
    WHERE next_fire_at <= %(now)s
    ORDER BY next_fire_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
"""


def bulk_load(dsn: str, upto: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
        have = row[0] if row else 0
        started = time.monotonic()
        while have < upto:
            count = min(CHUNK, upto - have)
            conn.execute(
                """
                INSERT INTO jobs (id, name, command, schedule, state, next_fire_at,
                                  created_at, updated_at)
                SELECT gen_random_uuid(), 'scale-' || i, ARRAY['/bin/true'],
                       '{"kind": "every", "interval_seconds": 3600.0,
                         "jitter_seconds": 0.0}'::jsonb,
                       'active', now() + interval '1 hour' + random() * interval '30 days',
                       now(), now()
                FROM generate_series(%s::int, %s::int) AS i
                """,
                (have + 1, have + count),
            )
            have += count
            if upto > CHUNK:
                say(f"  loaded {have:,}/{upto:,} jobs ({time.monotonic() - started:.0f}s)")
        say(f"  VACUUM ANALYZE jobs ({have:,} rows)")
        conn.execute("VACUUM ANALYZE jobs")


def explain_update(conn: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE of fire_due's UPDATE of the due jobs (next_fire_at moves an hour on),
    rolled back: what advancing 500 jobs costs in buffers, index maintenance included."""
    with conn.transaction(force_rollback=True):
        due = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM jobs WHERE next_fire_at <= now() ORDER BY next_fire_at LIMIT %s",
                (DUE,),
            )
        ]
        row = conn.execute(
            """
            EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
            UPDATE jobs SET next_fire_at = jobs.next_fire_at + interval '1 hour',
                            missed_fires = missed_fires + 0, updated_at = now()
            FROM unnest(%s::uuid[]) AS v(id) WHERE jobs.id = v.id
            """,
            (due,),
        ).fetchone()
    plan = row[0][0]
    top = plan["Plan"]
    return {
        "update_ms": plan["Execution Time"],
        "update_buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "update_read": top.get("Shared Read Blocks", 0),
    }


def backlog_query(dsn: str, size: int) -> dict[str, Any]:
    """The due query when a tenth of the jobs are due at once (after an outage), asked before
    any ANALYZE has seen them: what one producer cycle then pays."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET next_fire_at = now() - random() * interval '1 hour'"
            " WHERE random() < 0.1"
        )
        row = conn.execute("SELECT count(*) FROM jobs WHERE next_fire_at <= now()").fetchone()
        figures = explain(conn)
        figures["no_bitmap"] = explain(conn, no_bitmap=True)
    figures["due"] = row[0] if row else 0
    other = figures["no_bitmap"]
    say(
        f"  {size:,} jobs, {figures['due']:,} of them due: due query {figures['ms']:.1f} ms, "
        f"{figures['buffers']:,} buffers; plan: {figures['plan']}; with enable_bitmapscan off "
        f"{other['ms']:.1f} ms, {other['buffers']:,} buffers, plan: {other['plan']}"
    )
    return figures


def explain(conn: Any, *, no_bitmap: bool = False) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the due query in a transaction that is rolled back (no_bitmap: with
    the planner's bitmap scans off, as a what-if)."""
    with conn.transaction(force_rollback=True):
        if no_bitmap:
            conn.execute("SET LOCAL enable_bitmapscan = off")
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + DUE_QUERY,
            {"now": datetime.now(UTC), "limit": DUE},
        ).fetchone()
    plan = row[0][0]
    node, nodes = plan["Plan"], []
    while True:
        nodes.append(
            node["Node Type"]
            + (f" using {node['Index Name']}" if "Index Name" in node else "")
            + (
                f" (estimated {node['Plan Rows']}, actual {node['Actual Rows']} rows)"
                if not node.get("Plans")
                else ""
            )
        )
        if not node.get("Plans"):
            break
        node = node["Plans"][0]
    top = plan["Plan"]
    return {
        "ms": plan["Execution Time"],
        "rows": top["Actual Rows"],
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "plan": " -> ".join(nodes),
    }


async def fire_once(dsn: str) -> tuple[float, int]:
    from hourglass.store import db, fires

    pool = await db.open_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:  # warm: the producer's pool is long-lived
            await conn.execute("SELECT 1")
        start = time.perf_counter()
        async with db.transaction(pool) as conn:
            fired = await fires.fire_due(conn, now=datetime.now(UTC), limit=DUE)
        count = fired if isinstance(fired, int) else fired.jobs  # an int before Fired existed
        return (time.perf_counter() - start) * 1000, count
    finally:
        await pool.close()


def measure(dsn: str, size: int, fresh: int, steady: int) -> dict[str, Any]:
    """`fresh` cycles with a VACUUM before each (only live entries in the index), then `steady`
    cycles without (each fire leaves a dead entry at the head of jobs_next_fire_at)."""
    import psycopg

    cycles = fresh + steady
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM jobs WHERE next_fire_at > now() ORDER BY random() LIMIT %s",
                (DUE * cycles,),
            )
        ]
        # A small table has fewer jobs than the cycles need: fired jobs are due again in an
        # hour, so they can be made due once more.
        results = []
        for cycle in range(cycles):
            chunk = [ids[(cycle * DUE + i) % len(ids)] for i in range(DUE)]
            conn.execute(
                "UPDATE jobs SET next_fire_at = now() - interval '10 seconds'"
                " + random() * interval '5 seconds' WHERE id = ANY(%s)",
                (chunk,),
            )
            if cycle < fresh:
                conn.execute("VACUUM jobs")
            plan = explain(conn)
            if cycle < fresh:
                plan.update(explain_update(conn))
                plain = explain(conn, no_bitmap=True)
                plan["nb_ms"], plan["nb_plan"] = plain["ms"], plain["plan"]
            fire_ms, fired = asyncio.run(fire_once(dsn))
            if fired != DUE:
                say(f"  WARNING: fire_due fired {fired} jobs, expected {DUE}")
            results.append({**plan, "fire_ms": fire_ms})
        vacuums = conn.execute(
            "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'"
        ).fetchone()
    first = results[:fresh]
    figures = {
        "query_ms": statistics.median(r["ms"] for r in first),
        "fire_ms": statistics.median(r["fire_ms"] for r in first),
        "buffers": statistics.median(r["buffers"] for r in first),
        "update_buffers": statistics.median(r["update_buffers"] for r in first),
        "update_read": statistics.median(r["update_read"] for r in first),
        "update_ms": statistics.median(r["update_ms"] for r in first),
        "nb_ms": statistics.median(r["nb_ms"] for r in first),
        "nb_plan": first[0]["nb_plan"],
        "steady_query_ms": statistics.median(r["ms"] for r in results[-3:]),
        "steady_buffers": statistics.median(r["buffers"] for r in results[-3:]),
        "steady_fire_ms": statistics.median(r["fire_ms"] for r in results[-3:]),
        "plan": results[0]["plan"],
        "rows": results[0]["rows"],
        "autovacuums": vacuums[0] if vacuums else None,
        "cycles": results,
    }
    say(
        f"  {size:,} jobs: due query {figures['query_ms']:.2f} ms, {figures['buffers']:.0f} "
        f"buffers (after {steady} cycles without VACUUM {figures['steady_query_ms']:.2f} ms, "
        f"{figures['steady_buffers']:.0f} buffers); fire_due transaction "
        f"{figures['fire_ms']:.1f} ms ({figures['steady_fire_ms']:.1f}); its UPDATE of the due "
        f"jobs {figures['update_ms']:.1f} ms, {figures['update_buffers']:.0f} buffers "
        f"({figures['update_read']:.0f} read); plan: {figures['plan']}"
    )
    return figures


def run(bench: Bench, small: int, large: int, fresh: int = 15, steady: int = 15) -> list[Row]:
    say(f"scale: the due query and fire_due with {small:,} and {large:,} jobs; {load()}")
    dsn = bench.database("bench_scale")
    found = {}
    for size in (small, large):
        say(f"  bulk-loading {size:,} jobs")
        bulk_load(dsn, size)
        found[size] = measure(dsn, size, fresh, steady)
    s, b = found[small], found[large]
    backlog = backlog_query(dsn, large)
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'jobs'").fetchone()
        indexes = row[0] if row else "?"
    bench.notes["scale"] = {**{str(k): v for k, v in found.items()}, "backlog": backlog}
    big = f"{large // 1000:,}k" if large < 1_000_000 else f"{large // 1_000_000}M"
    small_name = f"{small // 1000}k jobs"
    return [
        Row(
            "scale",
            f"due query (EXPLAIN ANALYZE), {big} vs {small_name}",
            b["query_ms"],
            "ms",
            s["query_ms"],
            small_name,
            better="lower",
            target=f"<= {TARGET}x",
            met=b["query_ms"] / s["query_ms"] <= TARGET,
            note=f"median of {fresh} cycles, each after a VACUUM; plan at {big}: {b['plan']}; "
            f"at {small_name}: {s['plan']}",
        ),
        Row(
            "scale",
            f"  the same with SET LOCAL enable_bitmapscan = off (a what-if), {big} vs {small_name}",
            b["nb_ms"],
            "ms",
            s["nb_ms"],
            small_name,
            better="lower",
            target=f"<= {TARGET}x",
            met=b["nb_ms"] / s["nb_ms"] <= TARGET,
            note=f"plan at {big}: {b['nb_plan']}",
        ),
        Row(
            "scale",
            f"due query, buffers touched, {big} vs {small_name}",
            b["buffers"],
            "buffers",
            s["buffers"],
            small_name,
            better="lower",
            target=f"<= {TARGET}x",
            met=b["buffers"] / s["buffers"] <= TARGET,
        ),
        Row(
            "scale",
            f"producer cycle (fire_due, {DUE} due), {big} vs {small_name}",
            b["fire_ms"],
            "ms",
            s["fire_ms"],
            small_name,
            better="lower",
            target=f"<= {TARGET}x",
            met=b["fire_ms"] / s["fire_ms"] <= TARGET,
        ),
        Row(
            "scale",
            f"  its UPDATE advancing {DUE} jobs (EXPLAIN ANALYZE), {big} vs {small_name}",
            b["update_ms"],
            "ms",
            s["update_ms"],
            small_name,
            better="lower",
            note=f"{b['update_buffers']:.0f} vs {s['update_buffers']:.0f} buffers, "
            f"{b['update_read']:.0f} vs {s['update_read']:.0f} of them read from outside "
            f"shared_buffers; jobs has {indexes} indexes, and as next_fire_at is indexed each "
            "update is non-HOT: a new entry in every one of them",
        ),
        Row(
            "scale",
            f"due query after {steady} cycles without VACUUM, {big} vs {small_name}",
            b["steady_query_ms"],
            "ms",
            s["steady_query_ms"],
            small_name,
            better="lower",
            note=f"{b['steady_buffers']:.0f} vs {s['steady_buffers']:.0f} buffers; autovacuum "
            f"ran {b['autovacuums']} time(s) on jobs by the end",
        ),
        Row(
            "scale",
            f"due query, {backlog['due']:,} due at once (an outage), {big} jobs vs {DUE} due",
            backlog["ms"],
            "ms",
            b["query_ms"],
            f"{DUE} due",
            better="lower",
            note=f"{backlog['buffers']:,} buffers; plan: {backlog['plan']}",
        ),
        Row(
            "scale",
            "  the same with SET LOCAL enable_bitmapscan = off (a what-if)",
            backlog["no_bitmap"]["ms"],
            "ms",
            b["query_ms"],
            f"{DUE} due",
            better="lower",
            note=f"{backlog['no_bitmap']['buffers']:,} buffers; plan: "
            f"{backlog['no_bitmap']['plan']}",
        ),
        Row(
            "scale",
            f"producer cycle after {steady} cycles without VACUUM, {big} vs {small_name}",
            b["steady_fire_ms"],
            "ms",
            s["steady_fire_ms"],
            small_name,
            better="lower",
        ),
    ]
