"""`kubectl apply -f examples/feed.yaml`, as the README tells a user, against a real
kube-apiserver with the chart's CRDs, the real kubectl, and the operator's generic reconcile
with the real case registry.

As in test_leaderboard.py, no kubelet or controller runs here: the test plays them with real
parts (tests/k8s/case_helpers.py's Kubelet): it runs the Deployment's container
(`hourglass serve feed --name social ...`, with the platform Secret's database and Redis
URLs, the etcd endpoints the operator was given, the spec ConfigMap at its mounted path), on
a real PostgreSQL, Redis and etcd, waits until its gRPC health says SERVING (the readiness
probe a kubelet would run), and only then marks the Deployment available. The resource
turns Ready from that. Deleting it removes everything it owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client

from hourglass import cases
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from hourglass.embedded import EmbeddedEtcd, EmbeddedRedis
from hourglass.operator import owned
from tests.k8s.case_helpers import Kubectl, Kubelet, get, start_case_operator
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_cases import _make_available, condition
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "feed.yaml"
SECRET = "hourglass-cases"
OWNED = [
    ("deployment", "feed-social"),
    ("service", "feed-social"),
    ("configmap", "feed-social-spec"),
    ("scheduledjob", "feed-social-trim"),
    ("scheduledjob", "feed-social-prewarm"),
]


@pytest.fixture
def feed_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    etcd_server: EmbeddedEtcd,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningOperator]:
    assert "feeds.hourglass.io" in crds  # the chart's generated CRD file
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    platform = cases.Platform(
        image="hourglass:test", secret=SECRET, etcd_endpoints=etcd_server.endpoint
    )
    running = start_case_operator(hourglass_api, k8s_namespace, platform, name="feed")
    yield running
    running.shutdown()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_kubectl_apply_of_the_example_serves_a_feed_and_delete_removes_it(
    feed_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    kubectl("create", "secret", "generic", SECRET, f"--from-literal=database-url={database_url}",
            f"--from-literal=redis-url={redis_server.url}",
            f"--from-literal=artifacts-url={tmp_path / 'objects'}")  # fmt: skip
    applied = kubectl("apply", "-f", str(EXAMPLE))
    assert "feed.hourglass.io/social created" in applied.stdout
    resource = wait_for(
        "the Feed's status",
        lambda: (
            condition(get(kubectl, "feed", "social"), "Ready") and get(kubectl, "feed", "social")
        ),
    )
    uid = resource["metadata"]["uid"]
    assert resource["spec"]["maxMediaBytes"] == 64 << 20  # a CRD default, from the case's spec
    for kind, name in OWNED:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "hourglass.io/v1alpha1", "kind": "Feed", "name": "social",
            "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
    names = ("feed-social-trim", "feed-social-prewarm")
    for name in names:
        wait_for(
            f"{name} scheduled",
            lambda name=name: (get(kubectl, "sj", name) or {}).get("status", {}).get("jobId"),
        )
    job_ids = {get(kubectl, "sj", name)["status"]["jobId"] for name in names}  # type: ignore[index]
    assert job_ids <= {job.id for job in hourglass_api.jobs()}
    assert condition(resource, "Ready")["status"] == "False"  # no pod runs yet

    deployment = get(kubectl, "deployment", "feed-social")
    assert deployment is not None
    kubelet = Kubelet(kubectl, deployment, tmp_path / "pod")
    try:
        assert kubelet.args[:3] == ["serve", "feed", "--name"]
        wait_for("the server's readiness probe", kubelet.ready, timeout=60)
        _make_available(k8s_client, k8s_namespace, "feed-social", 1)
        ready = wait_for(
            "Ready=True",
            lambda: (
                condition(get(kubectl, "feed", "social"), "Ready").get("status") == "True"
                and get(kubectl, "feed", "social")
            ),
        )
        assert condition(ready, "Ready")["reason"] == "Available"
        # The server answers: a follow and a post reach the follower's timeline.
        with grpc.insecure_channel(f"127.0.0.1:{kubelet.ports['grpc']}") as channel:
            stub = pb_grpc.FeedStub(channel)
            ada = stub.CreateUser(pb.CreateUserRequest(handle="ada"), timeout=30).id
            bob = stub.CreateUser(pb.CreateUserRequest(handle="bob"), timeout=30).id
            stub.Follow(pb.FollowRequest(user=bob, followee=ada), timeout=30)
            post = stub.CreatePost(pb.CreatePostRequest(user=ada, text="hi"), timeout=30).id

            def timeline() -> Any:
                page = stub.GetHomeTimeline(pb.TimelineRequest(user=bob), timeout=30)
                return [p.id for p in page.posts] == [post]

            wait_for("the post in bob's timeline", timeline)
        schema = cases.schema_name("feed", "social", k8s_namespace)
        assert f"schema {schema}" in kubelet.log.read_text(errors="replace")
    finally:
        kubelet.stop()

    kubectl("delete", "-f", str(EXAMPLE), "--wait=true", "--timeout=30s")
    for kind, name in OWNED:
        wait_for(
            f"{kind} {name} gone", lambda kind=kind, name=name: get(kubectl, kind, name) is None
        )
    assert get(kubectl, "feed", "social") is None
    assert not job_ids & {job.id for job in hourglass_api.jobs()}


def test_the_crd_refuses_a_bad_spec_naming_the_field(
    feed_operator: RunningOperator, kubectl: Kubectl
) -> None:
    for field, value in (("replicas", 0), ("timelineSize", 5), ("uploadExpiry", "forever")):
        bad = yaml.safe_load(EXAMPLE.read_text())
        bad["spec"][field] = value
        refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0
        assert f"spec.{field}" in refused.stderr
    # Nothing was created: the API server refused each before storing it.
    assert get(kubectl, "feed", "social") is None
