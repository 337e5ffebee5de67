"""`kubectl apply -f examples/metricspipeline.yaml`, as the README tells a user, against a
real kube-apiserver with the chart's CRDs, the real kubectl, and the operator's generic
reconcile with the real case registry.

As in test_leaderboard.py, no kubelet or controller runs here: the test plays them with real
parts (tests/k8s/case_helpers.py's Kubelet). It runs the server Deployment's container
(`hourglass serve metrics --role server ...`, ready when GET /healthz answers 200) and the
consumer Deployment's (`--role consumer`, ready when its metrics port accepts), on a real
PostgreSQL, Redis and a local object store named by the platform Secret, and only then marks
each Deployment available. A point sent to the server is read back once the consumer pod has
written it: the two Deployments work together. Deleting the resource removes all it owns.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from hourglass import cases
from hourglass.embedded import EmbeddedRedis
from hourglass.operator import owned
from tests.acceptance.conftest import HOURGLASS
from tests.k8s.case_helpers import Kubectl, Kubelet, get, start_case_operator
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_cases import _make_available, condition
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "metricspipeline.yaml"
SECRET = "hourglass-cases"
PLATFORM = cases.Platform(image="hourglass:test", secret=SECRET, etcd_endpoints="etcd:2379")
DEPLOYMENTS = ["mp-telemetry", "mp-telemetry-consumer"]
JOBS = ["mp-telemetry-compact", "mp-telemetry-downsample", "mp-telemetry-retention"]
OWNED = [
    *(("deployment", name) for name in DEPLOYMENTS),
    ("service", "mp-telemetry"),
    ("configmap", "metrics-telemetry-spec"),
    *(("scheduledjob", name) for name in JOBS),
]


@pytest.fixture
def metrics_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningOperator]:
    assert "metricspipelines.hourglass.io" in crds  # the chart's generated CRD file
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    running = start_case_operator(hourglass_api, k8s_namespace, PLATFORM, name="metrics")
    yield running
    running.shutdown()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_kubectl_apply_of_the_example_ingests_and_serves_and_delete_removes_it(
    metrics_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    # The platform Secret as the chart makes it, with the object store's URL.
    kubectl("create", "secret", "generic", SECRET, f"--from-literal=database-url={database_url}",
            f"--from-literal=redis-url={redis_server.url}",
            f"--from-literal=artifacts-url={tmp_path / 'objects'}")  # fmt: skip

    applied = kubectl("apply", "-f", str(EXAMPLE))
    assert "metricspipeline.hourglass.io/telemetry created" in applied.stdout
    resource = wait_for(
        "the MetricsPipeline's status",
        lambda: (
            condition(get(kubectl, "mp", "telemetry"), "Ready") and get(kubectl, "mp", "telemetry")
        ),
    )
    uid = resource["metadata"]["uid"]
    assert resource["spec"]["replicas"] == 1  # a CRD default, filled in by the API server
    for kind, name in OWNED:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "hourglass.io/v1alpha1", "kind": "MetricsPipeline",
            "name": "telemetry", "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
    job_ids = {
        wait_for(
            f"{name} scheduled",
            lambda name=name: (get(kubectl, "sj", name) or {}).get("status", {}).get("jobId"),
        )
        for name in JOBS
    }
    assert job_ids <= {job.id for job in hourglass_api.jobs()}
    assert condition(resource, "Ready")["status"] == "False"  # nothing runs the pods yet

    kubelets: dict[str, Kubelet] = {}
    try:
        for name in DEPLOYMENTS:  # the server first: it applies the schema's migrations
            deployment = get(kubectl, "deployment", name)
            assert deployment is not None
            kubelets[name] = kubelet = Kubelet(kubectl, deployment, tmp_path / name)
            wait_for(f"{name}'s readiness probe", kubelet.ready, timeout=90)
            _make_available(k8s_client, k8s_namespace, name, deployment["spec"]["replicas"])
        ready = wait_for(
            "Ready=True",
            lambda: (
                condition(get(kubectl, "mp", "telemetry"), "Ready").get("status") == "True"
                and get(kubectl, "mp", "telemetry")
            ),
        )
        assert condition(ready, "Ready")["reason"] == "Available"

        server = kubelets["mp-telemetry"]
        address = f"127.0.0.1:{server.ports['grpc']}"
        at = int(time.time() * 1000) - 1_000
        subprocess.run(
            [*HOURGLASS, "metrics", "--server", address, "send", 'k8s_up{pod="a"}', "1",
             "--at", str(at)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        body = f"k8s,pod=b up=2 {at}".encode()
        push = urllib.request.Request(
            f"http://127.0.0.1:{server.ports['http']}/api/v2/write?precision=ms",
            data=body, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(push, timeout=30) as answer:
            assert answer.status == 204

        def read_back() -> object:
            done = subprocess.run(
                [*HOURGLASS, "metrics", "--server", address, "fetch", '{__name__=~"k8s_up"}'],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if done.returncode != 0:  # the server busy or restarting: ask again
                return False
            found = json.loads(done.stdout).get("datasets", [])
            return len(found) == 2 and found

        datasets = wait_for("the consumer pod's files", read_back, timeout=90)
        assert sorted(d["values"][0] for d in datasets) == [1.0, 2.0]  # type: ignore[union-attr]
        schema = cases.schema_name("metrics", "telemetry", k8s_namespace)
        assert f"schema {schema}" in server.log.read_text(errors="replace")
        assert "consuming" in kubelets["mp-telemetry-consumer"].log.read_text(errors="replace")
    finally:
        for kubelet in kubelets.values():
            kubelet.stop()

    kubectl("delete", "-f", str(EXAMPLE), "--wait=true", "--timeout=30s")
    for kind, name in OWNED:
        wait_for(
            f"{kind} {name} gone", lambda kind=kind, name=name: get(kubectl, kind, name) is None
        )
    assert get(kubectl, "mp", "telemetry") is None
    assert not job_ids & {job.id for job in hourglass_api.jobs()}
