"""Maintenance: prunes finished runs older than the retention and run events older than the
event retention, and deletes uploaded binaries that nobody uses any more. Runs beside the
claimer and only on its leader, so one process does it at a time.

Binaries belong to the namespaces that uploaded them. An ownership that no job of its
namespace uses is released after the grace; the bytes go only once no namespace owns them and
no job of any namespace refers to them, so one tenant's clean-up never breaks another's jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from hourglass import artifacts, run_events
from hourglass.clock import Clock, SystemClock
from hourglass.store import artifacts as artifact_rows
from hourglass.store import db, events, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    # Finished runs are kept this long (with their attempts and output).
    retention: timedelta = timedelta(days=30)
    # Rows deleted per transaction, so a large backlog never holds long locks.
    batch_size: int = 1000
    # An unused upload younger than this is kept: it may be about to be scheduled.
    artifact_grace: timedelta = timedelta(hours=1)
    # Run events (WatchJob's log) are kept this long: how old a cursor a client may resume
    # from.
    event_retention: timedelta = run_events.DEFAULT_RETENTION

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0):
            raise ValueError("retention must be positive")
        if self.event_retention <= timedelta(0):
            raise ValueError("event retention must be positive")


class Maintenance:
    def __init__(
        self,
        *,
        pool: db.Pool,
        artifact_store: artifacts.ArtifactStore | None = None,
        config: MaintenanceConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.artifact_store = artifact_store
        self.config = config or MaintenanceConfig()
        self.clock = clock or SystemClock()

    async def run_once(self) -> tuple[int, int]:
        """Returns (runs pruned, binaries deleted)."""
        pruned = await self._prune_runs()
        events_pruned = await self.prune_events()
        released, removed = 0, 0
        if self.artifact_store is not None:
            released = await self._release_ownerships()
            removed = await self._delete_binaries(self.artifact_store)
        if pruned or released or removed:
            log.info(
                "maintenance: pruned %d runs, released %d unused uploads, deleted %d binaries",
                pruned,
                released,
                removed,
            )
        if events_pruned:
            log.debug("maintenance: pruned %d run events", events_pruned)
        return pruned, removed

    async def _prune_runs(self) -> int:
        pruned = 0
        while True:
            async with db.transaction(self.pool) as conn:
                deleted = await runs.prune_finished(
                    conn,
                    before=self.clock.now() - self.config.retention,
                    limit=self.config.batch_size,
                )
            pruned += deleted
            if deleted < self.config.batch_size:
                break
        return pruned

    async def prune_events(self) -> int:
        """Deletes run events older than the event retention; returns how many. The bound is
        recorded before anything is deleted, so from then on a cursor that could miss a
        deleted event is refused as expired rather than served with a gap."""
        before = run_events.prune_before(self.clock.now(), retention=self.config.event_retention)
        async with db.transaction(self.pool) as conn:
            below = await events.prune_bound(conn, before=before)
        pruned = 0
        while True:
            async with db.transaction(self.pool) as conn:
                deleted = await events.prune(conn, below=below, limit=self.config.batch_size)
            pruned += deleted
            if deleted < self.config.batch_size:
                return pruned

    async def _release_ownerships(self) -> int:
        """Ends the ownerships that no job of their namespace uses: the upload no longer
        counts against that namespace's quota, and it can no longer schedule the digest."""
        cutoff = self.clock.now() - self.config.artifact_grace
        async with self.pool.connection() as conn:
            unused = await artifact_rows.unused_ownerships(
                conn, uploaded_before=cutoff, limit=self.config.batch_size
            )
        released = 0
        for namespace, digest in unused:
            async with db.transaction(self.pool) as conn:
                if await artifact_rows.release(
                    conn, namespace=namespace, digest=digest, uploaded_before=cutoff
                ):
                    released += 1
        return released

    async def _delete_binaries(self, store: artifacts.ArtifactStore) -> int:
        async with self.pool.connection() as conn:
            candidates = await artifact_rows.unreferenced(
                conn,
                created_before=self.clock.now() - self.config.artifact_grace,
                limit=self.config.batch_size,
            )
        removed = 0
        for digest in candidates:
            async with db.transaction(self.pool) as conn:
                if not await artifact_rows.forget(conn, digest):
                    continue
                # Deleted inside the transaction: if the bytes cannot go, the row stays.
                await store.delete(artifacts.parse_digest(digest))
            removed += 1
        return removed
