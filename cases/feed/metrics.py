"""Prometheus metrics of a Feed server, beside the core's (hourglass.metrics).

Fan-out lag is the one operators watch: how long after a post was made its id reached its
followers' timelines (`hourglass_feed_fanout_lag_seconds`, per lane), and how much is still
queued (`hourglass_feed_fanout_backlog`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

posts = Counter("hourglass_feed_posts_total", "Posts created.")
inserts = Counter(
    "hourglass_feed_timeline_inserts_total",
    "Post ids written into (or removed from) home timelines by the fan-out, by lane.",
    ["lane"],
)
lag = Histogram(
    "hourglass_feed_fanout_lag_seconds",
    "From a post's creation (its id's time) to a fan-out step writing it into timelines, by"
    " lane (small: authors with at most one chunk of followers; big: the others).",
    ["lane"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
backlog = Gauge(
    "hourglass_feed_fanout_backlog", "Fan-out stream entries not yet done, by lane.", ["lane"]
)
redelivered = Counter(
    "hourglass_feed_fanout_redelivered_total",
    "Fan-out entries claimed from a consumer that stalled or died (XAUTOCLAIM).",
)
rebuilt = Counter(
    "hourglass_feed_timelines_rebuilt_total",
    "Home timelines built from PostgreSQL, by why (read: Redis lost it or never had it;"
    " prewarm: the prewarm job).",
    ["why"],
)
hot_merges = Counter(
    "hourglass_feed_hot_merges_total", "Hot authors' post lists merged into timelines on read."
)
refused = Counter("hourglass_feed_refused_total", "Requests refused, by field.", ["field"])
latency = Histogram(
    "hourglass_feed_request_seconds",
    "Feed calls by method and status code.",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
