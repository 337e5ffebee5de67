"""`kubectl apply -f examples/leaderboard.yaml`, as the README tells a user, against a real
kube-apiserver with the chart's CRDs, the real kubectl, and the operator's generic reconcile
with the real case registry (hourglass.cases.NAMES), not a test-defined case.

No kubelet or kube-controller-manager runs here (tests/k8s/conftest.py), so the test plays
them, with real parts: it runs the Deployment's container as the kubelet would, i.e. the
container's own args and env (`hourglass serve leaderboard --name games ...`, the Secret's
values, the ConfigMap's spec.json at the mounted path), on a real PostgreSQL and Redis, waits
until the readiness probe's URL answers, and only then marks the Deployment available, as the
Deployment controller would. The resource turns Ready from that. With no garbage collector,
removal on delete is the operator's own (under its finalizer); the ownerReferences that the
collector would follow in a cluster are checked too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from kubernetes import client

from hourglass import cases
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.embedded import EmbeddedRedis
from tests.k8s.case_helpers import (
    Example,
    Kubectl,
    apply_example,
    condition,
    delete_example,
    get,
    platform_secret,
    run_pods,
    wait_ready,
)
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases", "tests.k8s.case_helpers"]

CASE = Example(
    "leaderboard.yaml",
    "Leaderboard",
    "lb",
    "games",
    owned=(
        ("deployment", "lb-games"),
        ("service", "lb-games"),
        ("configmap", "leaderboard-games-spec"),
        ("scheduledjob", "lb-games-rollup"),
        ("scheduledjob", "lb-games-retention"),
    ),
)
EXAMPLE = CASE.path


def test_kubectl_apply_of_the_example_serves_a_leaderboard_and_delete_removes_it(
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    assert "leaderboard" in cases.NAMES  # the real case registry, not a test-defined case
    platform_secret(kubectl, {"database-url": database_url, "redis-url": redis_server.url})
    resource, job_ids = apply_example(kubectl, CASE, hourglass_api)
    # The CRD's defaults are the case's: replicas filled in by the API server.
    assert resource["spec"]["replicas"] == 1
    # The rollup and retention ScheduledJobs, in `kubectl get sj`.
    listed = kubectl("get", "sj").stdout
    assert "lb-games-rollup" in listed and "lb-games-retention" in listed

    # Nothing runs the pods yet: not Ready.
    assert condition(resource, "Ready")["status"] == "False"
    assert condition(resource, "Progressing")["status"] == "True"
    assert resource["status"]["endpoints"][0] == f"grpc=lb-games.{k8s_namespace}.svc:50051"

    # Play the kubelet: run the Deployment's container; once its readiness probe answers,
    # play the Deployment controller: the replica is available.
    kubelet = run_pods(kubectl, k8s_client, k8s_namespace, ["lb-games"], tmp_path)["lb-games"]
    try:
        assert kubelet.args[:3] == ["serve", "leaderboard", "--name"]
        wait_ready(kubectl, CASE)
        assert "True" in kubectl("get", "lb", "games").stdout  # the Ready printer column

        # The server answers, in the resource's own schema, with the spec's buckets, and
        # the process serves the case's metrics on the metrics port.
        at = int(time.time()) - 60  # inside the example's 30-day retention
        minute = at // 60 * 60
        with grpc.insecure_channel(f"127.0.0.1:{kubelet.ports['grpc']}") as channel:
            stub = pb_grpc.LeaderboardStub(channel)
            event = pb.Event(key="ada", weight=3, timestamp=Timestamp(seconds=at))
            stub.RecordEvents(
                pb.RecordEventsRequest(batch_id="k8s", event_type="score", events=[event]),
                timeout=30,
            )
            answer = stub.FetchLeaderboard(
                pb.FetchLeaderboardRequest(
                    event_type="score", k=5, start=Timestamp(seconds=minute - 3600),
                    end=Timestamp(seconds=minute + 60),
                ),
                timeout=30,
            )  # fmt: skip
        assert [(e.key, e.count) for e in answer.entries] == [("ada", 3)]
        url = f"http://127.0.0.1:{kubelet.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as metrics:
            text = metrics.read().decode()
        assert 'hourglass_leaderboard_events_total{outcome="recorded"}' in text
        schema = cases.schema_name("leaderboard", "games", k8s_namespace)
        assert f"schema {schema}" in kubelet.log.read_text(errors="replace")
    finally:
        kubelet.stop()

    # Deleting the resource removes everything it owns, the ScheduledJobs' jobs included.
    delete_example(kubectl, CASE, hourglass_api, job_ids)


def test_a_spec_the_leaderboard_refuses_is_degraded_and_the_crd_refuses_what_it_can(
    case_operator: RunningOperator, kubectl: Kubectl
) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = "odd"
    document["spec"]["buckets"] = ["10m", "15m"]  # the CRD cannot judge this; the case can
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))

    def degraded() -> dict[str, Any] | None:
        found = condition(get(kubectl, "lb", "odd"), "Degraded")
        return found if found.get("status") == "True" else None

    found = wait_for("Degraded=True", degraded)
    assert found["reason"] == "InvalidSpec"
    assert "spec.buckets[1]: 15m must be a whole multiple of 10m" in found["message"]
    assert get(kubectl, "deployment", "lb-odd") is None
    # What the schema can judge, the API server refuses at apply time, naming the field.
    for field, value in (("replicas", 0), ("retention", "forever")):
        bad = yaml.safe_load(EXAMPLE.read_text())
        bad["spec"][field] = value
        refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0
        assert f"spec.{field}" in refused.stderr
