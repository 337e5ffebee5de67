"""The Kubernetes test bed works: a real kube-apiserver stores and validates Jobs, RBAC is on,
and the helper binaries run."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from tests.k8s.conftest import KubeApiServer


def _job(name: str) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "hourglass-test"}),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="run", image="busybox", command=["true"])],
                )
            ),
        ),
    )


def _condition(kind: str, at: datetime) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
        "lastProbeTime": at.isoformat(),
        "lastTransitionTime": at.isoformat(),
    }


def test_the_server_is_ready_and_reports_its_version(kube_apiserver: KubeApiServer) -> None:
    status, body = kube_apiserver.get("/readyz")
    assert (status, body) == (200, "ok")
    status, body = kube_apiserver.get("/version")
    assert status == 200
    assert '"major": "1"' in body


def test_a_job_finished_as_the_job_controller_would_reads_back_complete(
    k8s_client: client.ApiClient, k8s_namespace: str
) -> None:
    batch = client.BatchV1Api(k8s_client)
    created = batch.create_namespaced_job(k8s_namespace, _job("hello"))
    assert created.metadata.uid
    assert created.spec.selector.match_labels  # defaulted by the server
    assert created.status.conditions is None

    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    finished = started + timedelta(seconds=3)

    # Since 1.31 the Job controller first records SuccessCriteriaMet and then Complete; the
    # server refuses Complete without it (and without startTime/completionTime).
    with pytest.raises(client.ApiException) as refused:
        batch.patch_namespaced_job_status(
            "hello",
            k8s_namespace,
            {
                "status": {
                    "startTime": started.isoformat(),
                    "completionTime": finished.isoformat(),
                    "succeeded": 1,
                    "conditions": [_condition("Complete", finished)],
                }
            },
        )
    assert refused.value.status == 422
    assert "SuccessCriteriaMet" in str(refused.value.body)

    batch.patch_namespaced_job_status(
        "hello",
        k8s_namespace,
        {
            "status": {
                "startTime": started.isoformat(),
                "completionTime": finished.isoformat(),
                "active": 0,
                "ready": 0,
                "terminating": 0,
                "succeeded": 1,
                "uncountedTerminatedPods": {},
                "conditions": [
                    _condition("SuccessCriteriaMet", finished),
                    _condition("Complete", finished),
                ],
            }
        },
    )

    job = batch.read_namespaced_job("hello", k8s_namespace)
    assert job.status.succeeded == 1
    assert job.status.start_time == started
    assert job.status.completion_time == finished
    conditions = {c.type: c.status for c in job.status.conditions}
    assert conditions == {"SuccessCriteriaMet": "True", "Complete": "True"}


def test_rbac_forbids_the_limited_user_until_a_role_allows_it(
    kube_apiserver: KubeApiServer, k8s_client: client.ApiClient, k8s_namespace: str
) -> None:
    with kube_apiserver.api_client("limited") as limited:
        batch = client.BatchV1Api(limited)
        with pytest.raises(client.ApiException) as forbidden:
            batch.list_namespaced_job(k8s_namespace)
        assert forbidden.value.status == 403
        message = json.loads(forbidden.value.body)["message"]
        assert 'User "limited" cannot list resource "jobs"' in message
        with pytest.raises(client.ApiException) as forbidden:
            batch.create_namespaced_job(k8s_namespace, _job("nope"))
        assert forbidden.value.status == 403

        rbac = client.RbacAuthorizationV1Api(k8s_client)
        rbac.create_namespaced_role(
            k8s_namespace,
            {
                "metadata": {"name": "job-reader"},
                "rules": [
                    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]}
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            k8s_namespace,
            {
                "metadata": {"name": "limited-reads-jobs"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "job-reader",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}
                ],
            },
        )
        # RBAC is enforced from the API server's informer cache: the binding takes effect
        # shortly after it is stored, not at once, so wait for it as kubectl users do.
        deadline = time.monotonic() + 30
        while True:
            try:
                assert batch.list_namespaced_job(k8s_namespace).items == []
                break
            except client.ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with pytest.raises(client.ApiException) as forbidden:
            batch.create_namespaced_job(k8s_namespace, _job("still-nope"))
        assert forbidden.value.status == 403


def test_a_service_account_token_authenticates_as_the_service_account(
    kube_apiserver: KubeApiServer, k8s_namespace: str
) -> None:
    token = kube_apiserver.service_account_token(k8s_namespace, "operator")
    with kube_apiserver.token_client(token) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    assert review.status.user_info.username == f"system:serviceaccount:{k8s_namespace}:operator"


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("helm", ["version", "--short"], r"^v3\.\d+\.\d+"),
        ("kubeconform", ["-v"], r"^v0\.\d+\.\d+"),
        ("grpcurl", ["-version"], r"^grpcurl v1\.\d+\.\d+"),
    ],
)
def test_the_helper_binaries_run(
    k8s_tool: Callable[[str], Path], tool: str, args: list[str], expected: str
) -> None:
    result = subprocess.run(
        [str(k8s_tool(tool)), *args], capture_output=True, text=True, timeout=30, check=True
    )
    # Each reports the pinned release that scripts/k8s-tools stamped into it.
    assert re.match(expected, result.stdout + result.stderr)
