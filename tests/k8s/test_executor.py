"""The Kubernetes executor against a real kube-apiserver.

No controllers run, so each test plays the Job controller: it patches the Job's status the way
the controller would, and creates the Job's pod itself (with a status showing how its container
ended) when the outcome needs an exit code. No kubelet runs either, so no pod log can be
served: the executor must then report an empty log tail, not fail.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from hourglass.domain import FencingToken, JobId, KubernetesJob, Resources, RunId, RunState, Task
from hourglass.embedded import free_port
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_manifests import job_manifest, secret_manifest
from hourglass.workers.executors.kubernetes import (
    REPORTED_ANNOTATION,
    KubernetesConfig,
    KubernetesExecutor,
)
from tests.k8s.conftest import KubeApiServer, finish_job

DIGEST = "sha256:" + "ab" * 32
SCHEDULED_AT = datetime(2026, 11, 28, 5, 40, 44, 715000, tzinfo=UTC)


def _attempt(
    run_id: RunId | None = None,
    *,
    attempt: int = 1,
    token: int = 101,
    task: Task | None = None,
    timeout: timedelta | None = None,
    output: list[tuple[int, bytes]] | None = None,
    job_id: JobId | None = None,
) -> AttemptContext:
    sink = output if output is not None else []
    return AttemptContext(
        run_id=run_id or RunId(uuid.uuid4()),
        job_id=job_id or JobId(uuid.uuid4()),
        attempt=attempt,
        fencing_token=FencingToken(token),
        scheduled_at=SCHEDULED_AT,
        task=task or Task(command=("sh", "-c"), args=("echo hi",), image="busybox:1.36"),
        timeout=timeout,
        worker_id="test-worker",
        on_output=lambda stream, data: sink.append((stream, data)),
    )


def _executor(api: client.ApiClient, namespace: str, **options: Any) -> KubernetesExecutor:
    options.setdefault("watch_timeout_seconds", 5)
    options.setdefault("api_retry_seconds", 5.0)
    return KubernetesExecutor(KubernetesConfig(namespace=namespace, **options), api)


def _name(attempt: AttemptContext) -> str:
    return f"hg-{attempt.run_id}-{attempt.attempt}"


def _run_jobs(api: client.ApiClient, namespace: str, run_id: RunId) -> list[dict[str, Any]]:
    response: Any = client.BatchV1Api(api).list_namespaced_job(
        namespace, label_selector=f"hourglass.io/run={run_id}", _preload_content=False
    )
    return list(json.loads(response.data)["items"])


def _read_job(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    response: Any = client.BatchV1Api(api).read_namespaced_job(
        name, namespace, _preload_content=False
    )
    return dict(json.loads(response.data))


async def _eventually(check: Any, timeout: float = 10.0) -> Any:
    """Polls `check` (a sync callable, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def _job_of(api: client.ApiClient, namespace: str, run_id: RunId) -> dict[str, Any]:
    jobs = await _eventually(lambda: _run_jobs(api, namespace, run_id))
    assert len(jobs) == 1
    return dict(jobs[0])


def _pod_that_exited(api: client.ApiClient, namespace: str, job: str, code: int) -> None:
    """The Job's pod, as the Job controller and a kubelet would leave it: labelled with the
    Job's name, its `task` container terminated with `code`."""
    core = client.CoreV1Api(api)
    name = f"{job}-abcde"
    pod: Any = {
        "metadata": {
            "name": name,
            "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "task", "image": "busybox:1.36"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    core.patch_namespaced_pod_status(
        name,
        namespace,
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "task",
                        "image": "busybox:1.36",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Error",
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
        },
    )


@pytest.fixture
def admin(k8s_client: client.ApiClient) -> client.ApiClient:
    return k8s_client


async def test_a_run_becomes_a_job_with_the_attempts_spec(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    task = Task(
        command=("sh", "-c"),
        args=("echo $GREETING",),
        env={"GREETING": "hello", "HOURGLASS_ATTEMPT": "spoofed"},
        image="busybox:1.36",
        working_dir="/tmp",
        resources=Resources(cpu_request="250m", memory_limit="256Mi"),
    )
    attempt = _attempt(attempt=2, token=4242, task=task, timeout=timedelta(seconds=90.2))
    execution = asyncio.create_task(_executor(admin, k8s_namespace).execute(attempt))
    try:
        job = await _job_of(admin, k8s_namespace, attempt.run_id)
    finally:
        execution.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution

    labels = {
        "hourglass.io/job": str(attempt.job_id),
        "hourglass.io/run": str(attempt.run_id),
        "hourglass.io/attempt": "2",
    }
    assert job["metadata"]["name"] == f"hg-{attempt.run_id}-2"
    assert job["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"] == {
        "hourglass.io/fencing-token": "4242",
        "hourglass.io/scheduled-at": "2026-11-28T05:40:44.715000+00:00",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91  # 90.2s, rounded up
    assert spec["ttlSecondsAfterFinished"] == 3600
    template = spec["template"]
    # The server adds the controller's own labels; ours are all there.
    assert labels.items() <= template["metadata"]["labels"].items()
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "initContainers" not in pod and "volumes" not in pod
    [container] = pod["containers"]
    assert container["name"] == "task"
    assert container["image"] == "busybox:1.36"
    assert container["command"] == ["sh", "-c"]
    assert container["args"] == ["echo $GREETING"]
    assert container["workingDir"] == "/tmp"
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}
    assert {var["name"]: var["value"] for var in container["env"]} == {
        "GREETING": "hello",
        "HOURGLASS_RUN_ID": str(attempt.run_id),
        "HOURGLASS_JOB_ID": str(attempt.job_id),
        "HOURGLASS_ATTEMPT": "2",  # hourglass's own variables win over the task's
        "HOURGLASS_FENCING_TOKEN": "4242",
        "HOURGLASS_SCHEDULED_AT": "2026-11-28T05:40:44.715000+00:00",
    }


async def test_a_job_without_a_timeout_has_no_deadline_and_the_configured_extras(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt()
    executor = _executor(admin, k8s_namespace, ttl_seconds_after_finished=60)
    execution = asyncio.create_task(executor.execute(attempt))
    try:
        job = await _job_of(admin, k8s_namespace, attempt.run_id)
    finally:
        execution.cancel()
    assert "activeDeadlineSeconds" not in job["spec"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert "resources" not in job["spec"]["template"]["spec"]["containers"][0] or (
        job["spec"]["template"]["spec"]["containers"][0]["resources"] == {}
    )


@pytest.mark.parametrize(
    ("failed", "state"),
    [("", RunState.SUCCEEDED), ("BackoffLimitExceeded", RunState.FAILED)],
)
async def test_the_jobs_end_becomes_the_outcome(
    admin: client.ApiClient, k8s_namespace: str, failed: str, state: RunState
) -> None:
    output: list[tuple[int, bytes]] = []
    attempt = _attempt(output=output)
    execution = asyncio.create_task(_executor(admin, k8s_namespace).execute(attempt))
    await _job_of(admin, k8s_namespace, attempt.run_id)
    if failed:
        _pod_that_exited(admin, k8s_namespace, _name(attempt), 3)
    finish_job(
        admin, k8s_namespace, _name(attempt), failed=failed, message="Job has reached the limit"
    )

    outcome = await asyncio.wait_for(execution, 10)
    assert outcome.state == state
    assert outcome.finished_at is not None
    # No kubelet serves the pod's log: empty, and no exception.
    assert outcome.stdout_tail == ""
    assert output == []
    if failed:
        assert outcome.exit_code == 3  # read from the pod's terminated container
        assert outcome.error == (
            f"Job {_name(attempt)} failed: BackoffLimitExceeded: Job has reached the limit"
        )
    else:
        assert outcome.exit_code == 0
        assert outcome.error == ""
    # Reported: the Job is marked, so a retry of the run starts a new Job instead of
    # adopting this one.
    job = _read_job(admin, k8s_namespace, _name(attempt))
    assert job["metadata"]["annotations"][REPORTED_ANNOTATION] == "1"


async def test_a_job_past_its_deadline_timed_out(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt(timeout=timedelta(seconds=2))
    execution = asyncio.create_task(_executor(admin, k8s_namespace).execute(attempt))
    await _job_of(admin, k8s_namespace, attempt.run_id)
    finish_job(
        admin,
        k8s_namespace,
        _name(attempt),
        failed="DeadlineExceeded",
        message="Job was active longer than specified deadline",
    )
    outcome = await asyncio.wait_for(execution, 10)
    assert outcome.state == RunState.TIMED_OUT
    assert outcome.exit_code is None  # no pod to read it from
    assert outcome.error == (
        f"Job {_name(attempt)} failed: DeadlineExceeded: "
        "Job was active longer than specified deadline"
    )


async def test_the_next_holder_adopts_the_job_of_a_dead_worker(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    run_id = RunId(uuid.uuid4())
    first = _attempt(run_id, attempt=1, token=10)
    dead = asyncio.create_task(_executor(admin, k8s_namespace).execute(first))
    original = await _job_of(admin, k8s_namespace, run_id)
    dead.cancel()  # the worker died, or lost its lease
    with pytest.raises(asyncio.CancelledError):
        await dead
    # The Job is left running for the next holder.
    assert (
        _read_job(admin, k8s_namespace, _name(first))["metadata"]["uid"]
        == (original["metadata"]["uid"])
    )

    second = _attempt(run_id, attempt=2, token=25, job_id=first.job_id)
    adopting = asyncio.create_task(_executor(admin, k8s_namespace).execute(second))

    def token_written() -> bool:
        annotations = _read_job(admin, k8s_namespace, _name(first))["metadata"]["annotations"]
        return bool(annotations["hourglass.io/fencing-token"] == "25")

    await _eventually(token_written)
    jobs = _run_jobs(admin, k8s_namespace, run_id)
    assert [job["metadata"]["uid"] for job in jobs] == [original["metadata"]["uid"]]
    assert not adopting.done()

    finish_job(admin, k8s_namespace, _name(first))
    outcome = await asyncio.wait_for(adopting, 10)
    assert (outcome.state, outcome.exit_code) == (RunState.SUCCEEDED, 0)
    jobs = _run_jobs(admin, k8s_namespace, run_id)
    assert [job["metadata"]["name"] for job in jobs] == [_name(first)]
    assert jobs[0]["metadata"]["annotations"][REPORTED_ANNOTATION] == "2"


async def test_a_job_that_finished_while_no_one_held_it_is_reported_at_once(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    run_id = RunId(uuid.uuid4())
    first = _attempt(run_id, attempt=1, token=10)
    dead = asyncio.create_task(_executor(admin, k8s_namespace).execute(first))
    await _job_of(admin, k8s_namespace, run_id)
    dead.cancel()
    _pod_that_exited(admin, k8s_namespace, _name(first), 7)
    finish_job(admin, k8s_namespace, _name(first), failed="BackoffLimitExceeded")

    second = _attempt(run_id, attempt=2, token=25)
    outcome = await asyncio.wait_for(_executor(admin, k8s_namespace).execute(second), 10)
    assert (outcome.state, outcome.exit_code) == (RunState.FAILED, 7)
    assert len(_run_jobs(admin, k8s_namespace, run_id)) == 1


async def test_a_retry_after_a_reported_failure_runs_a_new_job(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    run_id = RunId(uuid.uuid4())
    executor = _executor(admin, k8s_namespace)
    first = _attempt(run_id, attempt=1, token=10)
    execution = asyncio.create_task(executor.execute(first))
    await _job_of(admin, k8s_namespace, run_id)
    finish_job(admin, k8s_namespace, _name(first), failed="BackoffLimitExceeded")
    assert (await asyncio.wait_for(execution, 10)).state == RunState.FAILED

    second = _attempt(run_id, attempt=2, token=25)
    execution = asyncio.create_task(executor.execute(second))

    def two_jobs() -> list[dict[str, Any]]:
        jobs = _run_jobs(admin, k8s_namespace, run_id)
        return jobs if len(jobs) == 2 else []

    jobs = await _eventually(two_jobs)
    assert sorted(job["metadata"]["name"] for job in jobs) == [_name(first), _name(second)]
    finish_job(admin, k8s_namespace, _name(second))
    assert (await asyncio.wait_for(execution, 10)).state == RunState.SUCCEEDED


async def test_a_replaced_holder_does_not_mark_the_job_reported(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    """A zombie (token 10) still watches the Job that a newer holder (token 25) adopted:
    both see it end, but only the newer holder's report marks it."""
    run_id = RunId(uuid.uuid4())
    first = _attempt(run_id, attempt=1, token=10)
    zombie = asyncio.create_task(_executor(admin, k8s_namespace).execute(first))
    await _job_of(admin, k8s_namespace, run_id)
    second = _attempt(run_id, attempt=2, token=25)
    holder = asyncio.create_task(_executor(admin, k8s_namespace).execute(second))

    def adopted() -> bool:
        annotations = _read_job(admin, k8s_namespace, _name(first))["metadata"]["annotations"]
        return bool(annotations["hourglass.io/fencing-token"] == "25")

    await _eventually(adopted)
    await asyncio.sleep(0.2)  # let the holder's watch start
    finish_job(admin, k8s_namespace, _name(first))
    outcomes = await asyncio.wait_for(asyncio.gather(zombie, holder), 10)
    assert [outcome.state for outcome in outcomes] == [RunState.SUCCEEDED] * 2
    annotations = _read_job(admin, k8s_namespace, _name(first))["metadata"]["annotations"]
    assert annotations[REPORTED_ANNOTATION] == "2"


async def test_terminate_deletes_the_job_and_the_execution_is_cancelled(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    executor = _executor(admin, k8s_namespace)
    attempt = _attempt()
    execution = asyncio.create_task(executor.execute(attempt))
    await _job_of(admin, k8s_namespace, attempt.run_id)

    await executor.terminate(attempt)
    # Deleted at once: with no propagation policy a batch/v1 Job is deleted with
    # OrphanDependents, which leaves it behind an `orphan` finalizer that only the garbage
    # collector would remove (and none runs here); Foreground would leave it too.
    with pytest.raises(client.ApiException) as gone:
        _read_job(admin, k8s_namespace, _name(attempt))
    assert gone.value.status == 404
    # The execution does not report the vanished Job as a failure: it waits to be cancelled,
    # as the worker does right after terminate().
    await asyncio.sleep(0.5)
    assert not execution.done()
    execution.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution
    assert _run_jobs(admin, k8s_namespace, attempt.run_id) == []


async def test_a_job_deleted_by_someone_else_fails_the_attempt(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt()
    execution = asyncio.create_task(_executor(admin, k8s_namespace).execute(attempt))
    await _job_of(admin, k8s_namespace, attempt.run_id)
    await asyncio.sleep(0.2)  # let the watch start
    client.BatchV1Api(admin).delete_namespaced_job(
        _name(attempt), k8s_namespace, propagation_policy="Background"
    )
    outcome = await asyncio.wait_for(execution, 10)
    assert outcome.state == RunState.FAILED
    assert outcome.error == f"Job {_name(attempt)} was deleted before it finished"


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's credentials for an S3 artifact store; signing a URL uses them offline."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret-key")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.mark.usefixtures("s3_credentials")
async def test_a_binary_runs_in_the_runner_image_after_an_init_container_fetches_it(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    """The init container fetches the binary from a URL the worker signed for that object
    alone, read from the attempt's Secret: neither the store's credentials nor its address
    are in the Job, and the task's container does not refer to the URL."""
    executor = _executor(
        admin,
        k8s_namespace,
        runner_image="registry.example/hourglass:1.2.3",
        artifacts_url="s3://artifacts/binaries?region=eu-west-1",
        service_account="hourglass-runner",
        binary_url_seconds=900,
    )
    attempt = _attempt(task=Task(command=(), args=("--fast", "x"), binary=DIGEST))
    execution = asyncio.create_task(executor.execute(attempt))
    name = _name(attempt)
    try:
        job = await _eventually(lambda: _resumed(admin, k8s_namespace, name))
    finally:
        execution.cancel()
    assert "worker-secret-key" not in json.dumps(job) and "s3://" not in json.dumps(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hourglass-runner"
    assert pod["volumes"] == [{"name": "hourglass-bin", "emptyDir": {}}]
    [fetch] = pod["initContainers"]
    assert fetch["name"] == "fetch"
    assert fetch["image"] == "registry.example/hourglass:1.2.3"
    assert fetch["command"] == ["hourglass", "fetch-binary", DIGEST, "/hourglass/bin/task"]
    reference = {"secretKeyRef": {"name": name, "key": "hourglass.binary-url"}}
    assert fetch["env"] == [{"name": "HOURGLASS_BINARY_URL", "valueFrom": reference}]
    assert fetch["volumeMounts"] == [{"name": "hourglass-bin", "mountPath": "/hourglass/bin"}]
    [task] = pod["containers"]
    assert task["image"] == "registry.example/hourglass:1.2.3"
    assert task["command"] == ["/hourglass/bin/task"]
    assert task["args"] == ["--fast", "x"]
    assert task["volumeMounts"] == [{"name": "hourglass-bin", "mountPath": "/hourglass/bin"}]
    assert "HOURGLASS_FENCING_TOKEN" in {var["name"] for var in task["env"]}
    assert all("valueFrom" not in var for var in task["env"])

    secret = _secret(admin, k8s_namespace, name)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    [url] = data.values()
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == f"/artifacts/binaries/sha256/{DIGEST.split(':')[1]}"
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Credential"][0].startswith("AKIAWORKER/")
    assert "worker-secret-key" not in url


@pytest.mark.parametrize(
    ("task", "options", "error"),
    [
        (Task(command=("echo", "hi")), {}, "the task has no container image"),
        (Task(command=(), binary=DIGEST), {}, "no artifact store configured"),
        (
            Task(command=(), binary=DIGEST),
            {"artifacts_url": "file:///srv"},
            "only an s3:// artifact store gives (this worker's is a folder",
        ),
        (
            Task(command=(), binary="sha256:nope"),
            {"artifacts_url": "file:///srv"},
            "binary 'sha256:nope' not run: digest 'sha256:nope' has 4 hex digits",
        ),
    ],
)
async def test_a_task_that_cannot_run_here_fails_without_a_job(
    admin: client.ApiClient,
    k8s_namespace: str,
    task: Task,
    options: dict[str, Any],
    error: str,
) -> None:
    attempt = _attempt(task=task)
    outcome = await _executor(admin, k8s_namespace, **options).execute(attempt)
    assert outcome.state == RunState.FAILED
    assert outcome.exit_code is None
    assert error in outcome.error
    assert _run_jobs(admin, k8s_namespace, attempt.run_id) == []


async def test_a_forbidden_call_fails_the_attempt_with_the_apis_message(
    kube_apiserver: KubeApiServer, admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt()
    with kube_apiserver.api_client("limited") as limited:
        outcome = await _executor(limited, k8s_namespace).execute(attempt)
    assert outcome.state == RunState.FAILED
    assert outcome.error.startswith(
        f"Kubernetes API refused to list the Jobs of run {attempt.run_id}: 403 Forbidden: "
    )
    assert 'User "limited" cannot list resource "jobs"' in outcome.error
    assert _run_jobs(admin, k8s_namespace, attempt.run_id) == []


async def test_an_invalid_job_fails_the_attempt_with_the_apis_message(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt(task=Task(command=("true",), image="busybox", env={"": "no name"}))
    outcome = await _executor(admin, k8s_namespace).execute(attempt)
    assert outcome.state == RunState.FAILED
    assert outcome.error.startswith(f"Kubernetes API refused to create Job {_name(attempt)}: 422")
    assert "env[0].name: Required value" in outcome.error


class _Flaky(client.ApiClient):
    """Answers the first `failures` calls with 503, as an overloaded API server would."""

    def __init__(self, configuration: client.Configuration, failures: int) -> None:
        super().__init__(configuration)
        self.failures = failures

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise client.ApiException(status=503, reason="Service Unavailable")
        return super().call_api(*args, **kwargs)


async def test_transient_errors_are_retried(admin: client.ApiClient, k8s_namespace: str) -> None:
    flaky = _Flaky(admin.configuration, failures=3)
    attempt = _attempt()
    execution = asyncio.create_task(_executor(flaky, k8s_namespace).execute(attempt))
    await _job_of(admin, k8s_namespace, attempt.run_id)
    assert flaky.failures == 0
    finish_job(admin, k8s_namespace, _name(attempt))
    assert (await asyncio.wait_for(execution, 10)).state == RunState.SUCCEEDED


async def test_an_unreachable_api_fails_the_attempt_once_retries_run_out() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    with client.ApiClient(configuration) as unreachable:
        executor = _executor(unreachable, "default", api_retry_seconds=0.5)
        outcome = await asyncio.wait_for(executor.execute(_attempt()), 30)
    assert outcome.state == RunState.FAILED
    assert outcome.error.startswith("Kubernetes API unreachable while trying to list the Jobs")


def test_the_config_refuses_names_kubernetes_would_refuse() -> None:
    assert KubernetesConfig().job_name_prefix == "hg"
    for options in (
        {"namespace": "Not_A_Namespace"},
        {"job_name_prefix": "x" * 21},
        {"job_name_prefix": "-hg"},
        {"runner_image": " "},
        {"ttl_seconds_after_finished": -1},
        {"log_tail_bytes": -1},
        {"service_account": "Bad Name"},
    ):
        with pytest.raises(ValueError):
            KubernetesConfig(**options)


# --- the threat model: what a job pod gets, and what it does not ---------------------------


def _restricted_namespace(api: client.ApiClient) -> str:
    """A namespace where the Pod Security admission enforces the restricted profile."""
    name = f"restricted-{uuid.uuid4().hex[:10]}"
    labels = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")
    } | {"pod-security.kubernetes.io/enforce-version": "latest"}
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels}})
    return name


def _pod_from(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod the Job controller would create from the Job's template."""
    template = job["spec"]["template"]
    return {
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize(
    "task",
    [
        Task(command=("sh", "-c"), args=("id",), image="busybox:1.36"),
        Task(command=(), args=("x",), binary=DIGEST),
    ],
    ids=["image", "binary"],
)
@pytest.mark.usefixtures("s3_credentials")
async def test_a_restricted_namespace_admits_the_job_pod_and_refuses_a_privileged_one(
    admin: client.ApiClient, task: Task
) -> None:
    namespace = _restricted_namespace(admin)
    core = client.CoreV1Api(admin)
    try:
        executor = _executor(
            admin, namespace, service_account="hg-hourglass-job", artifacts_url="s3://bin"
        )
        attempt = _attempt(task=task)
        execution = asyncio.create_task(executor.execute(attempt))
        try:
            job = await _job_of(admin, namespace, attempt.run_id)
        finally:
            execution.cancel()
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "hg-hourglass-job"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        # Pod Security admission judges pods, not Jobs: play the Job controller.
        core.create_namespaced_pod(namespace, _pod_from(job, f"{_name(attempt)}-abcde"))

        privileged = _pod_from(job, "privileged")
        privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, privileged)
        assert refused.value.status == 403
        message = json.loads(refused.value.body)["message"]
        assert 'violates PodSecurity "restricted:latest": privileged' in message
        as_root = _pod_from(job, "as-root")
        as_root["spec"]["securityContext"] = {"runAsUser": 0}
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, as_root)
        assert refused.value.status == 403
    finally:
        core.delete_namespace(namespace)


def _secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response: Any = client.CoreV1Api(api).read_namespaced_secret(
            name, namespace, _preload_content=False
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(json.loads(response.data))


def _secrets(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    response: Any = client.CoreV1Api(api).list_namespaced_secret(namespace, _preload_content=False)
    return list(json.loads(response.data)["items"])


SECRET_TASK = Task(
    command=("sh", "-c"),
    args=('test -n "$API_KEY"',),
    image="busybox:1.36",
    env={"PLAIN": "p"},
    secret_env={"API_KEY": "s3cr3t", "DB_PASSWORD": "hunter2"},
)


def _resumed(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = _read_job(api, namespace, name)
    except client.ApiException as error:
        if error.status == 404:  # not created yet
            return None
        raise
    return None if job["spec"].get("suspend") else job


async def test_secret_env_reaches_the_pod_through_a_secret_owned_by_the_job(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    attempt = _attempt(task=SECRET_TASK)
    execution = asyncio.create_task(_executor(admin, k8s_namespace).execute(attempt))
    name = _name(attempt)
    job = await _eventually(lambda: _resumed(admin, k8s_namespace, name))
    # No secret value anywhere in the Job (hence in no pod spec, event or `kubectl get`).
    assert "s3cr3t" not in json.dumps(job) and "hunter2" not in json.dumps(job)
    [container] = job["spec"]["template"]["spec"]["containers"]
    refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in container["env"]
        if "valueFrom" in var
    }
    assert refs == {
        "API_KEY": {"name": name, "key": "API_KEY"},
        "DB_PASSWORD": {"name": name, "key": "DB_PASSWORD"},
    }
    secret = _secret(admin, k8s_namespace, name)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
    ]
    assert secret["immutable"] is True
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "API_KEY": "s3cr3t",
        "DB_PASSWORD": "hunter2",
    }
    assert len(_secrets(admin, k8s_namespace)) == 1

    finish_job(admin, k8s_namespace, name)
    assert (await asyncio.wait_for(execution, 10)).state == RunState.SUCCEEDED
    # Reported: the pod has ended, so its secrets go now rather than with the Job's TTL.
    assert _secret(admin, k8s_namespace, name) is None


async def test_terminate_deletes_the_jobs_secret(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    executor = _executor(admin, k8s_namespace)
    attempt = _attempt(task=SECRET_TASK)
    execution = asyncio.create_task(executor.execute(attempt))
    await _eventually(lambda: _resumed(admin, k8s_namespace, _name(attempt)))
    assert _secret(admin, k8s_namespace, _name(attempt)) is not None

    await executor.terminate(attempt)
    assert _secret(admin, k8s_namespace, _name(attempt)) is None
    assert _run_jobs(admin, k8s_namespace, attempt.run_id) == []
    execution.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution


@pytest.mark.parametrize("secret_created", [False, True], ids=["before-secret", "after-secret"])
async def test_an_adopter_releases_a_job_whose_creator_died_before_resuming_it(
    admin: client.ApiClient, k8s_namespace: str, secret_created: bool
) -> None:
    """The first worker created the suspended Job (and maybe its Secret) and died: the next
    holder creates the Secret if it is missing, resumes the Job, and makes no second Job or
    Secret."""
    run_id = RunId(uuid.uuid4())
    first = _attempt(run_id, attempt=1, token=10, task=SECRET_TASK)
    config = KubernetesConfig(namespace=k8s_namespace)
    job: Any = client.BatchV1Api(admin).create_namespaced_job(
        k8s_namespace, job_manifest(config, first), _preload_content=False
    )
    job = json.loads(job.data)
    assert job["spec"]["suspend"] is True
    if secret_created:
        client.CoreV1Api(admin).create_namespaced_secret(k8s_namespace, secret_manifest(job, first))

    second = _attempt(run_id, attempt=2, token=25, task=SECRET_TASK, job_id=first.job_id)
    adopting = asyncio.create_task(_executor(admin, k8s_namespace).execute(second))
    resumed = await _eventually(lambda: _resumed(admin, k8s_namespace, _name(first)))
    assert resumed["metadata"]["uid"] == job["metadata"]["uid"]
    assert resumed["metadata"]["annotations"]["hourglass.io/fencing-token"] == "25"
    assert [j["metadata"]["name"] for j in _run_jobs(admin, k8s_namespace, run_id)] == [
        _name(first)
    ]
    [secret] = _secrets(admin, k8s_namespace)
    assert secret["metadata"]["name"] == _name(first)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]

    finish_job(admin, k8s_namespace, _name(first))
    assert (await asyncio.wait_for(adopting, 10)).state == RunState.SUCCEEDED


async def test_secrets_adoption_and_terminate_work_in_a_scheduled_jobs_namespace(
    admin: client.ApiClient, k8s_namespace: str
) -> None:
    """A Job that its task sends to another namespace (a ScheduledJob's) gets its Secret
    there, is adopted there by the next holder, and terminate() finds it there."""
    worker_namespace = f"hg-{uuid.uuid4().hex[:8]}"
    task = dataclasses.replace(
        SECRET_TASK,
        kubernetes=KubernetesJob(
            namespace=k8s_namespace, owner_name="nightly", owner_uid=str(uuid.uuid4())
        ),
    )
    options = {
        "job_namespaces": frozenset({k8s_namespace}),
        "template_tenants": frozenset({"ops"}),
    }
    first = dataclasses.replace(_attempt(task=task, token=1), namespace="ops")
    execution = asyncio.create_task(_executor(admin, worker_namespace, **options).execute(first))
    name = _name(first)
    job = await _eventually(lambda: _resumed(admin, k8s_namespace, name))
    assert job["metadata"]["labels"]["hourglass.io/scheduledjob"] == "nightly"
    assert _secret(admin, k8s_namespace, name) is not None
    execution.cancel()  # the worker gives the attempt up; the Job stays
    with pytest.raises(asyncio.CancelledError):
        await execution

    second = dataclasses.replace(first, attempt=2, fencing_token=FencingToken(2))
    executor = _executor(admin, worker_namespace, **options)
    adopted = asyncio.create_task(executor.execute(second))
    await _eventually(
        lambda: (
            _read_job(admin, k8s_namespace, name)["metadata"]["annotations"][
                "hourglass.io/fencing-token"
            ]
            == "2"
        )
    )
    await executor.terminate(second)
    assert _run_jobs(admin, k8s_namespace, first.run_id) == []
    assert _secret(admin, k8s_namespace, name) is None
    adopted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adopted
