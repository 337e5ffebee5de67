"""The Leaderboard case: the top k event keys of any event type over any time window, exact.

Events are counted per batch into one-minute buckets in PostgreSQL (the truth), and a
ScheduledJob rolls those up into coarser buckets (10m, 1h, 6h, 1d, 7d by default); a window
is tiled with the fewest aligned buckets (buckets.decompose) and answered from their Redis
sorted sets with the threshold algorithm (cache.py), never from raw events. See board.py for
how Redis stays exact against PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from hourglass.cases import Case
from hourglass.cases.leaderboard import spec
from hourglass.cases.leaderboard.objects import objects
from hourglass.cases.leaderboard.server import serve

CASE = Case(
    name="leaderboard",
    kind="Leaderboard",
    plural="leaderboards",
    short_names=("lb",),
    serve=serve,
    objects=objects,
    # schema.sql and migrations/: `hourglass serve` applies them into the resource's schema.
    migrations=Path(__file__).parent,
    http=True,
    spec_schema=spec.SCHEMA,
    columns=spec.COLUMNS,
    description="A top-K leaderboard service: RecordEvents, FetchLeaderboard(k, start, end).",
)
