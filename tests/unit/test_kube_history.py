"""Which finished Jobs of a ScheduledJob the executor deletes (kube_history), as a CronJob's
history limits would, and the pure parts of the adoption protocol (kube_adoption)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hourglass.domain import FencingToken, JobId, RunId, Task
from hourglass.workers.executors import kube_adoption, kube_history
from hourglass.workers.executors.base import AttemptContext


def _job(
    name: str,
    *,
    ended: str | None = None,
    failed: bool = False,
    reported: bool = True,
    fire: str = "",
    attempt: int = 1,
    deleting: bool = False,
) -> dict[str, Any]:
    annotations = {"hourglass.io/scheduled-at": fire} if fire else {}
    if reported:
        annotations["hourglass.io/reported-by-attempt"] = str(attempt)
    metadata: dict[str, Any] = {
        "name": name,
        "creationTimestamp": "2026-11-30T00:00:00Z",
        "labels": {"hourglass.io/attempt": str(attempt)},
        "annotations": annotations,
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-30T01:00:00Z"
    job: dict[str, Any] = {"metadata": metadata, "status": {}}
    if ended:
        kind = "Failed" if failed else "Complete"
        job["status"]["conditions"] = [
            {"type": kind, "status": "True", "lastTransitionTime": ended}
        ]
    return job


def _names(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["metadata"]["name"] for job in jobs]


def test_the_newest_of_each_outcome_are_kept_and_the_rest_deleted_oldest_first() -> None:
    jobs = [
        _job("ok-1", ended="2026-11-30T00:01:00Z"),
        _job("ok-2", ended="2026-11-30T00:02:00Z"),
        _job("ok-3", ended="2026-11-30T00:03:00Z"),
        _job("ok-4", ended="2026-11-30T00:04:00Z"),
        _job("bad-1", ended="2026-11-30T00:01:30Z", failed=True),
        _job("bad-2", ended="2026-11-30T00:02:30Z", failed=True),
    ]
    # The CronJob defaults: 3 succeeded, 1 failed.
    assert _names(kube_history.to_delete(jobs, successful=None, failed=None)) == [
        "ok-1",
        "bad-1",
    ]
    assert _names(kube_history.to_delete(jobs, successful=1, failed=0)) == [
        "ok-1",
        "bad-1",
        "ok-2",
        "bad-2",
        "ok-3",
    ]


def test_running_unreported_and_deleting_jobs_are_never_history() -> None:
    jobs = [
        _job("running"),
        _job("waiting-for-adoption", ended="2026-11-30T00:01:00Z", reported=False),
        _job("going", ended="2026-11-30T00:00:30Z", deleting=True),
        _job("done", ended="2026-11-30T00:02:00Z"),
    ]
    assert kube_history.to_delete(jobs, successful=0, failed=0) == [jobs[3]]


def test_jobs_that_ended_in_the_same_second_are_ordered_by_their_fire() -> None:
    same = "2026-11-30T00:01:00Z"
    newer = _job("b-newer", ended=same, fire="2026-11-30T00:00:59.900000+00:00")
    older = _job("z-older", ended=same, fire="2026-11-30T00:00:59.100000+00:00")
    assert kube_history.to_delete([newer, older], successful=1, failed=1) == [older]


def _attempt(token: int = 9, number: int = 3) -> AttemptContext:
    return AttemptContext(
        run_id=RunId(uuid.uuid4()),
        job_id=JobId(uuid.uuid4()),
        attempt=number,
        fencing_token=FencingToken(token),
        scheduled_at=datetime(2026, 11, 30, tzinfo=UTC),
        task=Task(command=("true",)),
        timeout=None,
        worker_id="w",
    )


def test_only_unreported_jobs_not_being_deleted_are_adoptable_newest_attempt_last() -> None:
    jobs = [
        _job("a2", reported=False, attempt=2),
        _job("a1", reported=True, attempt=1),
        _job("a3", reported=False, attempt=3, deleting=True),
        _job("a4", reported=False, attempt=4),
    ]
    assert _names(kube_adoption.adoptable(jobs)) == ["a2", "a4"]


def test_the_report_mark_is_written_only_while_the_job_carries_the_token() -> None:
    patch = kube_adoption.reported_patch(_attempt(token=9, number=3))
    assert patch == [
        {"op": "test", "path": "/metadata/annotations/hourglass.io~1fencing-token", "value": "9"},
        {
            "op": "add",
            "path": "/metadata/annotations/hourglass.io~1reported-by-attempt",
            "value": "3",
        },
    ]
    assert kube_adoption.adopt_patch(_attempt(token=12)) == {
        "metadata": {"annotations": {"hourglass.io/fencing-token": "12"}}
    }
