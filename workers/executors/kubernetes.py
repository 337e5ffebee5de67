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

Adoption keeps a dead worker from causing a second Job. Before it creates anything, an
attempt looks for a Job of its run (label `hourglass.io/run`) whose outcome nobody has
reported yet: the Job of an earlier attempt whose worker died. It adopts that Job instead of
starting the work again: it writes its own fencing token into the Job's
`hourglass.io/fencing-token` annotation and watches the Job to its end (a Job that already
finished is reported at once). A Job whose outcome was reported carries the annotation
`hourglass.io/reported-by-attempt`; it is history (attempt 1 failed, attempt 2 is the retry)
and is never adopted. The mark is written only while the Job still carries the reporter's
token, so a worker that was replaced cannot hide the Job from the attempt that replaced it.
A Job deleted by its TTL before a new holder came for it cannot be adopted; the work then
runs again, which at-least-once allows.

Cancelling `execute()` (the worker gave the attempt up) only stops watching: the Job keeps
running for the next holder to adopt. `terminate()` (a user cancelled the run) deletes the
run's Jobs with `propagationPolicy: Background`, so their pods go too.

The kubernetes client is synchronous. Short calls run in threads (`asyncio.to_thread`) with a
request timeout; each watch runs in a thread of its own for as long as it lasts, so that many
running attempts do not exhaust the event loop's default thread pool. Transient API failures
(connection errors, 5xx, 429) are retried with backoff for up to `api_retry_seconds`; any
other refusal (403, 422, ...) ends the attempt as failed with the API's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from hourglass.artifacts import parse_digest
from hourglass.domain import Outcome, RunId, RunState
from hourglass.workers.executors.base import AttemptContext

log = logging.getLogger(__name__)

JOB_LABEL = "hourglass.io/job"
RUN_LABEL = "hourglass.io/run"
ATTEMPT_LABEL = "hourglass.io/attempt"
TOKEN_ANNOTATION = "hourglass.io/fencing-token"
# Set on a Job once an attempt has reported its outcome; such a Job is never adopted.
REPORTED_ANNOTATION = "hourglass.io/reported-by-attempt"

FIELD_MANAGER = "hourglass-worker"
TASK_CONTAINER = "task"
FETCH_CONTAINER = "fetch"
BIN_VOLUME = "hourglass-bin"
BIN_DIR = "/hourglass/bin"
BIN_PATH = f"{BIN_DIR}/task"

