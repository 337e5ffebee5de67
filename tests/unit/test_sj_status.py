"""What a ScheduledJob's status says at a glance (operator/sj_status.py), from plain
messages: no cluster, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.operator import sj_status
from hourglass.v1 import scheduler_pb2 as pb

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(T0 + timedelta(seconds=seconds))
    return message


def run(number: int, state: int, *, finished: bool = True, attempt: int = 1) -> pb.Run:
    message = pb.Run(id=f"r{number}", state=state, attempt=attempt, scheduled_at=_at(number * 60))
    if finished:
        message.finished_at.CopyFrom(_at(number * 60 + 5))
    return message


def response(*runs: pb.Run, state: int = pb.JOB_STATE_ACTIVE) -> pb.GetJobStatusResponse:
    job = pb.Job(id="j1", state=state, revision=1)
    job.spec.schedule.every.interval.FromSeconds(60)
    job.next_fire_at.CopyFrom(_at(3600))
    newest_first = sorted(runs, key=lambda r: r.scheduled_at.ToNanoseconds(), reverse=True)
    return pb.GetJobStatusResponse(job=job, recent_runs=newest_first)


def test_last_result_is_the_latest_finished_run_never_one_waiting_for_its_retry() -> None:
    retrying = run(3, pb.RUN_STATE_QUEUED, finished=False, attempt=2)
    status = sj_status.summary(
        response(run(1, pb.RUN_STATE_SUCCEEDED), run(2, pb.RUN_STATE_FAILED), retrying)
    )
    assert status["lastResult"] == "failed"
    assert status["active"] == 1
    assert status["lastScheduleTime"] == "2030-01-01T00:03:00Z"
    assert status["lastSuccessfulTime"] == "2030-01-01T00:01:05Z"
    assert status["lastRun"]["state"] == "queued"
    assert status["nextFireAt"] == "2030-01-01T01:00:00Z"
    assert status["schedule"] == "every 1m"


def test_no_runs_leave_the_columns_empty_not_wrong() -> None:
    status = sj_status.summary(response())
    assert status["lastResult"] is None and status["lastScheduleTime"] is None
    assert status["active"] == 0


def test_a_skipped_fire_is_no_result_and_no_schedule() -> None:
    status = sj_status.summary(
        response(run(1, pb.RUN_STATE_SUCCEEDED), run(2, pb.RUN_STATE_SKIPPED))
    )
    assert status["lastResult"] == "succeeded"
    assert status["lastScheduleTime"] == "2030-01-01T00:01:00Z"


def test_runs_that_keep_failing_make_it_not_ready_and_one_success_heals_it() -> None:
    failing = [
        run(1, pb.RUN_STATE_FAILED),
        run(2, pb.RUN_STATE_TIMED_OUT),
        run(3, pb.RUN_STATE_FAILED),
    ]
    verdict = sj_status.health(failing, job_id="j1", state=pb.JOB_STATE_ACTIVE)
    assert (verdict.ready, verdict.reason) == (False, "RunsFailing")
    assert "the last 3 runs of job j1 failed" in verdict.message and "r3" in verdict.message
    healed = sj_status.health([*failing, run(4, pb.RUN_STATE_SUCCEEDED)], job_id="j1", state=1)
    assert (healed.ready, healed.reason) == (True, "Scheduled")


def test_two_failures_or_a_failure_between_successes_is_not_yet_failing() -> None:
    assert sj_status.health(
        [run(1, pb.RUN_STATE_FAILED), run(2, pb.RUN_STATE_FAILED)], job_id="j", state=1
    ).ready
    mixed = [
        run(1, pb.RUN_STATE_FAILED),
        run(2, pb.RUN_STATE_SUCCEEDED),
        run(3, pb.RUN_STATE_FAILED),
    ]
    assert sj_status.health(mixed, job_id="j", state=1).ready
    # A retry in flight does not count as a third failure.
    waiting = [
        run(1, pb.RUN_STATE_FAILED),
        run(2, pb.RUN_STATE_FAILED),
        run(3, pb.RUN_STATE_QUEUED, finished=False),
    ]
    assert sj_status.health(waiting, job_id="j", state=1).ready


def test_a_suspended_or_cancelled_job_says_so() -> None:
    paused = sj_status.health([], job_id="j1", state=pb.JOB_STATE_PAUSED)
    assert (paused.ready, paused.reason) == (True, "Suspended")
    cancelled = sj_status.health([], job_id="j1", state=pb.JOB_STATE_CANCELLED)
    assert (cancelled.ready, cancelled.reason) == (False, "JobCancelled")


def test_a_refused_spec_holds_until_the_spec_changes() -> None:
    ok = sj_status.Readiness(True, "Scheduled", "")
    refused = {"type": "Ready", "status": "False", "reason": "InvalidSpec", "observedGeneration": 2}
    assert sj_status.refreshed(refused, ok, generation=2) is None
    assert sj_status.refreshed(refused, ok, generation=3) == ok
    failing = {**refused, "reason": "RunsFailing"}
    assert sj_status.refreshed(failing, ok, generation=2) == ok


def test_an_unreachable_api_clears_the_next_fire() -> None:
    fields, readiness = sj_status.api_unavailable("UNAVAILABLE: connection refused")
    assert fields == {"nextFireAt": None}
    assert (readiness.ready, readiness.reason) == (False, "ApiUnavailable")
