"""The UrlShortener case: short links and pastes, read far more often than written.

A write service (gRPC: Shorten, CreatePaste, Delete, Stats, and the admin Purge and Rollup
that its ScheduledJobs call) and a read service (HTTP: GET /<key> redirects, GET /p/<key>
serves a paste), separate Deployments scaled apart. Keys are generated ahead of time from
id blocks leased from a PostgreSQL sequence through a keyed Feistel bijection (keys.py);
reads go through a near cache, Redis shards on a consistent-hash ring (ring.py, cache.py)
and PostgreSQL; visits are counted off the request path through a Redis stream, at least
once and applied once (visits.py); paste bodies live in the object store (blobs.py).
"""

from __future__ import annotations

from pathlib import Path

from hourglass.cases import Case
from hourglass.cases.shortener import spec
from hourglass.cases.shortener.objects import objects
from hourglass.cases.shortener.server import serve

CASE = Case(
    name="shortener",
    kind="UrlShortener",
    plural="urlshorteners",
    short_names=("url",),
    serve=serve,
    objects=objects,
    # schema.sql and migrations/: `hourglass serve` applies them into the resource's schema.
    migrations=Path(__file__).parent,
    http=True,
    spec_schema=spec.SCHEMA,
    columns=spec.COLUMNS,
    description="A URL shortener and paste bin: Shorten, CreatePaste; GET /<key> redirects.",
)
