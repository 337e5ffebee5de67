"""The kopf handlers: a ScheduledJob's spec becomes a job through the gRPC API, and the job's
state comes back as the resource's status.

- create, update (of spec) and resume all reconcile: ScheduleJob when the status has no job
  id yet (request_id "<uid>/<generation>", and managed_by "ScheduledJob <ns>/<name>", so a
  retried handler, or one that lost the id, gets the job it has rather than a second one),
  then UpdateJob unless the job already runs that spec, then PauseJob or ResumeJob as
  spec.suspend says.
- delete: DeleteJob; NOT_FOUND counts as done. kopf holds a finalizer until it succeeds.
- a timer refreshes the status from GetJobStatus (sj_status decides what it says), posts an
  event for every run that finished since the last refresh, puts back a spec or a pause that
  a forced request changed, and triggers a run for each new value of the annotation
  hourglass.io/trigger. Its handler is sj_refresh.py's; it is registered here.

The operator's own bookkeeping lives in annotations, not in the status: which runs were
reported (hourglass.io/reported-until), the job revision it last wrote (hourglass.io/revision)
and the last trigger it handled (hourglass.io/triggered).

The API's INVALID_ARGUMENT (and ALREADY_EXISTS, FAILED_PRECONDITION) are permanent: the status
gets Ready=False with the API's message and an event, and kopf does not retry until the spec
changes. Anything else (the API is down, say) is retried with a delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import kopf

from hourglass import ownership
from hourglass.operator import kube, resources, sj_status
from hourglass.operator.api_client import Api
from hourglass.v1 import scheduler_pb2 as pb

FINALIZER = f"{resources.GROUP}/finalizer"
# gRPC codes that retrying cannot fix: the request itself is wrong for the API.
PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidSpec",
    grpc.StatusCode.ALREADY_EXISTS: "Conflict",
    grpc.StatusCode.FAILED_PRECONDITION: "Rejected",
}


REPORTED_UNTIL = f"{resources.GROUP}/reported-until"
REVISION = f"{resources.GROUP}/revision"
TRIGGER = f"{resources.GROUP}/trigger"
TRIGGERED = f"{resources.GROUP}/triggered"


@dataclass(frozen=True)
class Config:
    server: str
    refresh_interval: float = 5.0
    rpc_timeout: float = 10.0
    retry_delay: float = 5.0
    recent_runs: int = 20


def set_ready(
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


def manager_of(namespace: str | None, name: str | None) -> str:
    return ownership.scheduled_job(namespace or "", name or "")


def annotate(patch: kopf.Patch, key: str, value: str) -> None:
    patch.metadata.annotations[key] = value


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
        desired: pb.JobSpec,
    ) -> Exception:
        code = error.code()
        details = error.details() or code.name
        if not status.get("jobId"):
            # The SCHEDULE column still says what was asked for.
            patch.status["schedule"] = resources.describe_schedule(desired.schedule)
        if code in PERMANENT:
            reason = PERMANENT[code]
            message = f"the hourglass API refused the spec: {details}"
            if status.get("jobId"):
                message += f" (job {status['jobId']} keeps its previous spec)"
            set_ready(
                patch, status, ready=False, reason=reason, message=message, generation=generation
            )
            kopf.warn(body, reason=reason, message=message)
            return kopf.PermanentError(message)
        message = f"{doing} failed ({code.name}: {details}); retrying"
        patch.status["nextFireAt"] = None  # unknown, not stale
        set_ready(
            patch,
            status,
            ready=False,
            reason="ApiUnavailable",
            message=message,
            generation=generation,
        )
        return kopf.TemporaryError(message, delay=self.config.retry_delay)

    async def suspend(self, job: pb.Job, *, suspend: bool, manager: str) -> str | None:
        """Pauses or resumes the job as spec.suspend says; the action taken, if any."""
        if suspend and job.state == pb.JOB_STATE_ACTIVE:
            await self.api.pause(job.id, manager=manager)
            return "Suspended"
        if not suspend and job.state == pb.JOB_STATE_PAUSED:
            await self.api.resume(job.id, manager=manager)
            return "Resumed"
        return None

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
        manager = manager_of(namespace, name)
        try:
            desired = resources.job_spec(namespace or "", name or "", spec, uid=uid)
        except resources.SpecError as error:
            message = f"invalid spec: {error}"
            if not status.get("schedule"):
                patch.status["schedule"] = "invalid"
            set_ready(
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
        actions: list[str] = []
        try:
            current = await self.api.status(job_id, 1) if job_id else None
            if current is None:
                if job_id:
                    logger.warning("job %s no longer exists; scheduling it again", job_id)
                doing = "ScheduleJob"
                request = resources.request_id(uid, generation)
                job_id = await self.api.schedule(request, desired, manager=manager)
                actions.append("Scheduled")
                doing = "GetJobStatus"
                current = await self.api.status(job_id, 1)
            job = current.job if current is not None else None
            if job is not None and not resources.same_spec(job.spec, desired):
                doing = "UpdateJob"
                job = await self.api.update(job_id, desired, manager=manager)
                actions = ["Updated"] if not actions else ["Adopted"]
            if job is not None:
                doing = "PauseJob/ResumeJob"
                done = await self.suspend(job, suspend=bool(spec.get("suspend")), manager=manager)
                actions += [done] if done else []
            doing = "GetJobStatus"
            fresh = await self.api.status(job_id, self.config.recent_runs)
        except grpc.aio.AioRpcError as error:
            raise self._fail(
                error,
                body=body,
                status=status,
                patch=patch,
                generation=generation,
                doing=doing,
                desired=desired,
            ) from None
        if fresh is None:  # deleted in between; the next round schedules it again
            raise kopf.TemporaryError(f"job {job_id} vanished", delay=self.config.retry_delay)

        patch.status.update(sj_status.summary(fresh))
        annotations = meta.get("annotations") or {}
        previous = status.get("jobId")
        if not annotations.get(REPORTED_UNTIL) or (previous and previous != job_id):
            # Runs of this job are reported from its start.
            annotate(patch, REPORTED_UNTIL, resources.watermark(fresh.job.created_at))
        revision = fresh.job.revision
        annotate(patch, REVISION, str(revision))
        readiness = sj_status.health(fresh.recent_runs, job_id=job_id, state=fresh.job.state)
        set_ready(
            patch,
            status,
            ready=readiness.ready,
            reason=readiness.reason,
            message=f"{readiness.message} (generation {generation}, revision {revision})",
            generation=generation,
        )
        for action in actions:
            kopf.info(body, reason=action, message=f"job {job_id}, revision {revision}")
            logger.info("%s job %s (revision %d)", action.lower(), job_id, revision)

    async def delete(
        self,
        *,
        status: kopf.Status,
        namespace: str | None,
        name: str | None,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        job_id = str(status.get("jobId") or "")
        if not job_id:
            return
        try:
            deleted = await self.api.delete(job_id, manager=manager_of(namespace, name))
        except grpc.aio.AioRpcError as error:
            raise kopf.TemporaryError(
                f"DeleteJob {job_id} failed ({error.code().name}: {error.details()}); retrying",
                delay=self.config.retry_delay,
            ) from None
        logger.info("job %s %s", job_id, "deleted" if deleted else "was already gone")


def build_registry(
    reconciler: Reconciler, config: Config, *, refresh: Callable[..., Awaitable[None]]
) -> kopf.OperatorRegistry:
    """A registry of its own (not kopf's global one), so that several operators can run in
    one process, as the tests do. `refresh` is the timer's handler (sj_refresh.Refresher)."""
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
    )(refresh)
    return registry
