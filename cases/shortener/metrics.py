"""Prometheus metrics of a UrlShortener's servers, beside the core's (hourglass.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

created = Counter("hourglass_shortener_created_total", "Keys created, by kind.", ["kind"])
refused = Counter("hourglass_shortener_refused_total", "Requests refused, by field.", ["field"])
answers = Counter(
    "hourglass_shortener_http_answers_total", "Read-service answers, by status code.", ["code"]
)
lookups = Counter(
    "hourglass_shortener_lookups_total",
    "Key lookups by where they were answered (near: the process; redis; postgres; range:"
    " a generated key beyond every id leased, unknown without asking anyone).",
    ["layer"],
)
cache_errors = Counter("hourglass_shortener_cache_errors_total", "Calls to Redis that failed.")
blocks = Counter("hourglass_shortener_key_blocks_total", "Id blocks leased from PostgreSQL.")
visits_queued = Counter(
    "hourglass_shortener_visits_queued_total", "Visits handed to the Redis stream."
)
visits_dropped = Counter(
    "hourglass_shortener_visits_dropped_total",
    "Visits dropped because Redis was away longer than the read server's buffer holds.",
)
visits_applied = Counter(
    "hourglass_shortener_visits_applied_total", "Visits applied to PostgreSQL by the drainer."
)
redelivered = Counter(
    "hourglass_shortener_redelivered_batches_total",
    "Visit batches claimed from a drainer that stopped before acknowledging them.",
)
purged = Counter("hourglass_shortener_purged_total", "Keys and blobs purged.", ["what"])
latency = Histogram(
    "hourglass_shortener_request_seconds",
    "Shortener calls (gRPC and HTTP) by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
batch_size = Histogram(
    "hourglass_shortener_commit_batch_keys",
    "New keys per group commit (one INSERT shared by concurrent Shorten and CreatePaste calls).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
