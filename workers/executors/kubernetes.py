"""Runs attempts as Kubernetes Jobs: the executor of `hourglass worker` on a cluster.

Kubernetes owns the process. Each attempt becomes one batch/v1 Job named after its run and
attempt (`hg-<run id>-<attempt>`); the worker only creates it, watches it to its end and reads
the result back from the Job's conditions, its pod's exit code and the pod's log. The Job, not
the worker, holds the running container, so a worker that dies or loses its lease does not take
the work down with it.

hourglass owns retries. The Job has `backoffLimit: 0`, so Kubernetes never starts a second pod;
a failed attempt goes back to the worker, which requeues the run with attempt + 1 under the
job's retry policy. The attempt's timeout becomes `activeDeadlineSeconds`, and a Job that
fails with `DeadlineExceeded` is reported as timed out.

Adoption keeps a dead worker from causing a second Job: the next holder of the run finds
the Job of the attempt before it and follows it instead (kube_adoption.py holds the
protocol). A Job deleted by its TTL before a new holder came for it cannot be adopted; the
work then runs again, which at-least-once allows.

Where a Job goes and how it is shaped is kube_template.py's decision: by default the worker's
namespace and a Job built from the task; for a ScheduledJob, its own namespace, its job
template, its labels and an ownerReference to it. After reporting an attempt of a
ScheduledJob, the executor deletes that ScheduledJob's finished Jobs beyond its history
limits (kube_history.py chooses which).

A job's `secret_env` never appears in the Job: the pod reads it from a Secret of its own
(`valueFrom.secretKeyRef`). So does the init container that fetches an uploaded binary read
the URL of it that the worker signed (hourglass/artifact_urls.py): the pod never holds the
artifact store's credentials. Such a Job is created suspended; the executor then creates the
Secret with an ownerReference to the Job's uid, so that it is garbage-collected with the Job,
and resumes the Job (an adopter finishes these steps if the creator died in between). The
Secret is deleted once the outcome is reported, and with the Job on `terminate()`. What else
a job pod may and may not do is decided in kube_manifests.py.

Cancelling `execute()` (the worker gave the attempt up) only stops watching: the Job keeps
running for the next holder to adopt. `terminate()` (a user cancelled the run) deletes the
run's Jobs with `propagationPolicy: Background`, so their pods go too.

The kubernetes client is synchronous. Short calls run in threads (`asyncio.to_thread`) with a
request timeout; each watch runs in a thread of its own for as long as it lasts
(kube_watch.py), so that many running attempts do not exhaust the event loop's default thread
pool. Transient API failures (connection errors, 5xx, 429) are retried with backoff for up to
`api_retry_seconds`; any other refusal (403, 422, ...) ends the attempt as failed with the
API's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from hourglass.artifact_urls import signed_url
from hourglass.artifacts import ArtifactStore, open_store, parse_digest
from hourglass.domain import Outcome, RunId, RunState
from hourglass.workers.executors import kube_adoption, kube_history, kube_status
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_api import (
    ApiError,
    call_api,
    tail_bytes,
)
from hourglass.workers.executors.kube_config import KubernetesConfig
from hourglass.workers.executors.kube_manifests import (
    REPORTED_ANNOTATION,
    SCHEDULED_JOB_LABEL,
    Manifest,
    Refused,
    job_manifest,
    label_value,
    secret_of,
    task_container,
    waits_for_secret,
)
from hourglass.workers.executors.kube_template import job_for, namespace_of
from hourglass.workers.executors.kube_watch import DELETED, watch_job

__all__ = ["REPORTED_ANNOTATION", "KubernetesConfig", "KubernetesExecutor", "job_manifest"]

log = logging.getLogger(__name__)

# How much of the pod's log is read at the end of an attempt: the last LOG_LINES lines, of
# which at most kube_api.LOG_KEEP bytes are kept (and handed to on_output).
LOG_LINES = 10_000
# How long reads that only add detail to an outcome (the pod, its log) retry transient
# failures: a missing kubelet must not hold the result back for long.
BEST_EFFORT_RETRY = 5.0
# How long execute() waits to be cancelled after terminate() took its Job away.
TERMINATE_GRACE = 60.0


class KubernetesExecutor:
    def __init__(self, config: KubernetesConfig, api_client: k8s.ApiClient | None = None) -> None:
        """`api_client`: None loads the in-cluster configuration, or the kubeconfig outside a
        cluster."""
        self.config = config
        self._owns_client = api_client is None
        if api_client is None:
            try:
                k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
            api_client = k8s.ApiClient()
        self.api_client = api_client
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self._adoption = kube_adoption.Adoption(batch=self.batch, core=self.core, api=self._api)
        # The artifact store that signs binaries' URLs, opened at the first binary job.
        self._store: ArtifactStore | None = None
        # Runs this executor is executing, and those of them terminate() is taking away.
        self._active: set[RunId] = set()
        self._terminating: set[RunId] = set()

    def close(self) -> None:
        """Closes the API client if this executor created it."""
        if self._owns_client:
            self.api_client.close()  # type: ignore[no-untyped-call]

    # The Executor protocol.

    async def execute(self, attempt: AttemptContext) -> Outcome:
        run_id = attempt.run_id
        self._active.add(run_id)
        try:
            namespace = namespace_of(self.config, attempt)
            manifest = job_for(self.config, attempt)
            job = await self._adoption.adopt_or_create(attempt, manifest, namespace)
            name: str = job["metadata"]["name"]
            if run_id in self._terminating:
                # terminate() listed the run's Jobs before this one existed.
                await self._delete_job(job)
                return await self._until_cancelled()
            if waits_for_secret(job):
                try:
                    await self._adoption.release(
                        attempt, job, namespace, binary_url=await self._binary_url(attempt)
                    )
                except Refused:
                    # Refused for good (403, 422): a suspended Job would only linger.
                    with contextlib.suppress(Refused):
                        await self._delete_job(job)
                    raise
            return await self._follow(attempt, name, namespace)
        except Refused as refused:
            log.warning("run %s attempt %d: %s", run_id, attempt.attempt, refused)
            return kube_status.outcome(RunState.FAILED, error=str(refused))
        finally:
            self._active.discard(run_id)
            self._terminating.discard(run_id)

    async def terminate(self, attempt: AttemptContext) -> None:
        """Deletes the run's Jobs that are not history yet, with their pods and Secrets.
        Failures are logged, not raised."""
        run_id = attempt.run_id
        if run_id in self._active:
            self._terminating.add(run_id)
        try:
            jobs = await self._adoption.run_jobs(run_id, namespace_of(self.config, attempt))
            for job in jobs:
                if not kube_status.reported(job):
                    await self._delete_job(job)
        except Refused as refused:
            log.error("run %s: cannot delete its Jobs: %s", run_id, refused)

    async def _binary_url(self, attempt: AttemptContext) -> str:
        """The URL, signed for a while, of the attempt's binary: '' for a task without one."""
        if not attempt.task.binary:
            return ""
        try:
            if self._store is None:
                self._store = open_store(self.config.artifacts_url)
            return await signed_url(
                self._store,
                parse_digest(attempt.task.binary),
                expires_in=timedelta(seconds=self.config.binary_url_seconds),
            )
        except Exception as error:  # obstore raises its own kinds (no credentials, ...)
            raise Refused(f"cannot sign a URL of binary {attempt.task.binary}: {error}") from None

    # Following the Job to its end.

    async def _follow(self, attempt: AttemptContext, name: str, namespace: str) -> Outcome:
        while True:
            job = await self._adoption.get_job(name, namespace)
            if job is None:
                return await self._vanished(attempt, name)
            if kube_status.final_condition(job) is not None:
                return await self._report(attempt, job)
            ended = await watch_job(
                self.batch,
                name,
                namespace,
                resource_version=job["metadata"]["resourceVersion"],
                watch_timeout=self.config.watch_timeout_seconds,
                request_timeout=self.config.request_timeout_seconds,
            )
            if ended is DELETED:
                return await self._vanished(attempt, name)
            if isinstance(ended, dict):
                return await self._report(attempt, ended)
            # The watch expired (or its resource version did): read the Job again.

    async def _vanished(self, attempt: AttemptContext, name: str) -> Outcome:
        if attempt.run_id in self._terminating:
            return await self._until_cancelled()
        return kube_status.outcome(
            RunState.FAILED, error=f"Job {name} was deleted before it finished"
        )

    async def _until_cancelled(self) -> Outcome:
        """terminate() took the Job away; the worker cancels this call next."""
        await asyncio.sleep(TERMINATE_GRACE)
        return kube_status.outcome(RunState.CANCELLED, error="terminated on request")

    # Reporting the outcome.

    async def _report(self, attempt: AttemptContext, job: Manifest) -> Outcome:
        name: str = job["metadata"]["name"]
        namespace: str = job["metadata"]["namespace"]
        final = kube_status.final_condition(job)
        assert final is not None
        kind, reason, message = final
        container = task_container(job)
        pod = await self._pod_of(name, namespace)
        exit_code, init_failure = kube_status.exit_code(pod, container)
        data = await self._log_of(pod, container)
        if data:
            attempt.on_output(1, data)
        tail = data[-self.config.log_tail_bytes :] if self.config.log_tail_bytes else b""
        stdout_tail = tail.decode("utf-8", errors="replace")
        await self._adoption.mark_reported(attempt, name, namespace)
        # The pod has ended: its secrets need not outlive it until the Job's TTL.
        await self._delete_secret(job, best_effort=True)
        await self._prune(attempt, namespace)
        if kind == "Complete":
            state, error, exit_code = RunState.SUCCEEDED, "", 0
        else:
            state = RunState.TIMED_OUT if reason == "DeadlineExceeded" else RunState.FAILED
            error = f"Job {name} failed: {reason or 'unknown reason'}"
            if message:
                error += f": {message}"
            if init_failure:
                error += f"; {init_failure}"
        return kube_status.outcome(state, exit_code=exit_code, stdout_tail=stdout_tail, error=error)

    async def _prune(self, attempt: AttemptContext, namespace: str) -> None:
        """Deletes the owner's finished Jobs beyond its history limits (kube_history);
        best effort, since the next attempt of the ScheduledJob prunes again."""
        kubernetes = attempt.task.kubernetes
        if kubernetes is None or not kubernetes.owner_name:
            return
        owner = label_value(kubernetes.owner_name)
        retry = min(BEST_EFFORT_RETRY, self.config.api_retry_seconds)
        try:
            found = await self._api(
                f"list the Jobs of ScheduledJob {kubernetes.owner_name}",
                self.batch.list_namespaced_job,
                namespace,
                label_selector=f"{SCHEDULED_JOB_LABEL}={owner}",
                _retry_seconds=retry,
            )
            doomed = kube_history.to_delete(
                found.get("items") or [],
                successful=kubernetes.successful_jobs_history_limit,
                failed=kubernetes.failed_jobs_history_limit,
            )
            for job in doomed:
                await self._delete_job(job)
        except Refused as refused:
            log.warning("history of ScheduledJob %s not pruned: %s", kubernetes.owner_name, refused)

    async def _pod_of(self, name: str, namespace: str) -> Manifest | None:
        """The Job's newest pod, or None (none, or not readable)."""
        for selector in (f"batch.kubernetes.io/job-name={name}", f"job-name={name}"):
            try:
                pods = await self._api(
                    f"list the pods of Job {name}",
                    self.core.list_namespaced_pod,
                    namespace,
                    label_selector=selector,
                    _retry_seconds=min(BEST_EFFORT_RETRY, self.config.api_retry_seconds),
                )
            except Refused as refused:
                log.warning("%s", refused)
                return None
            items: list[Manifest] = pods.get("items") or []
            if items:
                return max(items, key=lambda pod: str(pod["metadata"].get("creationTimestamp")))
        return None

    async def _log_of(self, pod: Manifest | None, container: str) -> bytes:
        """The end of the task container's log (stdout and stderr as Kubernetes merges
        them); empty when there is none or it cannot be read."""
        if pod is None:
            return b""
        name = pod["metadata"]["name"]
        try:
            data: bytes = await self._api(
                f"read the log of pod {name}",
                self.core.read_namespaced_pod_log,
                name,
                pod["metadata"]["namespace"],
                container=container,
                tail_lines=LOG_LINES,
                _decode=tail_bytes,
                _retry_seconds=min(BEST_EFFORT_RETRY, self.config.api_retry_seconds),
            )
        except Refused as refused:
            log.info("no log for pod %s: %s", name, refused)
            return b""
        return data

    # API calls.

    async def _delete_job(self, job: Manifest) -> None:
        """Deletes the Job with its pods (Background: see the tests), and its Secret at once
        rather than whenever the garbage collector gets to it."""
        name: str = job["metadata"]["name"]
        try:
            await self._api(
                f"delete Job {name}",
                self.batch.delete_namespaced_job,
                name,
                job["metadata"]["namespace"],
                propagation_policy="Background",
            )
        except ApiError as error:
            if error.status != 404:
                raise
        log.info("deleted Job %s", name)
        await self._delete_secret(job)

    async def _delete_secret(self, job: Manifest, *, best_effort: bool = False) -> None:
        """Deletes the Secret of a Job that has one (a missing Secret is fine)."""
        name = secret_of(job)
        if not name:
            return
        try:
            await self._api(
                f"delete Secret {name}",
                self.core.delete_namespaced_secret,
                name,
                job["metadata"]["namespace"],
                _retry_seconds=(
                    min(BEST_EFFORT_RETRY, self.config.api_retry_seconds) if best_effort else None
                ),
            )
        except ApiError as error:
            if error.status == 404:
                return
            if not best_effort:
                raise
            log.warning("Secret %s not deleted (%s); it goes with its Job", name, error)

    async def _api(
        self,
        action: str,
        call: Callable[..., Any],
        *args: Any,
        _decode: Callable[[Any], Any] | None = None,
        _retry_seconds: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """call_api with this executor's timeouts; `_retry_seconds` defaults to
        api_retry_seconds."""
        return await call_api(
            action,
            call,
            *args,
            decode=_decode,
            retry_seconds=self.config.api_retry_seconds
            if _retry_seconds is None
            else _retry_seconds,
            request_timeout=self.config.request_timeout_seconds,
            **kwargs,
        )
