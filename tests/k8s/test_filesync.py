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
from pathlib import Path

import grpc
from kubernetes import client

from hourglass import cases
from hourglass.cases.filesync import chunking
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc
from tests.k8s.case_helpers import (
    Example,
    Kubectl,
    apply_example,
    delete_example,
    platform_secret,
    run_pods,
    wait_ready,
)
from tests.k8s.test_operator import HourglassApi, RunningOperator

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases", "tests.k8s.case_helpers"]

CASE = Example(
    "filesync.yaml", "FileSync", "fs", "team",
    owned=(
        ("deployment", "fs-team"),
        ("service", "fs-team"),
        ("configmap", "filesync-team-spec"),
        ("scheduledjob", "fs-team-gc"),
        ("scheduledjob", "fs-team-retention"),
        ("scheduledjob", "fs-team-expire"),
    ),
)  # fmt: skip


def test_kubectl_apply_of_the_example_serves_file_sync_and_delete_removes_it(
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    tmp_path: Path,
) -> None:
    objects = tmp_path / "objects"
    secret = {"database-url": database_url, "redis-url": "redis://127.0.0.1:1/0"}
    platform_secret(kubectl, {**secret, "artifacts-url": str(objects)})
    resource, job_ids = apply_example(kubectl, CASE, hourglass_api)
    assert resource["spec"]["maxChunkBytes"] == chunking.LARGEST  # the CRD's default

    kubelet = run_pods(kubectl, k8s_client, k8s_namespace, ["fs-team"], tmp_path)["fs-team"]
    try:
        assert kubelet.args[:3] == ["serve", "filesync", "--name"]
        wait_ready(kubectl, CASE)
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

    delete_example(kubectl, CASE, hourglass_api, job_ids)
