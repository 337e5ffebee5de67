"""Prometheus metrics of a Leaderboard server, beside the core's (hourglass.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

events = Counter("hourglass_leaderboard_events_total", "Events recorded, by outcome.", ["outcome"])
rows = Counter(
    "hourglass_leaderboard_rows_total",
    "(bucket, key) counts written by ingests: events after per-batch aggregation.",
)
duplicates = Counter(
    "hourglass_leaderboard_duplicate_batches_total",
    "Batches retried with a batch id already recorded (counted once).",
)
stale = Counter(
    "hourglass_leaderboard_stale_buckets_total",
    "Redis copies of buckets found behind PostgreSQL, by where (apply: an ingest found the "
    "copy behind and dropped it; fetch: a query found it behind or missing and reloaded it).",
    ["where"],
)
loaded = Counter(
    "hourglass_leaderboard_loaded_buckets_total", "Buckets copied from PostgreSQL into Redis."
)
fallbacks = Counter(
    "hourglass_leaderboard_postgres_answers_total",
    "Queries answered from PostgreSQL because Redis could not answer.",
)
redis_errors = Counter("hourglass_leaderboard_redis_errors_total", "Calls to Redis that failed.")
rolled_up = Counter("hourglass_leaderboard_rolled_up_buckets_total", "Coarse buckets built.")
deleted = Counter(
    "hourglass_leaderboard_deleted_buckets_total", "Buckets deleted by the retention."
)
fetch_buckets = Histogram(
    "hourglass_leaderboard_fetch_buckets",
    "Buckets a FetchLeaderboard window was tiled with.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
latency = Histogram(
    "hourglass_leaderboard_request_seconds",
    "Leaderboard calls (gRPC and HTTP) by method and status code.",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
