"""Garbage collection of chunks: mark, then sweep, safe against commits and uploads running
at the same time.

- Mark (PostgreSQL): delete the chunk rows that no version refers to (`refs = 0`) and that
  nobody touched within the spec's gcGrace. A commit raises `refs` with an UPDATE of the same
  rows in the statement that checks they exist, so the two serialise on the row: either the
  DELETE runs first (the commit then finds the chunk unknown, refuses, and the client sends
  it again) or it waits for the commit and skips the row. The grace keeps chunks that a
  client has just sent (or been told it need not send) for the commit that follows.
- Sweep (object store): a digest's bytes are deleted only when no workspace holds a row for
  it, checked under the digest's exclusive advisory lock. PutChunk holds the same lock shared
  from before it writes the bytes until its row is committed, so the sweep never deletes
  bytes a row is about to name. The sweep also finds objects with no row at all (a put that
  failed after writing, a refused batch) by listing the store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from hourglass.cases.filesync import blobs, metrics, store
from hourglass.cases.filesync.files import Files
from hourglass.store import db

BATCH = 1000


@dataclass(frozen=True, slots=True)
class Collected:
    forgotten: int
    deleted: int


async def collect(files: Files) -> Collected:
    cutoff = files.now() - timedelta(seconds=files.spec.gc_grace)
    doomed: set[str] = set()
    while True:
        batch = await _mark(files, cutoff)
        doomed.update(batch)
        metrics.collected.labels("forgotten").inc(len(batch))
        if len(batch) < BATCH:
            break
    deleted = 0
    objects = files.blob_store
    if objects is None:
        return Collected(len(doomed), 0)
    async with files.pool.connection() as conn:
        held = await store.held_digests(conn)
    listed = {name.partition(":")[2] for name in await objects.list()}
    for digest in sorted((doomed & listed) | (listed - held)):
        async with db.transaction(files.pool) as conn:
            await store.lock_digest(conn, digest, shared=False)
            if await store.digest_held(conn, digest):
                continue
            await objects.delete(blobs.name(digest))
            deleted += 1
    metrics.collected.labels("deleted").inc(deleted)
    return Collected(len(doomed), deleted)


async def _mark(files: Files, cutoff: datetime) -> list[str]:
    for attempt in range(5):
        try:
            async with db.transaction(files.pool) as conn:
                return await store.forget_unreferenced(conn, cutoff, BATCH)
        except store.RETRY_ERRORS:
            if attempt == 4:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")