# A run id is a 36-character UUID and an attempt number rarely has more than 5 digits; a Job
# name (copied into its pods' labels) must stay within 63 characters.
MAX_PREFIX = 63 - 1 - 36 - 1 - 5
# How much of the pod's log is read at the end of an attempt: the last LOG_LINES lines, of
# which at most LOG_KEEP bytes are kept (and handed to on_output).
LOG_LINES = 10_000
LOG_KEEP = 1024 * 1024
# How long reads that only add detail to an outcome (the pod, its log) retry transient
# failures: a missing kubelet must not hold the result back for long.
BEST_EFFORT_RETRY = 5.0
# How long execute() waits to be cancelled after terminate() took its Job away.
TERMINATE_GRACE = 60.0

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TRANSIENT_STATUS = frozenset({0, 408, 429, 500, 502, 503, 504})

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    # Where the Jobs go.
    namespace: str = "default"
    # The image that runs uploaded binaries (and fetches them in the init container); it
    # must hold the `hourglass` command.
    runner_image: str = "hourglass:latest"
    # The artifact store binaries are fetched from (HOURGLASS_ARTIFACTS of the init
    # container); empty: binary jobs cannot run.
    artifacts_url: str = ""
    # How long a finished Job (and its pod and log) stays for inspection and adoption.
    ttl_seconds_after_finished: int = 3600
    # The pods' service account; empty: the namespace's default.
    service_account: str = ""
    job_name_prefix: str = "hg"
    # How much of the pod's log becomes the attempt's stdout tail.
    log_tail_bytes: int = 4096
    # How long one watch request lasts before it is renewed.
    watch_timeout_seconds: int = 60
    # How long transient API failures are retried before the attempt fails.
    api_retry_seconds: float = 300.0
    # The read timeout of each short API call.
    request_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if len(self.namespace) > 63 or not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid namespace name")
        if not self.runner_image.strip():
            raise ValueError("runner_image must not be empty")
        if self.ttl_seconds_after_finished < 0:
            raise ValueError("ttl_seconds_after_finished must not be negative")
        if self.service_account and (
            len(self.service_account) > 253 or not _DNS_SUBDOMAIN.fullmatch(self.service_account)
        ):
            raise ValueError(f"service_account {self.service_account!r} is not a valid name")
        if len(self.job_name_prefix) > MAX_PREFIX or not _DNS_LABEL.fullmatch(self.job_name_prefix):
            raise ValueError(
                f"job_name_prefix {self.job_name_prefix!r} must be at most {MAX_PREFIX} "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        if self.log_tail_bytes < 0:
            raise ValueError("log_tail_bytes must not be negative")
        if self.watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        if self.api_retry_seconds < 0:
            raise ValueError("api_retry_seconds must not be negative")
        if self.request_timeout_seconds <= 0:
            raise ValueError("request_timeout_seconds must be positive")


def job_name(prefix: str, attempt: AttemptContext) -> str:
    """The Job of an attempt: deterministic, so that a retried create finds its own Job."""
    return f"{prefix}-{attempt.run_id}-{attempt.attempt}"


class _Refused(Exception):
    """The attempt cannot run, for a reason the error text gives; becomes a FAILED outcome."""


class _ApiError(_Refused):
    """The API refused a call (status > 0), or could not be reached (status 0)."""

    def __init__(self, action: str, status: int, message: str) -> None:
        self.action = action
        self.status = status
        self.message = message
        if status:
            text = f"Kubernetes API refused to {action}: {self.detail}"
        else:
            text = f"Kubernetes API unreachable while trying to {action}: {message}"
        super().__init__(text)

    @property
    def detail(self) -> str:
        return f"{self.status} {self.message}" if self.status else self.message


def job_manifest(config: KubernetesConfig, attempt: AttemptContext) -> Manifest:
    """The batch/v1 Job for an attempt; raises _Refused for a task that cannot run here."""
    task = attempt.task
    name = job_name(config.job_name_prefix, attempt)
    labels = {
        JOB_LABEL: str(attempt.job_id),
        RUN_LABEL: str(attempt.run_id),
        ATTEMPT_LABEL: str(attempt.attempt),
    }
    env = dict(task.env)
    env.update(attempt.environment())
    container: Manifest = {
        "name": TASK_CONTAINER,
        "env": [{"name": key, "value": value} for key, value in env.items()],
    }
    pod: Manifest = {"restartPolicy": "Never", "containers": [container]}
    if task.binary:
        try:
            digest = parse_digest(task.binary)
        except ValueError as exc:
            raise _Refused(f"binary {task.binary!r} not run: {exc}") from None
        if not config.artifacts_url:
            raise _Refused(
                f"binary {digest} not run: this worker has no artifact store configured "
                "(artifacts_url)"
            )
        mount = [{"name": BIN_VOLUME, "mountPath": BIN_DIR}]
        container.update(image=config.runner_image, command=[BIN_PATH], volumeMounts=mount)
        pod["initContainers"] = [
            {
                "name": FETCH_CONTAINER,
                "image": config.runner_image,
                "command": ["hourglass", "fetch-binary", digest, BIN_PATH],
                "env": [{"name": "HOURGLASS_ARTIFACTS", "value": config.artifacts_url}],
                "volumeMounts": mount,
            }
        ]
        pod["volumes"] = [{"name": BIN_VOLUME, "emptyDir": {}}]
    else:
        if not task.image:
            raise _Refused(
                "the task has no container image: the Kubernetes executor runs a command "
                "only in an image (set the task's image) or an uploaded binary"
            )
        container["image"] = task.image
        if task.command:
            container["command"] = list(task.command)
    if task.args:
        container["args"] = list(task.args)
    if task.working_dir:
        container["workingDir"] = task.working_dir
    resources = _resources(attempt)
    if resources:
        container["resources"] = resources
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    spec: Manifest = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    if attempt.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.timeout.total_seconds()))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {TOKEN_ANNOTATION: str(attempt.fencing_token)},
        },
        "spec": spec,
    }


