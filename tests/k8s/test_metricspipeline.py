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
from pathlib import Path

from kubernetes import client

from hourglass import cases
from hourglass.embedded import EmbeddedRedis
from tests.acceptance.conftest import HOURGLASS
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

DEPLOYMENTS = ["mp-telemetry", "mp-telemetry-consumer"]  # the server first: it migrates
CASE = Example(
    "metricspipeline.yaml", "MetricsPipeline", "mp", "telemetry",
    owned=(
        *(("deployment", name) for name in DEPLOYMENTS),
        ("service", "mp-telemetry"),
        ("configmap", "metrics-telemetry-spec"),
        ("scheduledjob", "mp-telemetry-compact"),
        ("scheduledjob", "mp-telemetry-downsample"),
        ("scheduledjob", "mp-telemetry-retention"),
    ),
)  # fmt: skip


def test_kubectl_apply_of_the_example_ingests_and_serves_and_delete_removes_it(
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    # The platform Secret, with the object store's URL.
    platform_secret(kubectl, {"database-url": database_url, "redis-url": redis_server.url,
                              "artifacts-url": str(tmp_path / "objects")})  # fmt: skip
    resource, job_ids = apply_example(kubectl, CASE, hourglass_api)
    assert resource["spec"]["replicas"] == 1  # a CRD default, filled in by the API server

    kubelets = run_pods(kubectl, k8s_client, k8s_namespace, DEPLOYMENTS, tmp_path)
    try:
        wait_ready(kubectl, CASE)
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

    delete_example(kubectl, CASE, hourglass_api, job_ids)
