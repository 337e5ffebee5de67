"""`kubectl apply -f examples/filesync.yaml`, as the README tells a user, against a real
kube-apiserver with the chart's CRDs, the real kubectl, and the operator's generic reconcile
with the real case registry. The test plays the kubelet and the Deployment controller (no
controllers run here, tests/k8s/conftest.py): it runs the Deployment's container with its own
args, env (the Secret's database URL and object-store URL) and mounted spec, waits for its
readiness probe, and marks the Deployment available; the resource turns Ready from that.
Deleting the resource removes everything it owns."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kubernetes import client

from hourglass import cases
from hourglass.cases.filesync import chunking
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc
from hourglass.operator import owned
from tests.k8s.case_helpers import Kubectl, Kubelet, get, start_case_operator
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_cases import _make_available, condition
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "filesync.yaml"
SECRET = "hourglass-cases"
PLATFORM = cases.Platform(image="hourglass:test", secret=SECRET, etcd_endpoints="etcd:2379")
OWNED = [
    ("deployment", "fs-team"),
    ("service", "fs-team"),
    ("configmap", "filesync-team-spec"),
    ("scheduledjob", "fs-team-gc"),
    ("scheduledjob", "fs-team-retention"),
    ("scheduledjob", "fs-team-expire"),
]


@pytest.fixture
def filesync_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningOperator]:
    assert "filesyncs.hourglass.io" in crds  # the chart's generated CRD file
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    running = start_case_operator(hourglass_api, k8s_namespace, PLATFORM, name="filesync")
    yield running
    running.shutdown()


def test_kubectl_apply_of_the_example_serves_file_sync_and_delete_removes_it(
    filesync_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    tmp_path: Path,
) -> None:
    objects = tmp_path / "objects"
    kubectl("create", "secret", "generic", SECRET, f"--from-literal=database-url={database_url}",
            "--from-literal=redis-url=redis://127.0.0.1:1/0",
            f"--from-literal=artifacts-url={objects}")  # fmt: skip
    applied = kubectl("apply", "-f", str(EXAMPLE))
    assert "filesync.hourglass.io/team created" in applied.stdout
    resource = wait_for(
        "the FileSync's status",
        lambda: condition(get(kubectl, "fs", "team"), "Ready") and get(kubectl, "fs", "team"),
    )
    uid = resource["metadata"]["uid"]
    assert resource["spec"]["maxChunkBytes"] == chunking.LARGEST  # the CRD's default
    for kind, name in OWNED:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["uid"], reference["controller"]) == (
            "FileSync", uid, True
        )  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
    names = ("fs-team-gc", "fs-team-retention", "fs-team-expire")
    for name in names:
        wait_for(
            f"{name} scheduled",
            lambda name=name: (get(kubectl, "sj", name) or {}).get("status", {}).get("jobId"),
        )
    job_ids = {get(kubectl, "sj", name)["status"]["jobId"] for name in names}  # type: ignore[index]
    assert job_ids <= {job.id for job in hourglass_api.jobs()}
    assert condition(resource, "Ready")["status"] == "False"

    deployment = get(kubectl, "deployment", "fs-team")
    assert deployment is not None
    kubelet = Kubelet(kubectl, deployment, tmp_path / "pod")
    try:
        assert kubelet.args[:3] == ["serve", "filesync", "--name"]
        wait_for("the server's readiness probe", kubelet.ready, timeout=60)
        _make_available(k8s_client, k8s_namespace, "fs-team", 1)
        ready = wait_for(
            "Ready=True",
            lambda: (
                condition(get(kubectl, "fs", "team"), "Ready").get("status") == "True"
                and get(kubectl, "fs", "team")
            ),
        )
        assert condition(ready, "Ready")["reason"] == "Available"
        # The server stores a file in the object store from the Secret, and shares it with
        # the spec's baseUrl; the admin RPC the gc ScheduledJob calls answers.
        body = b"hello from the cluster\n"
        digest = hashlib.sha256(body).hexdigest()
        with grpc.insecure_channel(f"127.0.0.1:{kubelet.ports['grpc']}") as channel:
            stub = pb_grpc.FileSyncStub(channel)
            made = stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="docs", user="ann"))
            auth = (("authorization", f"Bearer {made.token}"),)
            stub.PutChunk(
                pb.PutChunkRequest(workspace="docs", chunks=[pb.Chunk(digest=digest, data=body)]),
                metadata=auth,
            )
            stub.CommitVersion(
                pb.CommitVersionRequest(
                    workspace="docs", path="hello.txt", chunks=[digest], digest=digest
                ),
                metadata=auth,
            )
            link = stub.CreateShareLink(
                pb.CreateShareLinkRequest(workspace="docs", path="hello.txt", expires_in=60),
                metadata=auth,
            )
            stub.CollectGarbage(pb.CollectGarbageRequest(), timeout=30)
        assert link.url.startswith("https://files.example.com/s/")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{kubelet.ports['http']}{link.path}", timeout=10
        ) as answer:
            assert answer.read() == body
        schema = cases.schema_name("filesync", "team", k8s_namespace)
        assert (objects / "filesync" / schema / "sha256").is_dir()
    finally:
        kubelet.stop()

    kubectl("delete", "-f", str(EXAMPLE), "--wait=true", "--timeout=30s")
    for kind, name in OWNED:
        wait_for(
            f"{kind} {name} gone", lambda kind=kind, name=name: get(kubectl, kind, name) is None
        )
    assert get(kubectl, "fs", "team") is None
    assert not job_ids & {job.id for job in hourglass_api.jobs()}
