"""The namespace_quotas and namespace_pacing tables: each namespace's limits, and how the
producer paces its fires. The decisions are hourglass.quota_rules'; this module reads and
writes the rows they need. (max_running_runs is read by the claim itself, in runs.py.)

Requests check a quota after writing and raise QuotaExceeded when it is exceeded, so the
caller's transaction rolls back and nothing is stored. A per-namespace advisory lock,
taken first, makes the counts exact under concurrent requests of one namespace; the producer
never takes it (it only paces, and its counts may be a cycle stale). The job count is
namespace_counts' row, which every insert and delete of jobs changes (0011): the insert locks
it until the commit, so a count read after one's own insert is exact even against
ScheduleJob's one-statement path (store/admitted.py), which locks that row instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from hourglass import quota_rules
from hourglass.quota_rules import Quota
from hourglass.schedules import Schedule
from hourglass.store.db import Connection

# The class id of hourglass's namespace advisory locks (the other key is hashtext(namespace)).
NAMESPACE_LOCK = 0x4E53


@dataclass(frozen=True, slots=True)
class NamespaceQuota:
    namespace: str
    quota: Quota
    # False: the namespace has no row and gets the defaults.
    custom: bool


def _quota(row: dict[str, object]) -> Quota:
    return Quota(
        max_jobs=int(row["max_jobs"]),  # type: ignore[call-overload]
        max_queued_runs=int(row["max_queued_runs"]),  # type: ignore[call-overload]
        max_fires_per_second=float(row["max_fires_per_second"]),  # type: ignore[arg-type]
        max_running_runs=int(row["max_running_runs"]),  # type: ignore[call-overload]
    )


async def get_many(conn: Connection, namespaces: Iterable[str]) -> dict[str, Quota]:
    """The quota of each namespace: its own row, or the defaults."""
    wanted = sorted(set(namespaces))
    cursor = await conn.execute(
        "SELECT * FROM namespace_quotas WHERE namespace = ANY(%s)", (wanted,)
    )
    found = {row["namespace"]: _quota(row) for row in await cursor.fetchall()}
    return {namespace: found.get(namespace, Quota()) for namespace in wanted}


async def get(conn: Connection, namespace: str) -> NamespaceQuota:
    cursor = await conn.execute("SELECT * FROM namespace_quotas WHERE namespace = %s", (namespace,))
    row = await cursor.fetchone()
    return NamespaceQuota(namespace, _quota(row) if row else Quota(), row is not None)


async def list_custom(conn: Connection) -> list[NamespaceQuota]:
    """The namespaces whose quotas differ from the defaults."""
    cursor = await conn.execute("SELECT * FROM namespace_quotas ORDER BY namespace")
    return [NamespaceQuota(row["namespace"], _quota(row), True) for row in await cursor.fetchall()]


async def put(conn: Connection, namespace: str, quota: Quota, *, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO namespace_quotas (namespace, max_jobs, max_queued_runs,
                                      max_fires_per_second, max_running_runs, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (namespace) DO UPDATE
        SET max_jobs = EXCLUDED.max_jobs, max_queued_runs = EXCLUDED.max_queued_runs,
            max_fires_per_second = EXCLUDED.max_fires_per_second,
            max_running_runs = EXCLUDED.max_running_runs,
            updated_at = EXCLUDED.updated_at
        """,
        (
            namespace,
            quota.max_jobs,
            quota.max_queued_runs,
            quota.max_fires_per_second,
            quota.max_running_runs,
            now,
        ),
    )


async def reset(conn: Connection, namespace: str) -> bool:
    """Back to the defaults; False if the namespace had none of its own."""
    cursor = await conn.execute("DELETE FROM namespace_quotas WHERE namespace = %s", (namespace,))
    return cursor.rowcount > 0


