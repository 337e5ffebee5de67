"""The contract between a worker and the place where attempts run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from hourglass.domain import FencingToken, JobId, Outcome, RunId, Task


@dataclass(frozen=True, slots=True)
class AttemptContext:
    run_id: RunId
    job_id: JobId
    attempt: int
    fencing_token: FencingToken
    scheduled_at: datetime
    task: Task
    timeout: timedelta | None
    worker_id: str
    # The run's namespace: attempts of one namespace share its CPU weight (the local sandbox).
    namespace: str = ""
    # Receives output as it comes: (1 for stdout or 2 for stderr, bytes). Must not block.
    on_output: Callable[[int, bytes], None] = field(default=lambda stream, data: None)

    def environment(self) -> dict[str, str]:
        """The HOURGLASS_* variables every attempt's process gets, so that the program itself
        can fence its side effects (e.g. write only if its token is the newest it has seen)."""
        return {
            "HOURGLASS_RUN_ID": str(self.run_id),
            "HOURGLASS_JOB_ID": str(self.job_id),
            "HOURGLASS_ATTEMPT": str(self.attempt),
            "HOURGLASS_FENCING_TOKEN": str(self.fencing_token),
            "HOURGLASS_SCHEDULED_AT": self.scheduled_at.isoformat(timespec="microseconds"),
        }


class Executor(Protocol):
    async def execute(self, attempt: AttemptContext) -> Outcome:
        """Runs the attempt to its end and says how it ended.

        Cancelling the call means this worker gives the attempt up (its lease is lost, or it is
        shutting down): the executor stops watching and re-raises CancelledError. Work that can
        outlive the worker (a Kubernetes Job) is left for the next holder of the run to adopt;
        work that cannot (a local child process) is stopped.
        """
        ...

    async def terminate(self, attempt: AttemptContext) -> None:
        """Stops the attempt's work for good, because a user cancelled the run (CancelRun,
        a replacing fire, DeleteJob). The worker then cancels the execute() call."""
        ...
