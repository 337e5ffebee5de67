"""ListRuns' request rules (which runs, which view, how many) and the summary's timestamps,
without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.api import convert, run_queries, validation
from hourglass.v1 import scheduler_pb2 as pb

JOB = "3f2b8c1e-0000-4000-8000-000000000001"
START = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)


def _request(**fields: object) -> pb.ListRunsRequest:
    start = fields.pop("start", None)
    end = fields.pop("end", None)
    request = pb.ListRunsRequest(**fields)  # type: ignore[arg-type]
    if isinstance(start, datetime):
        getattr(request, "from").FromDatetime(start)
    if isinstance(end, datetime):
        request.to.FromDatetime(end)
    return request


def test_a_window_without_a_job_lists_the_callers_runs() -> None:
    query = run_queries.parse(_request(start=START, view=pb.RUN_VIEW_SUMMARY))
    assert query.job_id is None and query.start == START and query.end is None
    assert query.summary and query.limit == run_queries.DEFAULT_PAGE
    query = run_queries.parse(_request(end=START))
    assert query.job_id is None and query.end == START and not query.summary
    # The window's ends may be one instant.
    one = run_queries.parse(_request(job_id=JOB, start=START, end=START, page_size=10))
    assert str(one.job_id) == JOB and one.start == one.end == START and one.limit == 10


def test_without_a_window_or_prefix_the_job_is_still_required() -> None:
    with pytest.raises(validation.Invalid, match=r"^job_id: is required$"):
        run_queries.parse(_request(view=pb.RUN_VIEW_SUMMARY))
    assert run_queries.parse(_request(id_prefix="3f2b")).job_id is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"view": 3}, "view: unknown value 3"),
        ({"view": -1}, "view: unknown value -1"),
        (
            {"start": START, "end": START - timedelta(microseconds=1)},
            "to: must not be before from",
        ),
        ({"job_id": JOB, "page_size": 501}, "page_size: must be at most 500"),
        (
            {"job_id": JOB, "page_size": 10_001, "view": pb.RUN_VIEW_SUMMARY},
            "page_size: must be at most 10000",
        ),
        ({"job_id": JOB, "page_size": -1}, "page_size: must not be negative"),
        ({"job_id": "nope", "start": START}, "job_id: "),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(validation.Invalid) as raised:
        run_queries.parse(_request(**fields))
    assert str(raised.value).startswith(message)


def test_a_bad_instant_names_its_end() -> None:
    request = _request(job_id=JOB)
    getattr(request, "from").nanos = 1_000_000_000
    with pytest.raises(validation.Invalid, match=r"^from.nanos: "):
        run_queries.parse(request)
    request = _request(job_id=JOB)
    request.to.seconds = -(10**12)
    with pytest.raises(validation.Invalid, match=r"^to: must be from "):
        run_queries.parse(request)


def test_a_summary_page_may_hold_a_pictures_worth() -> None:
    query = run_queries.parse(_request(job_id=JOB, page_size=10_000, view=pb.RUN_VIEW_SUMMARY))
    assert query.limit == 10_000
    assert run_queries.parse(_request(job_id=JOB, page_size=500)).limit == 500


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_summary_timestamps_are_what_from_datetime_sets(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert Timestamp(**convert.stamp_fields(moment)) == expected  # type: ignore[arg-type]
    assert convert.stamp_fields(None) is None
