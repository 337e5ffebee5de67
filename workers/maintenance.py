"""Maintenance: prunes finished runs older than the retention, and deletes uploaded binaries
that no job refers to any more. Runs beside the claimer and only on its leader, so one
process does it at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from hourglass import artifacts
from hourglass.clock import Clock, SystemClock
from hourglass.store import artifacts as artifact_rows
from hourglass.store import db, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    # Finished runs are kept this long (with their attempts and output).
    retention: timedelta = timedelta(days=30)
    # Rows deleted per transaction, so a large backlog never holds long locks.
    batch_size: int = 1000
    # An unreferenced binary younger than this is kept: it may be about to be scheduled.
    artifact_grace: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0):
            raise ValueError("retention must be positive")


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
        removed = 0
        if self.artifact_store is not None:
            async with self.pool.connection() as conn:
                candidates = await artifact_rows.unreferenced(
                    conn,
                    created_before=self.clock.now() - self.config.artifact_grace,
                    limit=self.config.batch_size,
                )
            for digest in candidates:
                async with db.transaction(self.pool) as conn:
                    if not await artifact_rows.forget(conn, digest):
                        continue
                    # Deleted inside the transaction: if the bytes cannot go, the row stays.
                    await self.artifact_store.delete(artifacts.parse_digest(digest))
                removed += 1
        if pruned or removed:
            log.info("maintenance: pruned %d runs, deleted %d binaries", pruned, removed)
        return pruned, removed
