"""The MetricsPipeline case: metrics and log lines in, at least once, into columnar files.

Senders push batches over gRPC (SendMetrics, SendLogs) or the InfluxDB line protocol over
HTTP; a batch is answered once it is an entry of a Redis stream (append-only file fsynced
before Redis answers). Consumers (a consumer group, XAUTOCLAIM for a stopped consumer's
entries) write Parquet files per hour and series shard into the object store, with a live
1-minute rollup beside each, and register them in PostgreSQL with the label index. Reads
take raw points or the best rollup; ScheduledJobs compact, downsample (5m, 1h) and expire.
"""

from __future__ import annotations

from pathlib import Path

from hourglass.cases import Case
from hourglass.cases.metrics import spec
from hourglass.cases.metrics.objects import objects
from hourglass.cases.metrics.server import serve

CASE = Case(
    name="metrics",
    kind="MetricsPipeline",
    plural="metricspipelines",
    short_names=("mp",),
    serve=serve,
    objects=objects,
    # schema.sql and migrations/: `hourglass serve` applies them into the resource's schema.
    migrations=Path(__file__).parent,
    http=True,
    spec_schema=spec.SCHEMA,
    columns=spec.COLUMNS,
    description="Metrics and log ingestion: SendMetrics, line protocol push, FetchDataset.",
)
