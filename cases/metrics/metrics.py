"""Prometheus metrics of a MetricsPipeline's servers, beside the core's (hourglass.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

accepted = Counter(
    "hourglass_metrics_accepted_total", "Points and log lines made durable, by kind.", ["kind"]
)
refused = Counter("hourglass_metrics_refused_total", "Batches refused, by field.", ["field"])
applied = Counter(
    "hourglass_metrics_applied_total", "Points and log lines written to column files.", ["kind"]
)
redelivered = Counter(
    "hourglass_metrics_redelivered_entries_total",
    "Broker entries claimed from a consumer that stopped before acknowledging them.",
)
skipped = Counter(
    "hourglass_metrics_skipped_entries_total",
    "Broker entries delivered again after they were applied: acknowledged, not rewritten.",
)
files_written = Counter(
    "hourglass_metrics_files_written_total", "Column files written, by what wrote them.", ["by"]
)
ingest_lag = Gauge(
    "hourglass_metrics_ingest_lag_seconds",
    "From a batch's append to the broker to its files' registration, for the last batch"
    " a consumer applied.",
)
backlog = Gauge(
    "hourglass_metrics_broker_backlog_entries",
    "Broker entries not yet applied (pending or unread), as a consumer last measured it.",
)
latency = Histogram(
    "hourglass_metrics_request_seconds",
    "MetricsPipeline calls (gRPC and HTTP) by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
