"""What a ListRunsRequest asks for, checked: which runs (job, id prefix, window of fire times),
how much of each (the view) and how many. Pure, so the rules are unit-tested without a
server; the service adds the caller's namespace and the page token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from hourglass.api import validation
from hourglass.domain import JobId
from hourglass.v1 import scheduler_pb2 as pb

DEFAULT_PAGE = 50
MAX_FULL_PAGE = 500
# A summary carries no attempts and no output tails, so a page may hold a picture's worth
# (the console's Runs page draws up to 20,000 runs) and stay far below gRPC's 4 MiB.
MAX_SUMMARY_PAGE = 10_000
_VIEWS = frozenset(pb.RunView.values())


@dataclass(frozen=True)
class RunQuery:
    job_id: JobId | None
    ids: tuple[uuid.UUID, uuid.UUID] | None
    start: datetime | None
    end: datetime | None
    summary: bool
    limit: int


def parse(request: pb.ListRunsRequest) -> RunQuery:
    """The request's filters; validation.Invalid naming the first bad field."""
    if request.view not in _VIEWS:
        raise validation.Invalid("view", f"unknown value {request.view}")
    summary = request.view == pb.RUN_VIEW_SUMMARY
    ids = validation.id_range(request.id_prefix)
    has_start, has_end = request.HasField("from"), request.HasField("to")
    start = validation.timestamp(getattr(request, "from"), "from") if has_start else None
    end = validation.timestamp(request.to, "to") if has_end else None
    if start is not None and end is not None and end < start:
        raise validation.Invalid("to", "must not be before from")
    job_id = None
    if request.job_id or (ids is None and start is None and end is None):
        job_id = validation.job_id(request.job_id)
    limit = validation.page_size(
        request.page_size,
        default=DEFAULT_PAGE,
        maximum=MAX_SUMMARY_PAGE if summary else MAX_FULL_PAGE,
    )
    return RunQuery(job_id=job_id, ids=ids, start=start, end=end, summary=summary, limit=limit)
