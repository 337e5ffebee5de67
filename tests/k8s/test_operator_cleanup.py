"""The chart's uninstall hooks (templates/operator-cleanup.yaml): the command each hook Job runs,
run as a process against a real kube-apiserver with exactly the ServiceAccount and Roles the
chart renders for it, and the real operator (in a thread) finalizing what the hook deletes.

No Job controller or kubelet runs here, so Helm cannot run the hooks themselves; tests/cluster
does (test_helm_test_upgrade_and_uninstall).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from hourglass.operator import handlers
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_operator import (
    GROUP,
    PLURAL,
    HourglassApi,
    RunningOperator,
    ScheduledJobs,
    _scheduled,
    example,
    wait_for,
)

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_chart"]

RELEASE = "hg"
HOOK = f"{RELEASE}-hourglass-operator-cleanup"
LEASE = f"{RELEASE}-hourglass-operator"  # the operator's --lease, named for the release
Render = Callable[..., subprocess.CompletedProcess[str]]


def _hook_documents(template: Render, namespace: str, *values: str) -> list[dict[str, Any]]:
    rendered = template(
        "--set", f"operator.watchNamespaces={{{namespace}}}", *values,
        "--show-only", "templates/operator-cleanup.yaml", release=RELEASE, namespace=namespace,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def _as_the_hook(
    documents: list[dict[str, Any]],
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    tmp_path: Path,
) -> Path:
    """Creates the rendered ServiceAccount, Roles and RoleBindings; a kubeconfig with the
    ServiceAccount's token, the identity the hook's pod would have."""
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    core = client.CoreV1Api(k8s_client)
    for document in documents:
        namespace = document["metadata"].get("namespace")
        if document["kind"] == "ServiceAccount":
            core.create_namespaced_service_account(namespace, document)
        elif document["kind"] == "Role":
            rbac.create_namespaced_role(namespace, document)
        elif document["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, document)
    namespace = next(d for d in documents if d["kind"] == "ServiceAccount")["metadata"]["namespace"]
    token = kube_apiserver.service_account_token(namespace, HOOK)
    return kube_apiserver.write_kubeconfig(HOOK, token, tmp_path / "kubeconfig-hook.yaml")


def _job_args(documents: list[dict[str, Any]], hook: str) -> list[str]:
    job = next(
        d
        for d in documents
        if d["kind"] == "Job" and d["metadata"]["annotations"]["helm.sh/hook"] == hook
    )
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _hourglass(
    args: list[str], kubeconfig: Path, namespace: str, **popen: Any
) -> subprocess.Popen[str]:
    """The hook's container command (the image's entry point is `hourglass`)."""
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": namespace}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "hourglass"), *args],
        env=environment,
        text=True,
        **popen,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, (stdout or "") + (stderr or "")


def test_the_pre_delete_hook_deletes_every_scheduled_job_while_the_operator_finalizes_them(
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    template: Render,
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    tmp_path: Path,
) -> None:
    for name in ("hello", "hello-2"):
        body = example()
        body["metadata"]["name"] = name
        sj.create(body)
        wait_for(f"{name} scheduled", _scheduled(sj, name))
    assert len(hourglass_api.jobs()) == 2
    documents = _hook_documents(template, k8s_namespace)
    kubeconfig = _as_the_hook(documents, kube_apiserver, k8s_client, tmp_path)

    args = _job_args(documents, "pre-delete")
    print(f"\n$ hourglass {' '.join(args)}")
    code, output = _finish(
        _hourglass(args, kubeconfig, k8s_namespace, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )
    print(output)
    assert code == 0, output
    assert "resources deleted, 0 without the operator" in output
    assert sj.get("hello") is None and sj.get("hello-2") is None
    # The operator's finalizer ran for each: their jobs are gone from the API too.
    assert hourglass_api.jobs() == []


def test_without_the_operator_the_pre_delete_hook_drops_its_finalizer_after_the_timeout(
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    template: Render,
    crds: list[str],
    sj: ScheduledJobs,
    tmp_path: Path,
) -> None:
    body = example()
    # As the operator left it when it was scaled to zero: its finalizer on.
    body["metadata"]["finalizers"] = [handlers.FINALIZER]
    sj.create(body)
    documents = _hook_documents(
        template, k8s_namespace, "--set", "operator.uninstallCleanup.timeoutSeconds=1"
    )
    kubeconfig = _as_the_hook(documents, kube_apiserver, k8s_client, tmp_path)

    code, output = _finish(
        _hourglass(
            _job_args(documents, "pre-delete"),
            kubeconfig,
            k8s_namespace,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    print(output)
    assert code == 0, output
    assert f"1 without the operator: scheduledjobs/hello in {k8s_namespace}" in output
    assert sj.get("hello") is None


def test_the_post_delete_hook_deletes_the_lease_once_the_operator_pods_are_gone(
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    template: Render,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(k8s_client)
    leases = client.CoordinationV1Api(k8s_client)
    leases.create_namespaced_lease(
        k8s_namespace,
        {
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": "operator-0", "leaseDurationSeconds": 15},
        },
    )
    # An operator pod still terminating (held by a finalizer of this test; no kubelet here).
    labels = {
        "app.kubernetes.io/name": "hourglass",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "operator",
    }
    pod = f"{RELEASE}-hourglass-operator-0"
    core.create_namespaced_pod(
        k8s_namespace,
        {
            "metadata": {"name": pod, "labels": labels, "finalizers": ["test.hourglass.io/hold"]},
            "spec": {"containers": [{"name": "operator", "image": "hourglass:0.1.0"}]},
        },
    )
    core.delete_namespaced_pod(pod, k8s_namespace)
    documents = _hook_documents(template, k8s_namespace)
    kubeconfig = _as_the_hook(documents, kube_apiserver, k8s_client, tmp_path)

    log_file = tmp_path / "hook.log"
    with log_file.open("w") as log:
        process = _hourglass(
            _job_args(documents, "post-delete"),
            kubeconfig,
            k8s_namespace,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                "the hook to wait for the operator pod",
                lambda: f"waiting for operator pods: {pod}" in log_file.read_text(),
                timeout=60,
            )
            # While the pod is there, the Lease stays (the pod could still renew it).
            assert leases.read_namespaced_lease(LEASE, k8s_namespace)
            core.patch_namespaced_pod(pod, k8s_namespace, {"metadata": {"finalizers": None}})
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_file.read_text()
    print(output)
    assert process.returncode == 0, output
    assert "lease deleted" in output.splitlines()[-1]
    try:
        leases.read_namespaced_lease(LEASE, k8s_namespace)
        raise AssertionError("the Lease is still there")
    except client.ApiException as error:
        assert error.status == 404


def test_the_hooks_have_no_rights_beyond_their_resources_and_the_lease(
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    template: Render,
    crds: list[str],
    tmp_path: Path,
) -> None:
    documents = _hook_documents(template, k8s_namespace)
    _as_the_hook(documents, kube_apiserver, k8s_client, tmp_path)
    token = kube_apiserver.service_account_token(k8s_namespace, HOOK)
    checks = {
        ("delete", GROUP, PLURAL, k8s_namespace, ""): True,
        ("patch", GROUP, PLURAL, k8s_namespace, ""): True,
        ("delete", GROUP, "leaderboards", k8s_namespace, ""): True,
        ("delete", "coordination.k8s.io", "leases", k8s_namespace, LEASE): True,
        # Another release's operator Lease in the same namespace is not this hook's.
        ("delete", "coordination.k8s.io", "leases", k8s_namespace, f"x{LEASE}"): False,
        ("delete", "coordination.k8s.io", "leases", k8s_namespace, "another"): False,
        ("create", "coordination.k8s.io", "leases", k8s_namespace, ""): False,
        ("delete", GROUP, PLURAL, "kube-system", ""): False,
        ("create", GROUP, PLURAL, k8s_namespace, ""): False,
        ("delete", "", "pods", k8s_namespace, ""): False,
        ("get", "", "secrets", k8s_namespace, ""): False,
        ("create", "batch", "jobs", k8s_namespace, ""): False,
    }
    with kube_apiserver.token_client(token) as api:
        authorization = client.AuthorizationV1Api(api)
        answers = {
            check: authorization.create_self_subject_access_review(
                {
                    "spec": {
                        "resourceAttributes": {
                            "verb": check[0],
                            "group": check[1],
                            "resource": check[2],
                            "namespace": check[3],
                            "name": check[4],
                        }
                    }
                }
            ).status.allowed
            for check in checks
        }
    assert answers == checks


def test_uninstall_hooks_are_rendered_only_with_the_operator(template: Render) -> None:
    def hook_jobs(*values: str) -> list[str]:
        rendered = template(*values)
        assert rendered.returncode == 0, rendered.stderr
        return [
            f"{d['metadata']['annotations']['helm.sh/hook']}:{d['metadata']['name']}"
            for d in yaml.safe_load_all(rendered.stdout)
            if d and d["kind"] == "Job" and "delete" in d["metadata"]["annotations"]["helm.sh/hook"]
        ]

    assert hook_jobs() == [f"pre-delete:{HOOK}", f"post-delete:{HOOK}-lease"]
    assert hook_jobs("--set", "operator.enabled=false") == []
    assert hook_jobs("--set", "operator.uninstallCleanup.enabled=false") == []
