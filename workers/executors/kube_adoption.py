"""The adoption protocol of the Kubernetes executor: how the holders of one run share its Job,
so that a worker that dies never causes a second Job for the same attempt.

- Before it creates anything, an attempt looks for a Job of its run (label
  `hourglass.io/run`, in the namespace the run's Jobs go to) whose outcome nobody has
  reported yet: the Job of an earlier attempt whose worker died. It *adopts* that Job (the
  newest, if there are several) by writing its own fencing token into the Job's
  `hourglass.io/fencing-token` annotation, and follows it instead of starting the work again.
- Otherwise it creates its Job under a deterministic name; a 409 means that its own retried
  create, or another holder, made it meanwhile, and that Job is adopted.
- A Job whose outcome was reported carries `hourglass.io/reported-by-attempt`: it is
  history (attempt 1 failed, attempt 2 is the retry) and is never adopted. The mark is a JSON
  patch that first tests the token, so a holder that was replaced cannot hide the Job from
  the attempt that replaced it.
- A Job with a `secret_env` or a binary is created suspended; its holder (the creator, or an
  adopter if the creator died in between) creates the Secret, owned by the Job, and resumes
  it.

The pure parts (which Job to adopt, the patches) are plain functions with unit tests; the
`Adoption` class makes the calls.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from kubernetes import client as k8s

from hourglass.domain import RunId
from hourglass.workers.executors import kube_status
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_api import ApiError
from hourglass.workers.executors.kube_manifests import (
    REPORTED_ANNOTATION,
    RUN_LABEL,
    TOKEN_ANNOTATION,
    Manifest,
    Refused,
    secret_manifest,
)

log = logging.getLogger("hourglass.workers.executors.kubernetes")

FIELD_MANAGER = "hourglass-worker"


class CallApi(Protocol):
    def __call__(
        self, action: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Awaitable[Any]: ...


def adoptable(jobs: Iterable[Manifest]) -> list[Manifest]:
    """The Jobs of a run that an attempt may adopt, newest attempt last: not reported, not
    being deleted."""
    found = [
        job
        for job in jobs
        if not kube_status.reported(job) and not job["metadata"].get("deletionTimestamp")
    ]
    return sorted(found, key=kube_status.attempt_of)


def adopt_patch(attempt: AttemptContext) -> Manifest:
    return {"metadata": {"annotations": {TOKEN_ANNOTATION: str(attempt.fencing_token)}}}


def reported_patch(attempt: AttemptContext) -> list[Manifest]:
    """Marks a Job as history, only while it still carries this attempt's token."""
    return [
        {
            "op": "test",
            "path": "/metadata/annotations/" + kube_status.pointer(TOKEN_ANNOTATION),
            "value": str(attempt.fencing_token),
        },
        {
            "op": "add",
            "path": "/metadata/annotations/" + kube_status.pointer(REPORTED_ANNOTATION),
            "value": str(attempt.attempt),
        },
    ]


