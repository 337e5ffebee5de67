"""The nouns of hourglass: jobs, runs, attempts and their states.

Everything here is plain data with no I/O, so that the store, the API and the workers agree on
one vocabulary. The state enums are the map of the system: each member says which component
moves a run out of it.
"""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, NewType

from hourglass.schedules import Bounds, Schedule

JobId = NewType("JobId", uuid.UUID)
RunId = NewType("RunId", uuid.UUID)
# The create revision of a run's etcd key. It grows with every new holder of a run, so a write
# carrying an older token can be recognised and refused.
FencingToken = NewType("FencingToken", int)


class JobState(enum.StrEnum):
    """Whether a job still fires."""

    # Fires whenever next_fire_at comes due. The producer moves a one-shot job (or one past its
    # end bound) to COMPLETED when it fires; PauseJob moves it to PAUSED; CancelJob to
    # CANCELLED.
    ACTIVE = "active"
    # No fires until ResumeJob moves it back to ACTIVE.
    PAUSED = "paused"
    # A one-shot job that has fired. Terminal.
    COMPLETED = "completed"
    # Cancelled by a user. Terminal.
    CANCELLED = "cancelled"


class RunState(enum.StrEnum):
    """The life of one fire of a job (a run) and of each of its attempts.

    queued -> running -> succeeded | failed | timed_out | cancelled, and running -> lost for an
    attempt whose worker died. A run is retried by going back to queued with attempt + 1.
    """

    # Waiting for a worker, from `available_at` on (later than now while a retry backs off).
    # A worker moves it to RUNNING when it claims it; CancelJob moves it to CANCELLED.
    QUEUED = "queued"
    # Held by a worker under an etcd lease, fenced by the key's create revision. The worker
    # moves it to a terminal state, or back to QUEUED (attempt + 1) when the attempt failed
    # and attempts remain. The claimer moves an attempt whose lease vanished to LOST.
    RUNNING = "running"
    # The process exited 0. Terminal.
    SUCCEEDED = "succeeded"
    # The process exited non-zero (or could not start) on the last allowed attempt. Terminal.
    FAILED = "failed"
    # The process outlived the job's timeout on the last allowed attempt and was killed.
    # Terminal.
    TIMED_OUT = "timed_out"
    # Cancelled before it finished (CancelRun, CancelJob, DeleteJob, or replaced by a later
    # fire of a job with the replace overlap policy). Terminal.
    CANCELLED = "cancelled"
    # Runs only: the fire came while an earlier run was active and the job's overlap policy
    # said not to run it. Terminal.
    SKIPPED = "skipped"
    # Attempts only: the worker's lease expired while it held the attempt. The claimer marks
    # the attempt LOST and requeues the run (attempt + 1), or fails it when attempts are spent.
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self not in (RunState.QUEUED, RunState.RUNNING)


@dataclass(frozen=True, slots=True)
class Resources:
    """Kubernetes quantities for a Job's container ("250m", "256Mi"); empty means unset."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""


@dataclass(frozen=True, slots=True)
class KubernetesJob:
    """How the Kubernetes executor shapes a task's Job (hourglass.v1.KubernetesJob): a
    batch/v1 JobTemplateSpec as Kubernetes users write it, the namespace it runs in and the
    ScheduledJob that owns it. The template is kept as canonical JSON text (job_templates.
    canonical), so that equal templates compare equal and the value stays immutable."""

    job_template: str = ""
    namespace: str = ""
    owner_name: str = ""
    owner_uid: str = ""
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """What a job runs: a process's argv locally, a container's command in Kubernetes."""

    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    working_dir: str = ""
    # An uploaded binary ("sha256:<hex>") run in place of a command, with `args`.
    binary: str = ""
    resources: Resources = field(default_factory=Resources)
    # Given to the process like env, but never returned by the API, logged, or kept in the
    # job's revisions.
    secret_env: dict[str, str] = field(default_factory=dict)
    kubernetes: KubernetesJob | None = None

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 1
    # Delay before the second attempt; doubled for each further one, capped at max_backoff.
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=10)

    def delay_before(self, attempt: int) -> timedelta:
        """How long attempt number `attempt` (2 or more) waits after the one before failed:
        the backoff doubled per retry, capped, then jittered down by up to half so that runs
        that failed together do not retry in lockstep."""
        ceiling = min(self.backoff * (1 << max(attempt - 2, 0)), self.max_backoff)
        return ceiling * random.uniform(0.5, 1.0)


class Overlap(enum.StrEnum):
    """What a fire does while an earlier run of the same job is queued or running."""

    ALLOW = "allow"
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    REPLACE = "replace"


class CatchUpPolicy(enum.StrEnum):
    """What happens to fires that came due while hourglass was down or behind."""

    ALL = "all"
    LATEST = "latest"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CatchUp:
    policy: CatchUpPolicy = CatchUpPolicy.ALL
    # ALL: fires later than this are missed (None: no limit). SKIP: fires at most this late
    # still count as on time (None: SKIP_GRACE). LATEST: unused.
    window: timedelta | None = None

    SKIP_GRACE: ClassVar[timedelta] = timedelta(seconds=10)

    def tolerance(self) -> timedelta | None:
        """How late a fire may be and still run; None means any lateness."""
        if self.policy == CatchUpPolicy.SKIP:
            return self.window if self.window is not None else self.SKIP_GRACE
        if self.policy == CatchUpPolicy.ALL:
            return self.window
        return None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a user says about a job; what ScheduleJob stores."""

    name: str
    task: Task
    schedule: Schedule
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta | None = None
    bounds: Bounds = field(default_factory=Bounds)
    overlap: Overlap = Overlap.ALLOW
    catch_up: CatchUp = CatchUp()


@dataclass(frozen=True, slots=True)
class Job:
    id: JobId
    spec: JobSpec
    state: JobState
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    missed_fires: int = 0
    revision: int = 1
    namespace: str = "default"
    # Who keeps the job in step with a declaration ("ScheduledJob <ns>/<name>"); "" for none.
    managed_by: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    state: RunState
    worker_id: str
    fencing_token: FencingToken
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    id: RunId
    job_id: JobId
    scheduled_at: datetime
    state: RunState
    attempt: int
    created_at: datetime
    finished_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    trigger: str = "schedule"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as a picture of many runs draws it: no attempts, no output, no reason. Read
    without the attempts' rows (their output tails are most of a run's bytes). The ids are
    text: a summary is read to be sent, and a page holds up to 10,000 of them, so they skip
    the UUID objects a Run's ids would cost."""

    id: str
    job_id: str
    scheduled_at: datetime
    state: RunState
    attempt: int
    # When the current (or last) attempt started; None until it has.
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trigger: str = "schedule"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as an executor reports it."""

    state: RunState
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str = ""
    finished_at: datetime | None = None
