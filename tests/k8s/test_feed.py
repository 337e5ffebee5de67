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

from pathlib import Path
from typing import Any

import grpc
import yaml
from kubernetes import client

from hourglass import cases
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from hourglass.embedded import EmbeddedRedis
from tests.k8s.case_helpers import (
    Example,
    Kubectl,
    apply_example,
    delete_example,
    platform_secret,
    run_pods,
    wait_ready,
)
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases", "tests.k8s.case_helpers"]

CASE = Example(
    "feed.yaml", "Feed", "feed", "social",
    owned=(
        ("deployment", "feed-social"),
        ("service", "feed-social"),
        ("configmap", "feed-social-spec"),
        ("scheduledjob", "feed-social-trim"),
        ("scheduledjob", "feed-social-prewarm"),
    ),
    etcd=True,
)  # fmt: skip


def test_kubectl_apply_of_the_example_serves_a_feed_and_delete_removes_it(
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    platform_secret(kubectl, {"database-url": database_url, "redis-url": redis_server.url,
                              "artifacts-url": str(tmp_path / "objects")})  # fmt: skip
    resource, job_ids = apply_example(kubectl, CASE, hourglass_api)
    assert resource["spec"]["maxMediaBytes"] == 64 << 20  # a CRD default, from the case's spec

    kubelet = run_pods(kubectl, k8s_client, k8s_namespace, ["feed-social"], tmp_path)["feed-social"]
    try:
        assert kubelet.args[:3] == ["serve", "feed", "--name"]
        wait_ready(kubectl, CASE)
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

    delete_example(kubectl, CASE, hourglass_api, job_ids)


def test_the_crd_refuses_a_bad_spec_naming_the_field(
    case_operator: RunningOperator, kubectl: Kubectl
) -> None:
    for field, value in (("replicas", 0), ("timelineSize", 5), ("uploadExpiry", "forever")):
        bad = yaml.safe_load(CASE.path.read_text())
        bad["spec"][field] = value
        refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0
        assert f"spec.{field}" in refused.stderr
    # Nothing was created: the API server refused each before storing it.
    assert CASE.get(kubectl) is None
