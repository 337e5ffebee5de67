"""What the gRPC and HTTP faces share: validate a batch, append it to the broker (durable
when this returns), and read back. A refused batch never reaches the broker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hourglass.cases.metrics import jobs, metrics, query, spec, validation
from hourglass.cases.metrics.broker import Broker
from hourglass.cases.metrics.consumer import Consumer
from hourglass.cases.metrics.files import Files
from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.clock import Clock
from hourglass.store import db

Pairs = Sequence[tuple[str, str]]
# Broker entries not yet in files beyond which senders are told to back off: Redis keeps the
# stream in memory, so an ingest rate the consumers cannot follow must not fill it.
MAX_BACKLOG = 2_000  # entries: 160 MB of Redis memory at 5,000-point batches
BACKLOG_EVERY = 0.5  # seconds between two looks at the backlog


class Backlogged(Exception):
    """The consumers are behind: the sender should retry later (RESOURCE_EXHAUSTED, 503)."""


@dataclass
class Pipeline:
    spec: spec.Spec
    broker: Broker
    pool: db.Pool
    files: Files
    clock: Clock
    writer: Consumer
    max_backlog: int = MAX_BACKLOG
    _looked: float = field(default=0.0, repr=False)
    _backlog: int = field(default=0, repr=False)

    async def admit(self) -> None:
        """Backlogged when the broker holds more than max_backlog unapplied entries."""
        now = time.monotonic()
        if now - self._looked > BACKLOG_EVERY:
            self._backlog = await self.broker.backlog()
            self._looked = now
        if self._backlog > self.max_backlog:
            raise Backlogged(
                f"{self._backlog} batches wait for the consumers (at most {self.max_backlog});"
                " retry later"
            )

    def now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    def window(self) -> validation.Window:
        return validation.Window.at(self.now_ms(), self.spec.retention)

    async def send_points(
        self, series: Sequence[tuple[Pairs, Sequence[int], Sequence[float]]]
    ) -> int:
        labelled, total = validation.check_points(series, self.window())
        await self.admit()
        batch = pb.Batch(
            series=[
                pb.Series(
                    labels=[pb.Label(name=n, value=v) for n, v in labels],
                    timestamps_ms=stamps,
                    values=values,
                )
                for labels, (_, stamps, values) in zip(labelled, series, strict=True)
            ]
        )
        await self.broker.append(batch.SerializeToString(), total)
        metrics.accepted.labels("points").inc(total)
        return total

    async def send_request(self, request: pb.SendMetricsRequest) -> int:
        """The gRPC path: the request's series are checked in place and appended as they
        came (label order aside: the consumer sorts), saving a copy of every point."""
        series = request.series
        validation.check_points(
            [([(lb.name, lb.value) for lb in s.labels], s.timestamps_ms, s.values) for s in series],
            self.window(),
        )
        total = sum(len(s.timestamps_ms) for s in series)
        await self.admit()
        await self.broker.append(pb.Batch(series=series).SerializeToString(), total)
        metrics.accepted.labels("points").inc(total)
        return total

    async def send_logs(self, streams: Sequence[tuple[Pairs, Sequence[int], Sequence[str]]]) -> int:
        labelled, total = validation.check_logs(streams, self.window())
        await self.admit()
        batch = pb.Batch(
            streams=[
                pb.LogStream(
                    labels=[pb.Label(name=n, value=v) for n, v in labels],
                    timestamps_ns=stamps,
                    lines=lines,
                )
                for labels, (_, stamps, lines) in zip(labelled, streams, strict=True)
            ]
        )
        await self.broker.append(batch.SerializeToString(), total)
        metrics.accepted.labels("logs").inc(total)
        return total

    async def fetch(
        self, *, selector: str, series_id: int, start: int, end: int, step: int
    ) -> tuple[list[query.Dataset], int]:
        query.check_range(start, end, step)
        picked = await query.pick(self.pool, "points", selector, series_id)
        return await query.fetch(
            self.pool, self.files, picked=picked, start=start, end=end, step=step,
            shards=self.spec.shards,
        )  # fmt: skip

    async def fetch_logs(
        self, *, selector: str, start_ns: int, end_ns: int, limit: int
    ) -> list[tuple[int, dict[str, str], list[int], list[str]]]:
        if end_ns < start_ns:
            raise validation.Invalid("end_ns", f"{end_ns} is before start_ns {start_ns}")
        if not 0 <= limit <= query.MAX_LOG_LINES:
            raise validation.Invalid("limit", f"must be between 0 and {query.MAX_LOG_LINES}")
        picked = await query.pick(self.pool, "logs", selector, 0)
        return await query.fetch_logs(
            self.pool, self.files, picked=picked, start_ns=start_ns, end_ns=end_ns,
            limit=limit or query.MAX_LOG_LINES, shards=self.spec.shards,
        )  # fmt: skip

    async def compact(self) -> jobs.Outcome:
        return await jobs.compact(self.pool, self.files, self.writer)

    async def downsample(self) -> int:
        return await jobs.downsample(self.pool, self.files, self.writer, now_ms=self.now_ms())

    async def retention(self) -> tuple[int, int]:
        return await jobs.retention(
            self.pool, self.files, now_ms=self.now_ms(), retention_s=self.spec.retention,
            rollup_retention_s=self.spec.rollup_retention,
        )  # fmt: skip
