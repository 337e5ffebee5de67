"""What a Job and its pod say about an attempt: pure readers of the manifests the API server
returns, so the executor's decisions about an outcome need no server to test."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from hourglass.domain import Outcome, RunState
from hourglass.workers.executors.kube_manifests import (
    ATTEMPT_LABEL,
    REPORTED_ANNOTATION,
    TASK_CONTAINER,
    Manifest,
)


def pointer(key: str) -> str:
    """A JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def reported(job: Manifest) -> bool:
    return REPORTED_ANNOTATION in (job["metadata"].get("annotations") or {})


def attempt_of(job: Manifest) -> tuple[int, str]:
    labels = job["metadata"].get("labels") or {}
    try:
        number = int(labels.get(ATTEMPT_LABEL, "0"))
    except ValueError:
        number = 0
    return number, str(job["metadata"].get("creationTimestamp"))


def final_condition(job: Manifest) -> tuple[str, str, str] | None:
    """("Complete" or "Failed", reason, message) once the Job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return (
                str(condition["type"]),
                str(condition.get("reason") or ""),
                str(condition.get("message") or ""),
            )
    return None


def exit_code(pod: Manifest | None, task: str = TASK_CONTAINER) -> tuple[int | None, str]:
    """The exit code of container `task` (None if it has none), and a note when the init
    container that fetches a binary failed."""
    if pod is None:
        return None, ""
    status = pod.get("status") or {}
    init_failure = ""
    for container in status.get("initContainerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode"):
            init_failure = (
                f"init container {container.get('name')} exited {terminated['exitCode']}"
                + (f" ({terminated['reason']})" if terminated.get("reason") else "")
            )
    for container in status.get("containerStatuses") or []:
        if container.get("name") != task:
            continue
        for key in ("state", "lastState"):
            terminated = (container.get(key) or {}).get("terminated")
            if terminated and terminated.get("exitCode") is not None:
                return cast(int, terminated["exitCode"]), init_failure
    return None, init_failure


def outcome(
    state: RunState,
    *,
    exit_code: int | None = None,
    stdout_tail: str = "",
    error: str = "",
) -> Outcome:
    return Outcome(
        state=state,
        exit_code=exit_code,
        stdout_tail=stdout_tail,
        error=error,
        finished_at=datetime.now(UTC),
    )
