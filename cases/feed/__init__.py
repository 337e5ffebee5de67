"""The Feed case: users, follows, posts with text and media, and home timelines.

Posts, users and follows live in PostgreSQL, hash-partitioned by user id (schema.sql); post
ids are Snowflake ids whose worker id each server leases from etcd (ids.py, workerid.py);
home timelines are capped sorted sets in Redis (timelines.py), filled by fan-out on write
through Redis streams, at least once, chunk by chunk so that no author waits behind another
(fanout.py), merged on read with the posts of hot authors, and rebuilt from PostgreSQL when
Redis lost them (feed.py). Media arrive through a resumable upload into the object store
(media.py). ScheduledJobs trim and compact, and pre-warm the timelines of active users.
"""

from __future__ import annotations

from pathlib import Path

from hourglass.cases import Case
from hourglass.cases.feed import spec
from hourglass.cases.feed.objects import objects
from hourglass.cases.feed.server import serve

CASE = Case(
    name="feed",
    kind="Feed",
    plural="feeds",
    short_names=("fd",),
    serve=serve,
    objects=objects,
    # schema.sql and migrations/: `hourglass serve` applies them into the resource's schema.
    migrations=Path(__file__).parent,
    http=False,
    spec_schema=spec.SCHEMA,
    columns=spec.COLUMNS,
    description="A news feed: CreatePost, Follow, GetHomeTimeline with fan-out on write.",
)