def _resources(attempt: AttemptContext) -> Manifest:
    wanted = attempt.task.resources
    requests = {
        key: value
        for key, value in (("cpu", wanted.cpu_request), ("memory", wanted.memory_request))
        if value
    }
    limits = {
        key: value
        for key, value in (("cpu", wanted.cpu_limit), ("memory", wanted.memory_limit))
        if value
    }
    resources: Manifest = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


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
            manifest = job_manifest(self.config, attempt)
            name = await self._adopt_or_create(attempt, manifest)
            if run_id in self._terminating:
                # terminate() listed the run's Jobs before this one existed.
                await self._delete_job(name)
                return await self._until_cancelled()
            return await self._follow(attempt, name)
        except _Refused as refused:
            log.warning("run %s attempt %d: %s", run_id, attempt.attempt, refused)
            return _outcome(RunState.FAILED, error=str(refused))
        finally:
            self._active.discard(run_id)
            self._terminating.discard(run_id)

    async def terminate(self, attempt: AttemptContext) -> None:
        """Deletes the run's Jobs that are not history yet, with their pods. Failures are
        logged, not raised."""
        run_id = attempt.run_id
        if run_id in self._active:
            self._terminating.add(run_id)
        try:
            jobs = await self._run_jobs(run_id)
            for job in jobs:
                if not _reported(job):
                    await self._delete_job(job["metadata"]["name"])
        except _Refused as refused:
            log.error("run %s: cannot delete its Jobs: %s", run_id, refused)

    # Finding, adopting and creating the Job.

    async def _adopt_or_create(self, attempt: AttemptContext, manifest: Manifest) -> str:
        """The name of the Job this attempt follows: an unreported Job of its run, adopted,
        or else a new one."""
        name: str = manifest["metadata"]["name"]
        for _ in range(3):
            jobs = [
                job
                for job in await self._run_jobs(attempt.run_id)
                if not _reported(job) and not job["metadata"].get("deletionTimestamp")
            ]
            if jobs:
                newest = max(jobs, key=_attempt_of)
                if len(jobs) > 1:
                    log.warning(
                        "run %s has %d unreported Jobs; adopting the newest, %s",
                        attempt.run_id,
                        len(jobs),
                        newest["metadata"]["name"],
                    )
                if await self._adopt(attempt, newest["metadata"]["name"]):
                    return str(newest["metadata"]["name"])
                continue  # it vanished meanwhile: look again
            try:
                await self._api(
                    f"create Job {name}",
                    self.batch.create_namespaced_job,
                    self.config.namespace,
                    manifest,
                    field_manager=FIELD_MANAGER,
                )
            except _ApiError as error:
                if error.status != 409:
                    raise
                # Created meanwhile: by our own retried create, or by another holder.
                job = await self._get_job(name)
                if job is None:
                    continue
                if _reported(job):
                    raise _Refused(
                        f"Job {name} already exists and its outcome was already reported "
                        f"by attempt {job['metadata']['annotations'][REPORTED_ANNOTATION]}"
                    ) from None
                if await self._adopt(attempt, name):
                    return name
                continue
            log.info("run %s attempt %d: created Job %s", attempt.run_id, attempt.attempt, name)
            return name
        raise _Refused(f"the Jobs of run {attempt.run_id} kept vanishing while being adopted")

    async def _adopt(self, attempt: AttemptContext, name: str) -> bool:
        """Writes this attempt's token into the Job; False if the Job is gone."""
        patch = {"metadata": {"annotations": {TOKEN_ANNOTATION: str(attempt.fencing_token)}}}
        try:
            await self._api(
                f"adopt Job {name}",
                self.batch.patch_namespaced_job,
                name,
                self.config.namespace,
                patch,
                field_manager=FIELD_MANAGER,
            )
        except _ApiError as error:
            if error.status == 404:
                return False
            raise
        log.info(
            "run %s attempt %d: adopted Job %s (token %d)",
            attempt.run_id,
            attempt.attempt,
            name,
            attempt.fencing_token,
        )
        return True

    # Following the Job to its end.

    async def _follow(self, attempt: AttemptContext, name: str) -> Outcome:
        while True:
            job = await self._get_job(name)
            if job is None:
                return await self._vanished(attempt, name)
            if _final_condition(job) is not None:
                return await self._report(attempt, job)
            ended = await self._watch(name, job["metadata"]["resourceVersion"])
            if ended is _DELETED:
                return await self._vanished(attempt, name)
            if isinstance(ended, dict):
                return await self._report(attempt, ended)
            # The watch expired (or its resource version did): read the Job again.

    async def _vanished(self, attempt: AttemptContext, name: str) -> Outcome:
        if attempt.run_id in self._terminating:
            return await self._until_cancelled()
        return _outcome(RunState.FAILED, error=f"Job {name} was deleted before it finished")

    async def _until_cancelled(self) -> Outcome:
        """terminate() took the Job away; the worker cancels this call next."""
        await asyncio.sleep(TERMINATE_GRACE)
        return _outcome(RunState.CANCELLED, error="terminated on request")

    async def _watch(self, name: str, resource_version: str) -> Manifest | object | None:
        """Watches the Job from `resource_version` until it finishes (its manifest), is
        deleted (_DELETED) or the watch ends (None)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        timeout = self.config.watch_timeout_seconds

        def put(kind: str, item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def run() -> None:
            try:
                for event in watcher.stream(  # type: ignore[no-untyped-call]
                    self.batch.list_namespaced_job,
                    self.config.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=timeout,
                    deserialize=False,
                    _request_timeout=(self.config.request_timeout_seconds, timeout + 30),
                ):
                    put("event", event)
            except BaseException as exc:  # handed to the event loop
                put("error", exc)
            else:
                put("end", None)

        thread = threading.Thread(target=run, name=f"watch {name}", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    return None
                if kind == "error":
                    if isinstance(item, k8s.ApiException) and item.status == 410:
                        return None
                    if _transient(item):
                        reason = _api_error("watch", item).detail
                        log.warning("watch of Job %s failed (%s); watching again", name, reason)
                        await asyncio.sleep(1.0)
                        return None
                    raise _api_error(f"watch Job {name}", item)
                event: Manifest = item
                if event.get("type") == "DELETED":
                    return _DELETED
                job = event.get("object")
                if (
                    event.get("type") in ("ADDED", "MODIFIED")
                    and isinstance(job, dict)
                    and _final_condition(job) is not None
                ):
                    return job
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]  # ends the thread soon

    # Reporting the outcome.

    async def _report(self, attempt: AttemptContext, job: Manifest) -> Outcome:
        name: str = job["metadata"]["name"]
        final = _final_condition(job)
        assert final is not None
        kind, reason, message = final
        pod = await self._pod_of(name)
        exit_code, init_failure = _exit_code(pod)
        data = await self._log_of(pod)
        if data:
            attempt.on_output(1, data)
        tail = data[-self.config.log_tail_bytes :] if self.config.log_tail_bytes else b""
        stdout_tail = tail.decode("utf-8", errors="replace")
        await self._mark_reported(attempt, name)
        if kind == "Complete":
            state, error, exit_code = RunState.SUCCEEDED, "", 0
        else:
            state = RunState.TIMED_OUT if reason == "DeadlineExceeded" else RunState.FAILED
            error = f"Job {name} failed: {reason or 'unknown reason'}"
            if message:
                error += f": {message}"
            if init_failure:
                error += f"; {init_failure}"
        return _outcome(state, exit_code=exit_code, stdout_tail=stdout_tail, error=error)

    async def _mark_reported(self, attempt: AttemptContext, name: str) -> None:
        """Marks the Job as history, provided it still carries this attempt's token (a newer
        holder that adopted it reports it instead)."""
        patch = [
            {
                "op": "test",
                "path": "/metadata/annotations/" + _pointer(TOKEN_ANNOTATION),
                "value": str(attempt.fencing_token),
            },
            {
                "op": "add",
                "path": "/metadata/annotations/" + _pointer(REPORTED_ANNOTATION),
                "value": str(attempt.attempt),
            },
        ]
        try:
            await self._api(
                f"mark Job {name} reported",
                self.batch.patch_namespaced_job,
                name,
                self.config.namespace,
                patch,
                field_manager=FIELD_MANAGER,
            )
        except _ApiError as error:
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

    async def _pod_of(self, name: str) -> Manifest | None:
        """The Job's newest pod, or None (none, or not readable)."""
        for selector in (f"batch.kubernetes.io/job-name={name}", f"job-name={name}"):
            try:
                pods = await self._api(
                    f"list the pods of Job {name}",
                    self.core.list_namespaced_pod,
                    self.config.namespace,
                    label_selector=selector,
                    _retry_seconds=min(BEST_EFFORT_RETRY, self.config.api_retry_seconds),
                )
            except _Refused as refused:
                log.warning("%s", refused)
                return None
            items: list[Manifest] = pods.get("items") or []
            if items:
                return max(items, key=lambda pod: str(pod["metadata"].get("creationTimestamp")))
        return None

    async def _log_of(self, pod: Manifest | None) -> bytes:
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
                self.config.namespace,
                container=TASK_CONTAINER,
                tail_lines=LOG_LINES,
                _decode=_tail_bytes,
                _retry_seconds=min(BEST_EFFORT_RETRY, self.config.api_retry_seconds),
            )
        except _Refused as refused:
            log.info("no log for pod %s: %s", name, refused)
            return b""
        return data

    # API calls.

    async def _run_jobs(self, run_id: RunId) -> list[Manifest]:
        found = await self._api(
            f"list the Jobs of run {run_id}",
            self.batch.list_namespaced_job,
            self.config.namespace,
            label_selector=f"{RUN_LABEL}={run_id}",
        )
        return list(found.get("items") or [])

    async def _get_job(self, name: str) -> Manifest | None:
        try:
            job: Manifest = await self._api(
                f"read Job {name}", self.batch.read_namespaced_job, name, self.config.namespace
            )
        except _ApiError as error:
            if error.status == 404:
                return None
            raise
        return job

    async def _delete_job(self, name: str) -> None:
        try:
            await self._api(
                f"delete Job {name}",
                self.batch.delete_namespaced_job,
                name,
                self.config.namespace,
                propagation_policy="Background",
            )
        except _ApiError as error:
            if error.status != 404:
                raise
        log.info("deleted Job %s", name)

    async def _api(
        self,
        action: str,
        call: Callable[..., Any],
        *args: Any,
        _decode: Callable[[Any], Any] | None = None,
        _retry_seconds: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """`call` in a thread, its JSON body as plain data (or `_decode` of the raw
        response); transient failures retried with backoff for up to `_retry_seconds`
        (default api_retry_seconds), anything else raised as _ApiError."""
        decode = _decode or _json_body
        kwargs.setdefault("_request_timeout", self.config.request_timeout_seconds)

        def run() -> Any:
            response = call(*args, _preload_content=False, **kwargs)
            try:
                return decode(response)
            finally:
                response.release_conn()

        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(
                self.config.api_retry_seconds if _retry_seconds is None else _retry_seconds
            ),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
            before_sleep=functools.partial(_warn, action),
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    return await asyncio.to_thread(run)
        except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _api_error(action, exc) from None
        raise AssertionError("unreachable: tenacity returns or raises")


_DELETED = object()


def _json_body(response: Any) -> Any:
    return json.loads(response.data)


def _tail_bytes(response: Any) -> bytes:
    """The last LOG_KEEP bytes of a streamed response, without holding more in memory."""
    kept = bytearray()
    for chunk in _chunks(response):
        kept += chunk
        if len(kept) > LOG_KEEP:
            del kept[: len(kept) - LOG_KEEP]
    return bytes(kept)


def _chunks(response: Any) -> Iterator[bytes]:
    yield from response.stream(65536)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, k8s.ApiException):
        return exc.status in _TRANSIENT_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _api_error(action: str, exc: BaseException) -> _ApiError:
    if isinstance(exc, k8s.ApiException):
        return _ApiError(action, int(exc.status or 0), _api_message(exc))
    return _ApiError(action, 0, str(exc) or type(exc).__name__)


