"""ScheduleJob: one job, stored with the namespace's concurrent calls where it can.

The common case is one statement in a transaction shared with the namespace's concurrent
calls (hourglass.api.group_commit, hourglass.store.admitted); a call that needs a decision
(a binary to check, a quota at its limit, an adoption, a request id seen before) takes the
full path: its own transaction, under the namespace's lock.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from hourglass import quota_rules
from hourglass.api import validation
from hourglass.api.group_commit import GroupCommit
from hourglass.domain import JobId
from hourglass.store import admitted, db, jobs, quotas
from hourglass.v1 import scheduler_pb2 as pb

log = logging.getLogger(__name__)


def request_digest(request: pb.ScheduleJobRequest) -> bytes:
    """What a request_id is bound to: the request without its id, serialized
    deterministically (map entries sorted), hashed."""
    body = pb.ScheduleJobRequest()
    body.CopyFrom(request)
    body.request_id = ""
    return hashlib.sha256(body.SerializeToString(deterministic=True)).digest()


class Submits:
    """ScheduleJob's store side for one API process (its group commit is per process)."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool
        self.group = GroupCommit(pool)

    async def schedule_job(
        self, request: pb.ScheduleJobRequest, *, namespace: str, now: datetime
    ) -> JobId:
        """The job's id, stored (or found again for a retried request id). Raises
        validation.Invalid, QuotaExceeded, UnknownArtifact or RequestConflict."""
        validation.request_id(request.request_id)
        managed_by = validation.manager(request.managed_by, "managed_by")
        spec = validation.job_spec(request.spec, now=now)
        digest = request_digest(request) if request.request_id else b""
        # The common case in one round trip, in a transaction shared with the namespace's
        # concurrent calls; None: something to decide, on the full path.
        prepared = admitted.prepare(
            spec=spec,
            rate=quota_rules.admission_rate(spec.schedule, now=now),
            now=now,
            namespace=namespace,
            request_id=request.request_id,
            request_digest=digest,
            managed_by=managed_by,
        )
        stored = None if prepared is None else await self.group.store(prepared)
        if stored is not None:
            log.info("job %s (%s) scheduled in namespace %s", stored, spec.name, namespace)
            return stored
        async with db.transaction(self.pool) as conn:
            await quotas.lock(conn, namespace)
            await quotas.admit_schedules(conn, namespace, [spec.schedule], now=now)
            job_id, created = await jobs.create(
                conn,
                spec=spec,
                now=now,
                namespace=namespace,
                request_id=request.request_id,
                request_digest=digest,
                managed_by=managed_by,
            )
            if created:
                await quotas.enforce_jobs(conn, namespace)
        if created:
            log.info("job %s (%s) scheduled in namespace %s", job_id, spec.name, namespace)
        return job_id
