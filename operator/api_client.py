"""The JobScheduler calls the ScheduledJob operator makes, typed, each with a deadline.

Every job the operator makes names its ScheduledJob as its manager (`managed_by`), and every
change names it again (`manager`): the API refuses the same changes from anyone else, so a
user's `hourglass delete` cannot make the operator re-create the job under a new id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc


class Api:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        token: str | Callable[[], str] | None = None,
    ) -> None:
        """token: a fixed token, or a callable giving the current one (a rotated file)."""
        self._stub: Any = pb_grpc.JobSchedulerStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._token = token

    def _options(self) -> dict[str, Any]:
        token = self._token() if callable(self._token) else self._token
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return {"timeout": self._timeout, "metadata": metadata}

    async def schedule(self, request_id: str, spec: pb.JobSpec, *, manager: str) -> str:
        """The job's id: a new job, or the one this manager has already (adopted as it is;
        the caller compares its spec)."""
        request = pb.ScheduleJobRequest(request_id=request_id, spec=spec, managed_by=manager)
        response: pb.ScheduleJobResponse = await self._stub.ScheduleJob(request, **self._options())
        return response.job_id

    async def update(self, job_id: str, spec: pb.JobSpec, *, manager: str) -> pb.Job:
        request = pb.UpdateJobRequest(job_id=job_id, spec=spec, manager=manager)
        response: pb.UpdateJobResponse = await self._stub.UpdateJob(request, **self._options())
        return response.job

    async def pause(self, job_id: str, *, manager: str) -> pb.Job:
        request = pb.PauseJobRequest(job_id=job_id, manager=manager)
        response: pb.PauseJobResponse = await self._stub.PauseJob(request, **self._options())
        return response.job

    async def resume(self, job_id: str, *, manager: str) -> pb.Job:
        request = pb.ResumeJobRequest(job_id=job_id, manager=manager)
        response: pb.ResumeJobResponse = await self._stub.ResumeJob(request, **self._options())
        return response.job

    async def trigger(self, job_id: str) -> pb.Run:
        request = pb.TriggerJobRequest(job_id=job_id)
        response: pb.TriggerJobResponse = await self._stub.TriggerJob(request, **self._options())
        return response.run

    async def status(self, job_id: str, recent_runs: int) -> pb.GetJobStatusResponse | None:
        """None when the job does not exist."""
        request = pb.GetJobStatusRequest(job_id=job_id, recent_runs=recent_runs)
        try:
            response: pb.GetJobStatusResponse = await self._stub.GetJobStatus(
                request, **self._options()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response

    async def delete(self, job_id: str, *, manager: str) -> bool:
        """False when there was no such job."""
        try:
            await self._stub.DeleteJob(
                pb.DeleteJobRequest(job_id=job_id, manager=manager), **self._options()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True
