"""Between the wire (hourglass.v1 messages) and the domain types."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.api import kube_task
from hourglass.domain import (
    Attempt,
    CatchUpPolicy,
    Job,
    JobSpec,
    JobState,
    Overlap,
    Run,
    RunState,
    RunSummary,
    Task,
)
from hourglass.schedules import After, At, Bounds, Cron, Every, Schedule
from hourglass.v1 import scheduler_pb2 as pb

_JOB_STATES = {
    JobState.ACTIVE: pb.JOB_STATE_ACTIVE,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.PAUSED: pb.JOB_STATE_PAUSED,
}
OVERLAPS = {
    Overlap.ALLOW: pb.OVERLAP_POLICY_ALLOW,
    Overlap.SKIP: pb.OVERLAP_POLICY_SKIP,
    Overlap.BUFFER_ONE: pb.OVERLAP_POLICY_BUFFER_ONE,
    Overlap.REPLACE: pb.OVERLAP_POLICY_REPLACE,
}
CATCH_UPS = {
    CatchUpPolicy.ALL: pb.CATCH_UP_POLICY_ALL,
    CatchUpPolicy.LATEST: pb.CATCH_UP_POLICY_LATEST,
    CatchUpPolicy.SKIP: pb.CATCH_UP_POLICY_SKIP,
}
TRIGGERS = {
    "schedule": pb.RUN_TRIGGER_SCHEDULE,
    "manual": pb.RUN_TRIGGER_MANUAL,
    "backfill": pb.RUN_TRIGGER_BACKFILL,
}
# What answers show in place of a secret's value.
REDACTED = "<redacted>"
RUN_STATES = {
    RunState.QUEUED: pb.RUN_STATE_QUEUED,
    RunState.RUNNING: pb.RUN_STATE_RUNNING,
    RunState.SUCCEEDED: pb.RUN_STATE_SUCCEEDED,
    RunState.FAILED: pb.RUN_STATE_FAILED,
    RunState.TIMED_OUT: pb.RUN_STATE_TIMED_OUT,
    RunState.CANCELLED: pb.RUN_STATE_CANCELLED,
    RunState.LOST: pb.RUN_STATE_LOST,
    RunState.SKIPPED: pb.RUN_STATE_SKIPPED,
}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    message = Timestamp()
    message.FromDatetime(value)
    return message


def duration(value: timedelta | None) -> Duration | None:
    if value is None:
        return None
    message = Duration()
    message.FromTimedelta(value)
    return message


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_timestamp(message: Timestamp) -> datetime:
    """Timestamp.ToDatetime(tzinfo=UTC) (nanos cut to microseconds), without its detour
    through the local time functions: a third of the cost of reading a schedule."""
    return _EPOCH + timedelta(seconds=message.seconds, microseconds=message.nanos // 1000)


def task_to_pb(task: Task) -> pb.Task:
    return pb.Task(
        command=task.command,
        args=task.args,
        env=task.env,
        image=task.image,
        working_dir=task.working_dir,
        binary=task.binary,
        resources=pb.Resources(**dataclasses.asdict(task.resources)),
        secret_env=dict.fromkeys(task.secret_env, REDACTED),
        kubernetes=kube_task.to_pb(task.kubernetes) if task.kubernetes else None,
    )


def schedule_to_pb(schedule: Schedule, bounds: Bounds) -> pb.Schedule:
    message: pb.Schedule
    match schedule:
        case At(at=at):
            message = pb.Schedule(at=timestamp(at))
        case After(delay=delay):
            message = pb.Schedule(after=duration(delay))
        case Cron(expression=expression, time_zone=time_zone):
            message = pb.Schedule(cron=pb.Cron(expression=expression, time_zone=time_zone))
        case Every(interval=interval, jitter=jitter):
            message = pb.Schedule(
                every=pb.Every(interval=duration(interval), jitter=duration(jitter or None))
            )
    if bounds.start:
        message.start.FromDatetime(bounds.start)
    if bounds.end:
        message.end.FromDatetime(bounds.end)
    return message


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(
        name=spec.name,
        task=task_to_pb(spec.task),
        schedule=schedule_to_pb(spec.schedule, spec.bounds),
        max_attempts=spec.retry.max_attempts,
        timeout=duration(spec.timeout),
        retry_backoff=duration(spec.retry.backoff),
        overlap=OVERLAPS[spec.overlap],
        catch_up=pb.CatchUp(
            policy=CATCH_UPS[spec.catch_up.policy], window=duration(spec.catch_up.window)
        ),
    )


def job_to_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=str(job.id),
        spec=spec_to_pb(job.spec),
        state=_JOB_STATES[job.state],
        next_fire_at=timestamp(job.next_fire_at),
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        missed_fires=job.missed_fires,
        revision=job.revision,
        namespace=job.namespace,
        managed_by=job.managed_by,
    )


def attempt_to_pb(attempt: Attempt) -> pb.Attempt:
    return pb.Attempt(
        number=attempt.number,
        state=RUN_STATES[attempt.state],
        worker_id=attempt.worker_id,
        fencing_token=attempt.fencing_token,
        started_at=timestamp(attempt.started_at),
        finished_at=timestamp(attempt.finished_at),
        exit_code=attempt.exit_code,
        stdout_tail=attempt.stdout_tail,
        stderr_tail=attempt.stderr_tail,
        error=attempt.error,
    )


def run_to_pb(run: Run) -> pb.Run:
    current = next((a for a in run.attempts if a.number == run.attempt), None)
    return pb.Run(
        id=str(run.id),
        job_id=str(run.job_id),
        scheduled_at=timestamp(run.scheduled_at),
        state=RUN_STATES[run.state],
        attempt=run.attempt,
        created_at=timestamp(run.created_at),
        started_at=timestamp(current.started_at) if current is not None else None,
        finished_at=timestamp(run.finished_at),
        attempts=[attempt_to_pb(a) for a in run.attempts],
        trigger=TRIGGERS.get(run.trigger, pb.RUN_TRIGGER_UNSPECIFIED),
        reason=run.reason,
    )


def run_summary_to_pb(run: RunSummary) -> pb.Run:
    """A Run of RUN_VIEW_SUMMARY: the fields of RUN_VIEW_FULL but attempts, reason and
    created_at.
    A page holds up to 10,000 of them, so its timestamps are given as their fields (half
    the time of a Timestamp message built from each datetime)."""
    return pb.Run(
        id=run.id,
        job_id=run.job_id,
        scheduled_at=stamp_fields(run.scheduled_at),
        state=RUN_STATES[run.state],
        attempt=run.attempt,
        started_at=stamp_fields(run.started_at),
        finished_at=stamp_fields(run.finished_at),
        trigger=TRIGGERS.get(run.trigger, pb.RUN_TRIGGER_UNSPECIFIED),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def stamp_fields(value: datetime | None) -> dict[str, int] | None:
    """A Timestamp's fields for an aware datetime, as FromDatetime sets them: whole seconds
    since the epoch rounded down (exact integer arithmetic, no float) and the rest as
    nanoseconds."""
    if value is None:
        return None
    return {"seconds": (value - _EPOCH) // _SECOND, "nanos": value.microsecond * 1000}