async def lock(conn: Connection, namespace: str) -> None:
    """Serializes the quota-checked requests of one namespace until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (NAMESPACE_LOCK, namespace)
    )


async def _count(conn: Connection, query: str, namespace: str, limit: int) -> int:
    """Counts rows of the namespace, stopping one past `limit`: a quota check costs at most
    the quota, however large a namespace grows."""
    cursor = await conn.execute(
        f"SELECT count(*) AS n FROM ({query} LIMIT %s) AS bounded",  # noqa: S608 - constant
        (namespace, limit + 1),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def job_count(conn: Connection, namespace: str) -> int:
    """The namespace's jobs, from namespace_counts (kept exactly by triggers on jobs, 0011):
    one row read, however many jobs the namespace holds. Within a transaction it includes
    the transaction's own inserts and deletes."""
    cursor = await conn.execute(
        "SELECT jobs FROM namespace_counts WHERE namespace = %s", (namespace,), prepare=True
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row["jobs"])


async def enforce_jobs(conn: Connection, namespace: str) -> None:
    """Raises QuotaExceeded if the namespace holds more jobs than max_jobs (call it after
    inserting, in the same transaction, after `lock`)."""
    quota = (await get(conn, namespace)).quota
    quota_rules.check_jobs(quota, namespace=namespace, count=await job_count(conn, namespace))


async def enforce_queued(conn: Connection, namespace: str) -> None:
    """Raises QuotaExceeded if the namespace has more queued runs than max_queued_runs."""
    quota = (await get(conn, namespace)).quota
    count = await _count(
        conn,
        "SELECT 1 FROM runs WHERE state = 'queued' AND namespace = %s",
        namespace,
        quota.max_queued_runs,
    )
    quota_rules.check_queued(quota, namespace=namespace, count=count)


async def admit_schedules(
    conn: Connection, namespace: str, schedules: Iterable[Schedule], *, now: datetime
) -> None:
    """Raises QuotaExceeded for a schedule that alone fires faster than the namespace may."""
    quota = (await get(conn, namespace)).quota
    for schedule in schedules:
        quota_rules.check_rate(quota, namespace=namespace, schedule=schedule, now=now)


async def admit_fires(
    conn: Connection, available: dict[str, list[datetime]], *, now: datetime
) -> dict[str, quota_rules.Admitted]:
    """The producer's quota verdict on each namespace's queued fires of this cycle (see
    quota_rules.admit_fires); stores each namespace's pacing state for the next cycle.

    The pacing rows are locked in namespace order, so producers sharing the work serialize
    per namespace without deadlocking.
    """
    namespaces = sorted(available)
    limits = await get_many(conn, namespaces)
    cursor = await conn.execute(
        """
        SELECT s.namespace, c.n
        FROM unnest(%(namespaces)s::text[], %(limits)s::bigint[]) AS s(namespace, lim)
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM (
                SELECT 1 FROM runs r WHERE r.state = 'queued' AND r.namespace = s.namespace
                LIMIT s.lim + 1) AS bounded) AS c
        """,
        {"namespaces": namespaces, "limits": [limits[ns].max_queued_runs for ns in namespaces]},
    )
    queued = {row["namespace"]: int(row["n"]) for row in await cursor.fetchall()}
    await conn.execute(
        "INSERT INTO namespace_pacing (namespace, tat)"
        " SELECT unnest(%s::text[]), %s ON CONFLICT (namespace) DO NOTHING",
        (namespaces, now),
    )
    cursor = await conn.execute(
        "SELECT namespace, tat FROM namespace_pacing WHERE namespace = ANY(%s)"
        " ORDER BY namespace FOR UPDATE",
        (namespaces,),
    )
    tats = {row["namespace"]: row["tat"] for row in await cursor.fetchall()}
    verdicts = {
        ns: quota_rules.admit_fires(
            available[ns], quota=limits[ns], queued=queued.get(ns, 0), tat=tats.get(ns), now=now
        )
        for ns in namespaces
    }
    await conn.execute(
        """
        UPDATE namespace_pacing SET tat = v.tat
        FROM unnest(%s::text[], %s::timestamptz[]) AS v(namespace, tat)
        WHERE namespace_pacing.namespace = v.namespace
        """,
        (namespaces, [verdicts[ns].tat for ns in namespaces]),
    )
    return verdicts
