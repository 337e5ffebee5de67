"""ListRuns over a window of fire times, in full or as summaries: the console's Runs page
draws every job's runs of a window from one call, and must see the same runs as a client that
reads them in full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hourglass.domain import FencingToken, Outcome, RunState
from hourglass.policies import Requeue
from hourglass.store import claims, db, results
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.integration.test_api import every, snapshot

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


async def _backfilled(stub: pb_grpc.JobSchedulerStub, name: str) -> str:
    """A paused job firing every minute, with a queued run for each minute of two hours."""
    request = every(60, overlap=pb.OVERLAP_POLICY_ALLOW)
    request.spec.name = name
    request.spec.schedule.start.FromDatetime(NOW - timedelta(hours=3))
    job_id: str = (await stub.ScheduleJob(request)).job_id
    await stub.PauseJob(pb.PauseJobRequest(job_id=job_id))
    backfill = pb.BackfillRequest(job_id=job_id)
    getattr(backfill, "from").FromDatetime(NOW - timedelta(hours=2))
    backfill.to.FromDatetime(NOW - timedelta(minutes=1))
    await stub.Backfill(backfill)
    return job_id


async def _run_some(pool: db.Pool) -> None:
    """Six runs get an attempt: two succeed, two fail and go back to the queue for a second
    attempt (started_at unset again), two keep running."""
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        queued = await claims.lock_queued(conn, limit=6, now=now)
        held = [(run, FencingToken(100 + n)) for n, run in enumerate(queued)]
        starting = {run.id for run, _ in held}
        await claims.mark_running(conn, held=held, starting=starting, worker_id="w", now=now)
    assert len(held) == 6
    async with db.transaction(pool) as conn:
        for n, (run, token) in enumerate(held[:4]):
            state = RunState.SUCCEEDED if n < 2 else RunState.FAILED
            await results.finish(
                conn,
                run_id=run.id,
                attempt=run.attempt,
                token=token,
                outcome=Outcome(state=state, exit_code=n, stdout_tail="x" * 100, finished_at=now),
                requeue=Requeue(at=None if n < 2 else now + timedelta(hours=1)),
                now=now,
            )


async def _every_page(stub: pb_grpc.JobSchedulerStub, request: pb.ListRunsRequest) -> list[pb.Run]:
    found: list[pb.Run] = []
    while True:
        answer = await stub.ListRuns(request)
        found.extend(answer.runs)
        if not answer.next_page_token:
            return found
        request.page_token = answer.next_page_token


def _window(view: int, *, job_id: str = "", page_size: int = 7) -> pb.ListRunsRequest:
    request = pb.ListRunsRequest(job_id=job_id, page_size=page_size, view=view)  # type: ignore[arg-type]
    getattr(request, "from").FromDatetime(NOW - timedelta(minutes=100))
    request.to.FromDatetime(NOW - timedelta(minutes=30))
    return request


def _without_details(run: pb.Run) -> pb.Run:
    """What a summary carries of a full run."""
    summary = pb.Run()
    summary.CopyFrom(run)
    summary.ClearField("attempts")
    summary.ClearField("reason")
    summary.ClearField("created_at")
    return summary


async def test_a_summary_window_lists_the_same_runs_as_full(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    first = await _backfilled(stub, "first")
    second = await _backfilled(stub, "second")
    theirs = await _backfilled(stub, "theirs")
    async with pool.connection() as conn:
        # The six runs claimed are the oldest of the window.
        await conn.execute(
            "UPDATE runs SET available_at = scheduled_at - interval '1 day'"
            " WHERE job_id = ANY(%s) AND scheduled_at >= %s",
            ([first, second], NOW - timedelta(minutes=100)),
        )
    await _run_some(pool)
    async with pool.connection() as conn:
        await conn.execute("UPDATE runs SET namespace = 'other' WHERE job_id = %s", (theirs,))

    full = await _every_page(stub, _window(pb.RUN_VIEW_FULL))
    summaries = await _every_page(stub, _window(pb.RUN_VIEW_SUMMARY))
    # Both jobs of the caller, none of another namespace's; the 71 minutes of the window of
    # each job, its ends included; newest fire first.
    assert len(full) == 2 * 71
    assert {run.job_id for run in full} == {first, second}
    fired = [run.scheduled_at.ToDatetime(tzinfo=UTC) for run in full]
    assert max(fired) == NOW - timedelta(minutes=30) and min(fired) == NOW - timedelta(minutes=100)
    order = [(r.scheduled_at.seconds, r.id) for r in full]
    assert order == sorted(order, reverse=True)
    # The same runs, in the same order, with every field but attempts, reason and created_at.
    assert [_without_details(run) for run in full] == summaries
    assert not any(run.attempts for run in summaries)
    # started_at is the current attempt's start: set while running or done, unset while a
    # failed run waits for its second attempt.
    tried = [run for run in full if run.attempts]
    assert len(tried) == 6
    for run in tried:
        current = [a for a in run.attempts if a.number == run.attempt]
        assert run.HasField("started_at") == bool(current)
        if current:
            assert run.started_at == current[0].started_at
    # One job's window, in either view.
    one = await _every_page(stub, _window(pb.RUN_VIEW_SUMMARY, job_id=first, page_size=10_000))
    assert one == [run for run in summaries if run.job_id == first]


async def test_every_claimed_run_shows_its_start_in_both_views(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool
) -> None:
    job_id = await _backfilled(stub, "one")
    await _run_some(pool)
    request = pb.ListRunsRequest(job_id=job_id, page_size=500)
    full = await _every_page(stub, request)
    request = pb.ListRunsRequest(job_id=job_id, page_size=500, view=pb.RUN_VIEW_SUMMARY)
    summaries = await _every_page(stub, request)
    assert [_without_details(run) for run in full] == summaries
    states = sorted(run.state for run in summaries if run.attempt > 1 or run.HasField("started_at"))
    assert states == sorted(
        [pb.RUN_STATE_SUCCEEDED] * 2 + [pb.RUN_STATE_QUEUED] * 2 + [pb.RUN_STATE_RUNNING] * 2
    )
    waiting = [run for run in summaries if run.attempt == 2]
    assert len(waiting) == 2 and not any(run.HasField("started_at") for run in waiting)
    assert all(run.HasField("started_at") for run in summaries if run.state != pb.RUN_STATE_QUEUED)


def _bad(field: str, value: object) -> pb.ListRunsRequest:
    request = pb.ListRunsRequest()
    later, earlier = NOW, NOW - timedelta(hours=1)
    if field == "view":
        request.view = value  # type: ignore[assignment]
    elif field == "to":
        getattr(request, "from").FromDatetime(later)
        request.to.FromDatetime(earlier)
    elif field == "from.nanos":
        getattr(request, "from").nanos = -1
    elif field == "page_size":
        getattr(request, "from").FromDatetime(earlier)
        request.page_size, request.view = value  # type: ignore[misc]
    return request


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("view", 7, "view: unknown value 7"),
        ("to", None, "to: must not be before from"),
        ("from.nanos", None, "from.nanos: must be between 0 and 999999999"),
        ("page_size", (501, pb.RUN_VIEW_FULL), "page_size: must be at most 500"),
        ("page_size", (10_001, pb.RUN_VIEW_SUMMARY), "page_size: must be at most 10000"),
    ],
)
async def test_bad_window_fields_are_invalid_argument_naming_the_field(
    stub: pb_grpc.JobSchedulerStub, pool: db.Pool, field: str, value: object, reason: str
) -> None:
    await _backfilled(stub, "one")
    before = await snapshot(pool)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListRuns(_bad(field, value))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == reason
    assert await snapshot(pool) == before
