"""Reading an attempt's outcome from its Job and pod, as the API server returns them."""

from __future__ import annotations

from typing import Any

from hourglass.domain import RunState
from hourglass.workers.executors.kube_status import (
    attempt_of,
    exit_code,
    final_condition,
    outcome,
    pointer,
    reported,
)


def _job(conditions: list[dict[str, str]], **metadata: Any) -> dict[str, Any]:
    return {"metadata": metadata, "status": {"conditions": conditions}}


def test_a_job_has_ended_only_on_a_true_complete_or_failed_condition() -> None:
    assert final_condition(_job([])) is None
    assert final_condition(_job([{"type": "SuccessCriteriaMet", "status": "True"}])) is None
    assert final_condition(_job([{"type": "Failed", "status": "False"}])) is None
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}
    assert final_condition(_job([failed])) == ("Failed", "DeadlineExceeded", "m")
    assert final_condition(_job([{"type": "Complete", "status": "True"}])) == ("Complete", "", "")


def test_the_exit_code_is_the_task_containers_and_a_failed_fetch_is_named() -> None:
    assert exit_code(None) == (None, "")
    pod = {
        "status": {
            "initContainerStatuses": [
                {"name": "fetch", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
            ],
            "containerStatuses": [
                {"name": "sidecar", "state": {"terminated": {"exitCode": 9}}},
                {"name": "task", "lastState": {"terminated": {"exitCode": 3}}},
            ],
        }
    }
    assert exit_code(pod) == (3, "init container fetch exited 1 (Error)")


def test_reported_jobs_and_attempt_order() -> None:
    assert not reported(_job([], annotations={"hourglass.io/fencing-token": "1"}))
    assert reported(_job([], annotations={"hourglass.io/reported-by-attempt": "2"}))
    jobs = [
        _job([], labels={"hourglass.io/attempt": "10"}, creationTimestamp="a"),
        _job([], labels={"hourglass.io/attempt": "9"}, creationTimestamp="b"),
        _job([], labels={"hourglass.io/attempt": "x"}, creationTimestamp="c"),
    ]
    assert max(jobs, key=attempt_of) is jobs[0]
    assert pointer("hourglass.io/a~b") == "hourglass.io~1a~0b"
    assert outcome(RunState.FAILED, error="e").finished_at is not None