def _api_message(exc: Any) -> str:
    """The Status message the API server sent, else the HTTP reason."""
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = ""
    return f"{exc.reason}: {message}" if message else str(exc.reason or "no reason given")


def _warn(action: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0
    reason = _api_error(action, error).detail if error else "unknown error"
    log.warning("cannot %s yet (%s); retrying in %.1fs", action, reason, sleep)


def _pointer(key: str) -> str:
    """A JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _reported(job: Manifest) -> bool:
    return REPORTED_ANNOTATION in (job["metadata"].get("annotations") or {})


def _attempt_of(job: Manifest) -> tuple[int, str]:
    labels = job["metadata"].get("labels") or {}
    try:
        number = int(labels.get(ATTEMPT_LABEL, "0"))
    except ValueError:
        number = 0
    return number, str(job["metadata"].get("creationTimestamp"))


def _final_condition(job: Manifest) -> tuple[str, str, str] | None:
    """("Complete" or "Failed", reason, message) once the Job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return (
                str(condition["type"]),
                str(condition.get("reason") or ""),
                str(condition.get("message") or ""),
            )
    return None


def _exit_code(pod: Manifest | None) -> tuple[int | None, str]:
    """The task container's exit code (None if it has none), and a note when the init
    container that fetches a binary failed."""
    if pod is None:
        return None, ""
    status = pod.get("status") or {}
    init_failure = ""
    for container in status.get("initContainerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode"):
            init_failure = (
                f"init container {container.get('name')} exited {terminated['exitCode']}"
                + (f" ({terminated['reason']})" if terminated.get("reason") else "")
            )
    for container in status.get("containerStatuses") or []:
        if container.get("name") != TASK_CONTAINER:
            continue
        for key in ("state", "lastState"):
            terminated = (container.get(key) or {}).get("terminated")
            if terminated and terminated.get("exitCode") is not None:
                return cast(int, terminated["exitCode"]), init_failure
    return None, init_failure


def _outcome(
    state: RunState,
    *,
    exit_code: int | None = None,
    stdout_tail: str = "",
    error: str = "",
) -> Outcome:
    return Outcome(
        state=state,
        exit_code=exit_code,
        stdout_tail=stdout_tail,
        error=error,
        finished_at=datetime.now(UTC),
    )
