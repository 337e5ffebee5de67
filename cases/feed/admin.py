"""The admin calls the Feed's ScheduledJobs make (through `hourglass feed trim|prewarm`,
whose pods hold no credentials): trimming and compaction, and pre-warming the timelines of
the users active in the last day."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hourglass.cases.feed import store, timelines
from hourglass.cases.feed.feed import BODY_TTL, Feed
from hourglass.store import db


async def trim(feed: Feed) -> tuple[int, int, int]:
    """Caps every home timeline and drops stale unfollow markers (SCAN, so Redis keeps
    serving), purges posts deleted over BODY_TTL ago, and expires abandoned uploads."""
    trimmed = 0
    now_ms = time.time_ns() // 1_000_000
    async for key in feed.client.scan_iter(match=f"{feed.prefix}tl:*", count=500):
        removed = await feed.scripts["TRIM"](keys=[key], args=[feed.spec.timeline_size])
        markers: Any = await feed.client.zrangebylex(key, b"[\xfe", b"(\xff")
        stale = timelines.stale_markers(markers, now_ms=now_ms)
        if stale:
            await feed.client.zrem(key, *stale)
        trimmed += 1 if removed or stale else 0
    async with db.transaction(feed.pool) as conn:
        purged = await store.purge_deleted(
            conn, before=datetime.now(UTC) - timedelta(seconds=BODY_TTL)
        )
    expired = await feed.media.expire()
    return trimmed, purged, expired


async def prewarm(feed: Feed) -> tuple[int, int]:
    """Builds the timelines of the users active in the last day that Redis lacks."""
    since = datetime.now(UTC) - timedelta(days=1)
    built = active = after = 0
    while True:
        async with feed.pool.connection() as conn:
            users = await store.active_since(conn, since, after=after, limit=500)
        if not users:
            return built, active
        active += len(users)
        after = users[-1]
        async with feed.client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zscore(feed.tl(user), timelines.COMPLETE)
            present = await pipe.execute()
        for user, score in zip(users, present, strict=True):
            if score is None:
                await feed.materialize(feed.tl(user), user=user, home=True, why="prewarm")
                built += 1
