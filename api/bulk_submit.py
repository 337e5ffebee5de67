"""ScheduleJobs: a batch of jobs validated and inserted in chunks, in one transaction.

A call used to validate every job, then build one statement for all of them, then wait for
PostgreSQL to insert it: the API's Python and PostgreSQL's insert ran one after the other,
about their sum per job (docs/benchmarks.md). Here the connection is in pipeline mode and
the batch goes in chunks: the INSERT of chunk k is sent without waiting for its result, and
the API validates and builds chunk k+1 while PostgreSQL inserts chunk k. A call then costs
about the larger of the two. A chunk's statement is kept well under a unix socket's send
buffer, so that it is all sent while the next one is built.

What a caller sees does not change. The call is one transaction, committed before it
returns, or nothing is stored. The errors come in the order they did when everything was
validated first: a validation error of any job, at its index, before any quota or request
conflict; then a schedule firing faster than the namespace may; then an unknown binary;
then a request id reused with another request; then max_jobs. A refusal found in chunk k
stops the sending of inserts, but the later chunks are still validated, so that a later
job's invalid field is the answer, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hourglass import quota_rules
from hourglass.api import validation
from hourglass.api.submit import request_digest
from hourglass.domain import JobId
from hourglass.store import db, job_batch, jobs, quotas
from hourglass.v1 import scheduler_pb2 as pb

# Jobs one ScheduleJobs call may carry.
MAX_BATCH = 10_000
# Jobs per INSERT. About 1 kB of JSON each, so a chunk's statement fits a unix socket's
# send buffer (~200 kB) with room for the next; smaller chunks overlap more of the call but
# pay PostgreSQL's per-statement cost more often (docs/benchmarks.md).
CHUNK = 50


@dataclass(slots=True)
class _Refusals:
    """The first refusal of each kind found so far, answered in this order once every job
    has been validated."""

    rate: quota_rules.QuotaExceeded | None = None
    binary: jobs.UnknownArtifact | None = None
    conflict: jobs.RequestConflict | None = None

    def any(self) -> bool:
        return self.rate is not None or self.binary is not None or self.conflict is not None

    def raise_first(self) -> None:
        for refusal in (self.rate, self.binary, self.conflict):
            if refusal is not None:
                raise refusal


def _lookup_ids(items: Sequence[pb.ScheduleJobRequest]) -> set[str]:
    """The request ids to look up before the first chunk: the ones that are valid. An invalid
    one (too long, or with a NUL that PostgreSQL refuses) is answered at its index."""
    found = set()
    for item in items:
        value = item.request_id
        if value and len(value) <= validation.MAX_REQUEST_ID and "\x00" not in value:
            found.add(value)
    return found


class _Chunks:
    """Validates the batch chunk by chunk, in index order, remembering the request ids seen
    so far (one repeated within the batch is refused at its second index)."""

    def __init__(self, items: Sequence[pb.ScheduleJobRequest], *, now: datetime) -> None:
        self.items = items
        self.now = now
        self.seen: dict[str, int] = {}

    def validate(self, start: int) -> list[job_batch.NewJob]:
        new = []
        for index in range(start, min(start + CHUNK, len(self.items))):
            item = self.items[index]
            try:
                validation.request_id(item.request_id)
                if item.managed_by:
                    raise validation.Invalid(
                        "managed_by", "is for ScheduleJob only: a batch cannot adopt jobs"
                    )
                spec = validation.job_spec(item.spec, now=self.now)
            except validation.Invalid as exc:
                raise validation.Invalid(f"requests[{index}].{exc.field}", exc.reason) from None
            digest = b""
            if item.request_id:
                if item.request_id in self.seen:
                    raise validation.Invalid(
                        f"requests[{index}].request_id",
                        f"repeats requests[{self.seen[item.request_id]}].request_id",
                    )
                self.seen[item.request_id] = index
                digest = request_digest(item)
            new.append(
                job_batch.NewJob(spec=spec, request_id=item.request_id, request_digest=digest)
            )
        return new


async def schedule_jobs(
    pool: db.Pool, items: Sequence[pb.ScheduleJobRequest], *, namespace: str, now: datetime
) -> list[JobId]:
    """Stores the batch, all or nothing; returns each job's id in order (a retried request
    gives back its job). Raises validation.Invalid naming the job's index and field,
    QuotaExceeded, UnknownArtifact or RequestConflict."""
    if len(items) > MAX_BATCH:
        raise validation.Invalid("requests", f"has {len(items)} jobs; at most {MAX_BATCH}")
    chunks = _Chunks(items, now=now)
    # The first chunk before the transaction: a batch refused on its first jobs costs no
    # round trip.
    chunk = chunks.validate(0)
    refusals = _Refusals()
    ids: list[JobId] = []
    inserted = False
    async with db.transaction(pool) as conn, conn.pipeline():
        await quotas.lock(conn, namespace)
        quota = (await quotas.get(conn, namespace)).quota
        lookup = await job_batch.look_up(conn, _lookup_ids(items), namespace=namespace)
        # The second chunk is validated while PostgreSQL looks the request ids up.
        ahead = chunks.validate(CHUNK) if len(items) > CHUNK else None
        stored = await lookup.found()
        start = 0
        while True:
            await _check(conn, chunk, quota=quota, stored=stored, refusals=refusals,
                         namespace=namespace, now=now)  # fmt: skip
            if not refusals.any():
                chunk_ids, fresh = job_batch.resolve(chunk, stored)
                ids += chunk_ids
                # Sent, not waited for: the next chunk is validated meanwhile.
                await job_batch.insert(conn, fresh, namespace=namespace, now=now)
                inserted = inserted or bool(fresh)
            start += CHUNK
            if start >= len(items):
                break
            if ahead is not None:
                chunk, ahead = ahead, None
            else:
                chunk = chunks.validate(start)
        refusals.raise_first()
        if inserted:
            await db.notify(conn, db.JOBS_CHANNEL)
        count = await quotas.job_count(conn, namespace)
        quota_rules.check_jobs(quota, namespace=namespace, count=count)
    return ids


async def _check(
    conn: db.Connection,
    chunk: list[job_batch.NewJob],
    *,
    quota: quota_rules.Quota,
    stored: dict[str, tuple[JobId, bytes]],
    refusals: _Refusals,
    namespace: str,
    now: datetime,
) -> None:
    """Records the chunk's first refusal of each kind not yet found."""
    if refusals.rate is None:
        try:
            for job in chunk:
                quota_rules.check_rate(
                    quota, namespace=namespace, schedule=job.spec.schedule, now=now
                )
        except quota_rules.QuotaExceeded as exc:
            refusals.rate = exc
    if refusals.binary is None and any(job.spec.task.binary for job in chunk):
        # A round trip, waiting for the chunks in flight: only for batches with binaries.
        try:
            await jobs.check_binary(conn, [job.spec for job in chunk], namespace=namespace)
        except jobs.UnknownArtifact as exc:
            refusals.binary = exc
    if refusals.conflict is None and stored:
        try:
            job_batch.resolve((job for job in chunk if job.request_id in stored), stored)
        except jobs.RequestConflict as exc:
            refusals.conflict = exc