class Adoption:
    """The calls of the protocol, in the namespace the run's Jobs go to."""

    def __init__(self, *, batch: k8s.BatchV1Api, core: k8s.CoreV1Api, api: CallApi) -> None:
        self.batch = batch
        self.core = core
        self.api = api

    async def run_jobs(self, run_id: RunId, namespace: str) -> list[Manifest]:
        found = await self.api(
            f"list the Jobs of run {run_id}",
            self.batch.list_namespaced_job,
            namespace,
            label_selector=f"{RUN_LABEL}={run_id}",
        )
        return list(found.get("items") or [])

    async def get_job(self, name: str, namespace: str) -> Manifest | None:
        try:
            job: Manifest = await self.api(
                f"read Job {name}", self.batch.read_namespaced_job, name, namespace
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return job

    async def adopt_or_create(
        self, attempt: AttemptContext, manifest: Manifest, namespace: str
    ) -> Manifest:
        """The Job this attempt follows: an unreported Job of its run, adopted, or else a new
        one (as the API server returned it)."""
        name: str = manifest["metadata"]["name"]
        for _ in range(3):
            jobs = adoptable(await self.run_jobs(attempt.run_id, namespace))
            if jobs:
                newest = jobs[-1]
                if len(jobs) > 1:
                    log.warning(
                        "run %s has %d unreported Jobs; adopting the newest, %s",
                        attempt.run_id,
                        len(jobs),
                        newest["metadata"]["name"],
                    )
                adopted = await self.adopt(attempt, newest["metadata"]["name"], namespace)
                if adopted is not None:
                    return adopted
                continue  # it vanished meanwhile: look again
            try:
                created: Manifest = await self.api(
                    f"create Job {name}",
                    self.batch.create_namespaced_job,
                    namespace,
                    manifest,
                    field_manager=FIELD_MANAGER,
                )
            except ApiError as error:
                if error.status != 409:
                    raise
                # Created meanwhile: by our own retried create, or by another holder.
                job = await self.get_job(name, namespace)
                if job is None:
                    continue
                if kube_status.reported(job):
                    raise Refused(
                        f"Job {name} already exists and its outcome was already reported "
                        f"by attempt {job['metadata']['annotations'][REPORTED_ANNOTATION]}"
                    ) from None
                adopted = await self.adopt(attempt, name, namespace)
                if adopted is not None:
                    return adopted
                continue
            log.info(
                "run %s attempt %d: created Job %s/%s",
                attempt.run_id,
                attempt.attempt,
                namespace,
                name,
            )
            return created
        raise Refused(f"the Jobs of run {attempt.run_id} kept vanishing while being adopted")

    async def adopt(self, attempt: AttemptContext, name: str, namespace: str) -> Manifest | None:
        """Writes this attempt's token into the Job; the Job, or None if it is gone."""
        try:
            job: Manifest = await self.api(
                f"adopt Job {name}",
                self.batch.patch_namespaced_job,
                name,
                namespace,
                adopt_patch(attempt),
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        log.info(
            "run %s attempt %d: adopted Job %s (token %d)",
            attempt.run_id,
            attempt.attempt,
            name,
            attempt.fencing_token,
        )
        return job

    async def release(
        self, attempt: AttemptContext, job: Manifest, namespace: str, *, binary_url: str = ""
    ) -> None:
        """Creates the Secret that a suspended Job of ours waits for (with the signed URL of
        its binary, if it runs one), owned by the Job, then resumes the Job. Run by the creator
        and again by any adopter, since a worker may die between the steps: an existing Secret
        is the one an earlier holder created."""
        name: str = job["metadata"]["name"]
        secret = secret_manifest(job, attempt, binary_url=binary_url)
        try:
            await self.api(
                f"create Secret {secret['metadata']['name']} of Job {name}",
                self.core.create_namespaced_secret,
                namespace,
                secret,
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status != 409:
                raise
        await self.api(
            f"resume Job {name}",
            self.batch.patch_namespaced_job,
            name,
            namespace,
            {"spec": {"suspend": False}},
            field_manager=FIELD_MANAGER,
        )

    async def mark_reported(self, attempt: AttemptContext, name: str, namespace: str) -> None:
        """Marks the Job as history, provided it still carries this attempt's token (a newer
        holder that adopted it reports it instead)."""
        try:
            await self.api(
                f"mark Job {name} reported",
                self.batch.patch_namespaced_job,
                name,
                namespace,
                reported_patch(attempt),
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status == 422:  # the test failed: a newer holder adopted the Job
                log.info(
                    "run %s attempt %d: Job %s now carries a newer holder's token; leaving "
                    "the report to it",
                    attempt.run_id,
                    attempt.attempt,
                    name,
                )
                return
            log.warning(
                "run %s attempt %d: Job %s not marked as reported (%s); a later attempt "
                "may adopt it",
                attempt.run_id,
                attempt.attempt,
                name,
                error,
            )
