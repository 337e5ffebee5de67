"""The kopf handlers: a ScheduledJob's spec becomes a job through the gRPC API, and the job's
state comes back as the resource's status.

- create, update (of spec) and resume all reconcile: ScheduleJob when the status has no job
  id yet (request_id "<uid>/<generation>", so a retried handler gets the job it created
  before), else UpdateJob, skipped when the job already runs that spec.
- delete: DeleteJob; NOT_FOUND counts as done. kopf holds a finalizer until it succeeds.
- a timer refreshes the status from GetJobStatus and posts an event for every run that
  finished since the last refresh.

The API's INVALID_ARGUMENT (and ALREADY_EXISTS, FAILED_PRECONDITION) are permanent: the status
gets Ready=False with the API's message and an event, and kopf does not retry until the spec
changes. Anything else (the API is down, say) is retried with a delay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import kopf

from hourglass.operator import kube, resources
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

FINALIZER = f"{resources.GROUP}/finalizer"
# gRPC codes that retrying cannot fix: the request itself is wrong for the API.
PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidSpec",
    grpc.StatusCode.ALREADY_EXISTS: "Conflict",
    grpc.StatusCode.FAILED_PRECONDITION: "Rejected",
}


@dataclass(frozen=True)
class Config:
    server: str
    refresh_interval: float = 5.0
    rpc_timeout: float = 10.0
    retry_delay: float = 5.0
    recent_runs: int = 20


class Api:
    """The few JobScheduler calls the operator makes, typed, each with a deadline."""

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

    async def schedule(self, request_id: str, spec: pb.JobSpec) -> str:
        request = pb.ScheduleJobRequest(request_id=request_id, spec=spec)
        response: pb.ScheduleJobResponse = await self._stub.ScheduleJob(request, **self._options())
        return response.job_id

    async def update(self, job_id: str, spec: pb.JobSpec) -> pb.Job:
        request = pb.UpdateJobRequest(job_id=job_id, spec=spec)
        response: pb.UpdateJobResponse = await self._stub.UpdateJob(request, **self._options())
        return response.job

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

    async def delete(self, job_id: str) -> bool:
        """False when there was no such job."""
        try:
            await self._stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), **self._options())
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True


def _set_ready(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int,
) -> None:
    patch.status["conditions"] = resources.ready_condition(
        status.get("conditions"),
        ready=ready,
        reason=reason,
        message=message,
        generation=generation,
    )
    patch.status["observedGeneration"] = generation


class Reconciler:
    def __init__(self, api: Api, config: Config) -> None:
        self.api = api
        self.config = config

    def _fail(
        self,
        error: grpc.aio.AioRpcError,
        *,
        body: kopf.Body,
        status: Mapping[str, Any],
        patch: kopf.Patch,
        generation: int,
        doing: str,
    ) -> Exception:
        code = error.code()
        details = error.details() or code.name
        if code in PERMANENT:
            reason = PERMANENT[code]
            message = f"the hourglass API refused the spec: {details}"
            if status.get("jobId"):
                message += f" (job {status['jobId']} keeps its previous spec)"
            _set_ready(
                patch, status, ready=False, reason=reason, message=message, generation=generation
            )
            kopf.warn(body, reason=reason, message=message)
            return kopf.PermanentError(message)
        message = f"{doing} failed ({code.name}: {details}); retrying"
        _set_ready(
            patch,
            status,
            ready=False,
            reason="ApiUnavailable",
            message=message,
            generation=generation,
        )
        return kopf.TemporaryError(message, delay=self.config.retry_delay)

    async def reconcile(
        self,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        uid: str,
        namespace: str | None,
        name: str | None,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        generation = int(meta.get("generation") or 1)
        try:
            desired = resources.job_spec(namespace or "", name or "", spec, uid=uid)
        except resources.SpecError as error:
            message = f"invalid spec: {error}"
            _set_ready(
                patch,
                status,
                ready=False,
                reason="InvalidSpec",
                message=message,
                generation=generation,
            )
            kopf.warn(body, reason="InvalidSpec", message=message)
            raise kopf.PermanentError(message) from None

        job_id = str(status.get("jobId") or "")
        doing = "GetJobStatus"
        try:
            current = await self.api.status(job_id, 1) if job_id else None
            if current is None:
                if job_id:
                    logger.warning("job %s no longer exists; scheduling it again", job_id)
                doing = "ScheduleJob"
                job_id = await self.api.schedule(resources.request_id(uid, generation), desired)
                action = "Scheduled"
            elif resources.same_spec(current.job.spec, desired):
                action = "Unchanged"
            else:
                doing = "UpdateJob"
                await self.api.update(job_id, desired)
                action = "Updated"
            doing = "GetJobStatus"
            fresh = await self.api.status(job_id, self.config.recent_runs)
        except grpc.aio.AioRpcError as error:
            raise self._fail(
                error, body=body, status=status, patch=patch, generation=generation, doing=doing
            ) from None
        if fresh is None:  # deleted in between; the next round schedules it again
            raise kopf.TemporaryError(f"job {job_id} vanished", delay=self.config.retry_delay)

        patch.status.update(resources.job_status(fresh))
        previous = status.get("jobId")
        if not status.get("reportedUntil") or (previous and previous != job_id):
            # Runs of this job are reported from its start.
            patch.status["reportedUntil"] = resources.watermark(fresh.job.created_at)
        revision = fresh.job.revision
        _set_ready(
            patch,
            status,
            ready=True,
            reason=action if action != "Unchanged" else "Scheduled",
            message=f"job {job_id} runs generation {generation} (revision {revision})",
            generation=generation,
        )
        if action != "Unchanged":
            kopf.info(body, reason=action, message=f"job {job_id}, revision {revision}")
            logger.info("%s job %s (revision %d)", action.lower(), job_id, revision)

    async def delete(self, *, status: kopf.Status, logger: kopf.Logger, **_: Any) -> None:
        job_id = str(status.get("jobId") or "")
        if not job_id:
            return
        try:
            deleted = await self.api.delete(job_id)
        except grpc.aio.AioRpcError as error:
            raise kopf.TemporaryError(
                f"DeleteJob {job_id} failed ({error.code().name}: {error.details()}); retrying",
                delay=self.config.retry_delay,
            ) from None
        logger.info("job %s %s", job_id, "deleted" if deleted else "was already gone")

    async def refresh(
        self,
        *,
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        job_id = str(status.get("jobId") or "")
        if not job_id:
            return  # not scheduled yet, or the spec was refused: nothing to mirror
        try:
            response = await self.api.status(job_id, self.config.recent_runs)
        except grpc.aio.AioRpcError as error:
            logger.warning("GetJobStatus %s: %s %s", job_id, error.code().name, error.details())
            return
        if response is None:
            # Deleted behind the operator's back: the resource still asks for it.
            message = f"job {job_id} no longer exists in hourglass; scheduling it again"
            kopf.warn(body, reason="JobNotFound", message=message)
            try:
                await self.reconcile(body=body, status=status, patch=patch, logger=logger, **kwargs)
            except (kopf.PermanentError, kopf.TemporaryError) as error:
                logger.warning("%s", error)  # the next tick tries again
            return
        for key, value in resources.job_status(response).items():
            if status.get(key) != value:
                patch.status[key] = value
        events, watermark = resources.finished_runs(
            response.recent_runs, status.get("reportedUntil")
        )
        for event in events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if watermark and watermark != status.get("reportedUntil"):
            patch.status["reportedUntil"] = watermark


def build_registry(reconciler: Reconciler, config: Config) -> kopf.OperatorRegistry:
    """A registry of its own (not kopf's global one), so that several operators can run in
    one process, as the tests do."""
    registry = kopf.OperatorRegistry()
    resource = (resources.GROUP, resources.VERSION, resources.PLURAL)

    kopf.on.login(registry=registry)(kube.login)
    # One reconcile for all three: it works out from the status what is to be done.
    kopf.on.create(*resource, id="create", registry=registry, backoff=10)(reconciler.reconcile)
    kopf.on.update(*resource, id="update", field="spec", registry=registry, backoff=10)(
        reconciler.reconcile
    )
    kopf.on.resume(*resource, id="resume", registry=registry, backoff=10)(reconciler.reconcile)
    kopf.on.delete(*resource, id="delete", registry=registry, backoff=10)(reconciler.delete)
    kopf.timer(
        *resource,
        id="refresh",
        interval=config.refresh_interval,
        registry=registry,
    )(reconciler.refresh)
    return registry
