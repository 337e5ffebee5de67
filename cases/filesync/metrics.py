"""Prometheus metrics of a FileSync server, beside the core's (hourglass.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

chunks = Counter(
    "hourglass_filesync_chunks_total",
    "Chunks received by PutChunk, by whether the object store already held their bytes.",
    ["outcome"],
)
chunk_bytes = Counter("hourglass_filesync_chunk_bytes_total", "Bytes received by PutChunk.")
commits = Counter(
    "hourglass_filesync_commits_total", "Versions asked for, by outcome (committed, conflict).",
    ["outcome"],
)  # fmt: skip
refused = Counter(
    "hourglass_filesync_refused_total", "Requests refused as bad input, by field.", ["field"]
)
collected = Counter(
    "hourglass_filesync_collected_total",
    "What the garbage collector removed: chunk rows (forgotten) and objects (deleted).",
    ["what"],
)
retained = Counter(
    "hourglass_filesync_versions_deleted_total", "Old versions deleted by the retention."
)
watchers = Counter("hourglass_filesync_watch_streams_total", "WatchChanges streams opened.")
latency = Histogram(
    "hourglass_filesync_request_seconds",
    "FileSync calls (gRPC and HTTP) by method and status code.",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
