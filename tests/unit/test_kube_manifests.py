"""What a job pod may do, as the Kubernetes executor builds it: no server needed.

tests/k8s/test_executor.py shows the same objects accepted (and a restricted namespace
admitting the pod) by a real API server.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from hourglass.domain import FencingToken, JobId, RunId, Task
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_config import KubernetesConfig
from hourglass.workers.executors.kube_manifests import (
    SECRET_ANNOTATION,
    Refused,
    job_manifest,
    secret_key,
    secret_manifest,
    secret_of,
    waits_for_secret,
)

DIGEST = "sha256:" + "cd" * 32
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _attempt(task: Task) -> AttemptContext:
    return AttemptContext(
        run_id=RunId(uuid.uuid4()),
        job_id=JobId(uuid.uuid4()),
        attempt=1,
        fencing_token=FencingToken(7),
        scheduled_at=datetime(2026, 11, 29, tzinfo=UTC),
        task=task,
        timeout=None,
        worker_id="w",
    )


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


@pytest.mark.parametrize(
    "task",
    [
        Task(command=("true",), image="busybox:1.36"),
        Task(command=(), binary=DIGEST),
    ],
    ids=["image", "binary"],
)
def test_every_container_of_a_job_pod_meets_the_restricted_profile(task: Task) -> None:
    config = KubernetesConfig(
        artifacts_url="s3://bin", service_account="hg-hourglass-job", run_as_user=2000
    )
    job = job_manifest(config, _attempt(task))
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hg-hourglass-job"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    containers = _containers(job)
    assert len(containers) == (2 if task.binary else 1)
    for container in containers:
        assert container["securityContext"] == RESTRICTED_CONTAINER
    for field in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert field not in pod


def test_without_a_service_account_the_namespace_default_is_used_but_mounts_no_token() -> None:
    job = job_manifest(KubernetesConfig(), _attempt(Task(command=("true",), image="busybox")))
    pod = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False


def test_secret_env_is_a_reference_to_the_jobs_secret_never_text_in_the_job() -> None:
    task = Task(
        command=("true",),
        image="busybox",
        env={"PLAIN": "visible"},
        secret_env={
            "API_KEY": "s3cr3t-value",
            "odd name!": "other-secret",
            "HOURGLASS_RUN_ID": "x",
        },
    )
    attempt = _attempt(task)
    job = job_manifest(KubernetesConfig(), attempt)
    name = job["metadata"]["name"]
    text = json.dumps(job)
    assert "s3cr3t-value" not in text and "other-secret" not in text
    # Suspended until its Secret exists; the annotation names that Secret.
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"][SECRET_ANNOTATION] == name
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var for var in container["env"]}
    assert env["PLAIN"] == {"name": "PLAIN", "value": "visible"}
    assert env["API_KEY"] == {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "API_KEY"}},
    }
    odd_key = env["odd name!"]["valueFrom"]["secretKeyRef"]["key"]
    assert odd_key == secret_key("odd name!") and odd_key.startswith("sha256-")
    # hourglass's own variables win, and appear once.
    assert env["HOURGLASS_RUN_ID"] == {"name": "HOURGLASS_RUN_ID", "value": str(attempt.run_id)}
    assert len(container["env"]) == len(env)

    uid = str(uuid.uuid4())
    created = {**job, "metadata": {**job["metadata"], "uid": uid}}
    assert waits_for_secret(created) == name
    secret = secret_manifest(created, attempt)
    assert secret["metadata"]["name"] == name
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
    ]
    assert secret["immutable"] is True
    assert {key: base64.b64decode(value).decode() for key, value in secret["data"].items()} == {
        "API_KEY": "s3cr3t-value",
        odd_key: "other-secret",
    }
    assert secret["metadata"]["labels"] == job["metadata"]["labels"]


def test_a_job_without_secret_env_has_no_secret_and_is_not_suspended() -> None:
    job = job_manifest(KubernetesConfig(), _attempt(Task(command=("true",), image="busybox")))
    assert "suspend" not in job["spec"]
    assert secret_of(job) == "" and waits_for_secret(job) == ""
    # A Job suspended by someone else (a queueing controller) is not ours to resume.
    job["spec"]["suspend"] = True
    assert waits_for_secret(job) == ""


def test_the_init_container_alone_reads_the_signed_url_of_the_binary_from_the_secret() -> None:
    """No store credential and no store address reach the pod: the init container gets the
    URL the worker signed for this binary, by reference to the attempt's Secret; the task's
    container does not refer to it."""
    task = Task(command=(), binary=DIGEST, secret_env={"TOKEN": "t0ps3cret"})
    job = job_manifest(KubernetesConfig(artifacts_url="s3://b/p"), _attempt(task))
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    reference = {"secretKeyRef": {"name": name, "key": "hourglass.binary-url"}}
    assert fetch["env"] == [{"name": "HOURGLASS_BINARY_URL", "valueFrom": reference}]
    [task_container] = pod["containers"]
    assert reference not in [var.get("valueFrom") for var in task_container["env"]]
    assert "s3://b/p" not in json.dumps(job)
    assert job["spec"]["suspend"] is True and waits_for_secret(job) == name


def test_a_binary_job_without_secret_env_still_waits_for_its_secret() -> None:
    job = job_manifest(
        KubernetesConfig(artifacts_url="s3://b"), _attempt(Task(command=(), binary=DIGEST))
    )
    assert waits_for_secret(job) == job["metadata"]["name"]


def test_the_secret_carries_the_signed_url_beside_secret_env_and_never_mixes_them() -> None:
    """A secret_env variable named like the URL's key cannot replace the URL: it gets a key
    of its own."""
    task = Task(
        command=(), binary=DIGEST, secret_env={"hourglass.binary-url": "evil", "TOKEN": "t"}
    )
    attempt = _attempt(task)
    job = job_manifest(KubernetesConfig(artifacts_url="s3://b"), attempt)
    job["metadata"]["uid"] = "u-1"
    url = "https://s3.example/b/sha256/ab?X-Amz-Signature=x"
    data = secret_manifest(job, attempt, binary_url=url)["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in data.items()}
    assert decoded["hourglass.binary-url"] == url
    assert decoded["TOKEN"] == "t"
    assert decoded[secret_key("hourglass.binary-url")] == "evil"
    assert secret_key("hourglass.binary-url").startswith("sha256-")
    assert (
        "hourglass.binary-url"
        not in secret_manifest(job, _attempt(Task(command=("true",), image="x")))["data"]
    )


@pytest.mark.parametrize("url", ["file:///srv", "/var/lib/hourglass/artifacts"])
def test_a_folder_store_cannot_give_a_pod_its_binary(url: str) -> None:
    with pytest.raises(Refused, match="only an s3:// artifact store"):
        job_manifest(KubernetesConfig(artifacts_url=url), _attempt(Task(command=(), binary=DIGEST)))


@pytest.mark.parametrize("seconds", [0, 7 * 24 * 3600 + 1])
def test_the_signed_url_lives_from_a_second_to_s3s_seven_days(seconds: int) -> None:
    with pytest.raises(ValueError, match="binary_url_seconds"):
        KubernetesConfig(binary_url_seconds=seconds)


@pytest.mark.parametrize("uid", [0, -1, 2**31])
def test_job_pods_never_run_as_root(uid: int) -> None:
    with pytest.raises(ValueError, match="run_as_user"):
        KubernetesConfig(run_as_user=uid)
