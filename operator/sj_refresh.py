"""The ScheduledJob's timer: between changes of the resource, its status follows the job.

Every `refresh_interval` the timer reads GetJobStatus and
- mirrors it into the status (sj_status decides what it says), patching only what changed,
  so a quiet refresh writes nothing;
- posts an event for every run that finished since the last refresh (the annotation
  hourglass.io/reported-until is the watermark);
- puts back what the resource declares when a forced request changed the job: its spec (a
  revision the operator did not write, hourglass.io/revision) or its pause;
- triggers one run for each new value of the annotation hourglass.io/trigger;
- schedules the job again, through the reconcile, when it was deleted behind the operator's
  back.

The create/update/resume/delete handlers (handlers.py) turn a spec into a job; this one
follows the job afterwards. It is its own module because it answers to the job, not to the
spec, and grew its own rules for when it may act (a spec refusal of this generation holds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import kopf

from hourglass.operator import resources, sj_status
from hourglass.operator.handlers import (
    PERMANENT,
    REPORTED_UNTIL,
    REVISION,
    TRIGGER,
    TRIGGERED,
    Reconciler,
    annotate,
    manager_of,
    set_ready,
)
from hourglass.v1 import scheduler_pb2 as pb

__all__ = ["Refresher"]

# Stands for "the refresh may act": sj_status.refreshed answers None when a spec refusal of
# this generation holds.
_OK = sj_status.Readiness(True, "Scheduled", "")


class Refresher:
    """The timer's handler (`refresh`) for the ScheduledJobs that `reconciler` reconciles."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.api = reconciler.api
        self.config = reconciler.config

    async def _restore(
        self,
        response: pb.GetJobStatusResponse,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        patch: kopf.Patch,
        manager: str,
    ) -> bool:
        """Puts back what the ScheduledJob declares when a forced request changed the job: its
        spec (seen by a revision the operator did not write) or its pause. True if it did."""
        job = response.job
        if job.state == pb.JOB_STATE_CANCELLED:
            return False  # nothing brings it back; Ready says so
        annotations = meta.get("annotations") or {}
        try:
            desired = resources.job_spec(meta.get("namespace") or "", meta["name"], spec)
        except resources.SpecError:
            return False  # the reconcile reports it
        changed = False
        written = str(annotations.get(REVISION) or "")
        if written and written != str(job.revision) and not resources.same_spec(job.spec, desired):
            job = await self.api.update(job.id, desired, manager=manager)
            changed = True
        if await self.reconciler.suspend(job, suspend=bool(spec.get("suspend")), manager=manager):
            changed = True
        if changed:
            message = f"job {job.id} was changed outside the ScheduledJob; restored its spec"
            kopf.warn(body, reason="Restored", message=message)
        if changed or written != str(job.revision):
            annotate(patch, REVISION, str(job.revision))
        return changed

    async def _trigger(
        self, job_id: str, *, body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch
    ) -> None:
        """One run per new value of the annotation hourglass.io/trigger, like `kubectl create
        job --from=cronjob/x`. At least once: a crash between the call and the annotation's
        patch triggers that value again."""
        annotations = meta.get("annotations") or {}
        value = str(annotations.get(TRIGGER) or "")
        if not value or value == annotations.get(TRIGGERED):
            return
        try:
            run = await self.api.trigger(job_id)
        except grpc.aio.AioRpcError as error:
            if error.code() in (*PERMANENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                message = f"{TRIGGER}={value}: TriggerJob refused: {error.details()}"
                kopf.warn(body, reason="TriggerRefused", message=message)
                annotate(patch, TRIGGERED, value)
            return  # anything else: the next tick tries again
        annotate(patch, TRIGGERED, value)
        kopf.info(body, reason="Triggered", message=f"run {run.id} for {TRIGGER}={value}")

    async def refresh(
        self,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        job_id = str(status.get("jobId") or "")
        if not job_id:
            return  # not scheduled yet, or the spec was refused: nothing to mirror
        generation = int(meta.get("generation") or 1)
        current = sj_status.ready_of(status)
        manager = manager_of(meta.get("namespace"), meta.get("name"))
        try:
            response = await self.api.status(job_id, self.config.recent_runs)
            may_act = sj_status.refreshed(current, _OK, generation=generation) is not None
            if (
                response is not None
                and may_act
                and await self._restore(
                    response, body=body, meta=meta, spec=spec, patch=patch, manager=manager
                )
            ):
                response = await self.api.status(job_id, self.config.recent_runs)
            if response is not None:
                await self._trigger(job_id, body=body, meta=meta, patch=patch)
        except grpc.aio.AioRpcError as error:
            logger.warning("GetJobStatus %s: %s %s", job_id, error.code().name, error.details())
            fields, readiness = sj_status.api_unavailable(f"{error.code().name}: {error.details()}")
            self._write(status, patch, fields, readiness, current=current, generation=generation)
            return
        if response is None:
            # Deleted behind the operator's back (forced): the resource still asks for it.
            message = f"job {job_id} no longer exists in hourglass; scheduling it again"
            kopf.warn(body, reason="JobNotFound", message=message)
            try:
                await self.reconciler.reconcile(
                    body=body, meta=meta, spec=spec, status=status, patch=patch, logger=logger,
                    **kwargs,
                )  # fmt: skip
            except (kopf.PermanentError, kopf.TemporaryError) as error:
                logger.warning("%s", error)  # the next tick tries again
            return
        annotations = meta.get("annotations") or {}
        events, watermark = resources.finished_runs(
            response.recent_runs, annotations.get(REPORTED_UNTIL)
        )
        for event in events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if watermark and watermark != annotations.get(REPORTED_UNTIL):
            annotate(patch, REPORTED_UNTIL, watermark)
        readiness = sj_status.health(response.recent_runs, job_id=job_id, state=response.job.state)
        self._write(
            status,
            patch,
            sj_status.summary(response),
            readiness,
            current=current,
            generation=generation,
        )

    @staticmethod
    def _write(
        status: Mapping[str, Any],
        patch: kopf.Patch,
        fields: Mapping[str, Any],
        readiness: sj_status.Readiness,
        *,
        current: Mapping[str, Any] | None,
        generation: int,
    ) -> None:
        """Patches only what changed, so that a quiet refresh writes nothing."""
        for key, value in fields.items():
            if status.get(key) != value:
                patch.status[key] = value
        wanted = sj_status.refreshed(current, readiness, generation=generation)
        if wanted is None or (
            current is not None
            and current.get("status") == ("True" if wanted.ready else "False")
            and current.get("reason") == wanted.reason
        ):
            return
        set_ready(
            patch,
            status,
            ready=wanted.ready,
            reason=wanted.reason,
            message=wanted.message,
            generation=int(current.get("observedGeneration") or generation)
            if current
            else generation,
        )
