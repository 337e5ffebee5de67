"""What a ScheduledJob's status says at a glance, decided from the job and its recent runs:
the fields behind the printer columns, and whether the resource is Ready.

Plain functions on plain data, tested without a cluster.

- LAST RESULT is the latest *finished* run: a run waiting for its retry is queued, not a
  result, so it never shows there (the ACTIVE column counts it).
- Ready turns False with reason RunsFailing when the last FAILING_RUNS finished runs all
  failed or timed out; one success turns it back.
- When the API cannot be asked, the next fire is unknown: it is cleared rather than left
  to go stale in the past, and Ready is False with reason ApiUnavailable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hourglass.operator import resources
from hourglass.v1 import scheduler_pb2 as pb

# How many finished runs in a row must fail before Ready turns False.
FAILING_RUNS = 3
FINISHED = (
    pb.RUN_STATE_SUCCEEDED,
    pb.RUN_STATE_FAILED,
    pb.RUN_STATE_TIMED_OUT,
    pb.RUN_STATE_CANCELLED,
)
FAILURES = (pb.RUN_STATE_FAILED, pb.RUN_STATE_TIMED_OUT)
ACTIVE = (pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING)
# Ready reasons that a reconcile of the spec sets and only a new reconcile may clear: the
# refresh timer leaves them alone.
SPEC_REASONS = frozenset({"InvalidSpec", "Conflict", "Rejected"})


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str


def finished(runs: Iterable[pb.Run]) -> list[pb.Run]:
    """The runs that ran to an end, latest first (by when they ended)."""
    done = [run for run in runs if run.state in FINISHED and run.HasField("finished_at")]
    done.sort(key=lambda run: (run.finished_at.ToNanoseconds(), run.id), reverse=True)
    return done


def summary(response: pb.GetJobStatusResponse) -> dict[str, Any]:
    """The status fields that mirror the job and its runs; None clears a field in a merge
    patch. `response.recent_runs` comes newest fire first, as GetJobStatus returns it."""
    job = response.job
    runs = list(response.recent_runs)
    scheduled = [run for run in runs if run.state != pb.RUN_STATE_SKIPPED]
    done = finished(runs)
    succeeded = [run for run in done if run.state == pb.RUN_STATE_SUCCEEDED]
    return {
        "jobId": job.id,
        "state": resources.state_name(job.state, "job"),
        "schedule": resources.describe_schedule(job.spec.schedule),
        "nextFireAt": resources.rfc3339(job.next_fire_at) if job.HasField("next_fire_at") else None,
        "missedFires": job.missed_fires,
        "active": sum(1 for run in runs if run.state in ACTIVE),
        "lastScheduleTime": resources.rfc3339(scheduled[0].scheduled_at) if scheduled else None,
        "lastResult": resources.state_name(done[0].state) if done else None,
        "lastSuccessfulTime": (resources.rfc3339(succeeded[0].finished_at) if succeeded else None),
        "lastRun": resources.run_status(runs[0]) if runs else None,
    }


def health(runs: Iterable[pb.Run], *, job_id: str, state: int) -> Readiness:
    """Ready, unless the latest FAILING_RUNS finished runs all failed, or the job was
    cancelled (only a forced CancelJob does that to a managed job, and nothing undoes it)."""
    if state == pb.JOB_STATE_CANCELLED:
        return Readiness(
            False,
            "JobCancelled",
            f"job {job_id} was cancelled and will not fire again; delete and re-apply the"
            " ScheduledJob to schedule a new job",
        )
    done = finished(runs)[:FAILING_RUNS]
    if len(done) == FAILING_RUNS and all(run.state in FAILURES for run in done):
        latest = done[0]
        return Readiness(
            False,
            "RunsFailing",
            f"the last {FAILING_RUNS} runs of job {job_id} failed; the latest,"
            f" {resources.run_message(latest)}",
        )
    if state == pb.JOB_STATE_PAUSED:
        return Readiness(True, "Suspended", f"job {job_id} is paused: spec.suspend is true")
    return Readiness(True, "Scheduled", f"job {job_id} runs the current spec")


def refreshed(
    current: Mapping[str, Any] | None, readiness: Readiness, *, generation: int
) -> Readiness | None:
    """The Ready a refresh should write, or None to leave the condition as it is: a spec the
    API refused for this generation stays refused until the spec changes."""
    if (
        current is not None
        and current.get("reason") in SPEC_REASONS
        and current.get("observedGeneration") == generation
    ):
        return None
    return readiness


def api_unavailable(error: str) -> tuple[dict[str, Any], Readiness]:
    """What a refresh writes when GetJobStatus failed: no next fire it cannot vouch for."""
    return (
        {"nextFireAt": None},
        Readiness(False, "ApiUnavailable", f"the hourglass API did not answer: {error}"),
    )


def ready_of(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            found: Mapping[str, Any] = condition
            return found
    return None
