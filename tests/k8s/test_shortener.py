"""`kubectl apply -f examples/urlshortener.yaml`, as the README tells a user, against a real
kube-apiserver with the chart's CRDs, the real kubectl, and the operator's generic reconcile
with the real case registry.

As in test_leaderboard.py, no kubelet or controller runs here: the test plays them with
real parts (tests/k8s/case_helpers.py's Kubelet): it runs the write Deployment's container
(`hourglass serve shortener --role write ...`, ready when its gRPC health service says
SERVING, the probe a kubelet would run), the read Deployment's (`--role read`, ready when
GET /healthz answers 200) and the cache shard's (the image's redis-server with the platform
Secret's redis.conf, ready when its port accepts), on a real PostgreSQL and Redis, and only
then marks each Deployment available. The resource turns Ready from that.

The servers cannot resolve the shard's Service name here (no cluster DNS), so they serve
from PostgreSQL, riding out the cache errors as they do when a shard is away; the shard's
password is checked on the shard itself. Deleting the resource removes everything it owns.
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
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
EXAMPLE = REPO / "examples" / "urlshortener.yaml"
SECRET = "hourglass-cases"
PASSWORD = "s3cret-cache-pw"
PLATFORM = cases.Platform(image="hourglass:test", secret=SECRET, etcd_endpoints="etcd:2379")
DEPLOYMENTS = ["url-links-write", "url-links-read", "url-links-cache-0"]
OWNED = [
    *(("deployment", name) for name in DEPLOYMENTS),
    *(("service", name) for name in DEPLOYMENTS),
    ("configmap", "shortener-links-spec"),
    ("scheduledjob", "url-links-purge"),
    ("scheduledjob", "url-links-rollup"),
    ("networkpolicy", "url-links-cache"),
]


@pytest.fixture
def shortener_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningOperator]:
    assert "urlshorteners.hourglass.io" in crds  # the chart's generated CRD file
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    running = start_case_operator(hourglass_api, k8s_namespace, PLATFORM, name="shortener")
    yield running
    running.shutdown()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _follow(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Location") or ""
    finally:
        connection.close()


def test_kubectl_apply_of_the_example_serves_short_links_and_delete_removes_it(
    shortener_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    # The platform Secret as the chart makes it (charts/hourglass: the cases' Secret).
    kubectl("create", "secret", "generic", SECRET, f"--from-literal=database-url={database_url}",
            f"--from-literal=redis-url={redis_server.url}",
            f"--from-literal=redis-password={PASSWORD}",
            f"--from-literal=redis.conf=requirepass {PASSWORD}\n")  # fmt: skip

    applied = kubectl("apply", "-f", str(EXAMPLE))
    assert "urlshortener.hourglass.io/links created" in applied.stdout
    resource = wait_for(
        "the UrlShortener's status",
        lambda: condition(get(kubectl, "url", "links"), "Ready") and get(kubectl, "url", "links"),
    )
    uid = resource["metadata"]["uid"]
    assert resource["spec"]["writeReplicas"] == 1  # a CRD default, filled in by the API server

    for kind, name in OWNED:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "hourglass.io/v1alpha1", "kind": "UrlShortener", "name": "links",
            "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
    job_ids = set()
    for name in ("url-links-purge", "url-links-rollup"):
        scheduled = wait_for(
            f"{name} scheduled",
            lambda name=name: (get(kubectl, "sj", name) or {}).get("status", {}).get("jobId"),
        )
        job_ids.add(scheduled)
    assert job_ids <= {job.id for job in hourglass_api.jobs()}
    assert condition(resource, "Ready")["status"] == "False"  # nothing runs the pods yet

    kubelets: dict[str, Kubelet] = {}
    try:
        # Write first: the first server of a resource applies its migrations.
        for name in DEPLOYMENTS:
            deployment = get(kubectl, "deployment", name)
            assert deployment is not None
            kubelets[name] = kubelet = Kubelet(kubectl, deployment, tmp_path / name)
            wait_for(f"{name}'s readiness probe", kubelet.ready, timeout=90)
            _make_available(k8s_client, k8s_namespace, name, deployment["spec"]["replicas"])
        assert "grpc" in kubelets["url-links-write"].probe  # a gRPC health probe
        ready = wait_for(
            "Ready=True",
            lambda: (
                condition(get(kubectl, "url", "links"), "Ready").get("status") == "True"
                and get(kubectl, "url", "links")
            ),
        )
        assert condition(ready, "Ready")["reason"] == "Available"

        # Shorten through the CLI against the write pod; follow on the read pod.
        write, read = kubelets["url-links-write"], kubelets["url-links-read"]
        made = subprocess.run(
            [*HOURGLASS, "shortener", "--server", f"127.0.0.1:{write.ports['grpc']}", "shorten",
             "https://example.com/from/k8s"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        short, token_line = made.stdout.strip().splitlines()
        assert token_line.startswith("delete token: ")
        assert short.startswith("https://sho.rt/")  # the example's baseUrl
        key = short.rsplit("/", 1)[1]
        assert _follow(read.ports["http"], f"/{key}") == (302, "https://example.com/from/k8s")
        schema = cases.schema_name("shortener", "links", k8s_namespace)
        assert f"schema {schema}" in read.log.read_text(errors="replace")

        # The shard answers only with the password from the platform Secret.
        shard = kubelets["url-links-cache-0"].ports["redis"]
        with redis.Redis(port=shard) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with redis.Redis(port=shard, password=PASSWORD) as known:
            assert known.ping()
            assert known.config_get("appendonly") == {"appendonly": "no"}
    finally:
        for kubelet in kubelets.values():
            kubelet.stop()

    kubectl("delete", "-f", str(EXAMPLE), "--wait=true", "--timeout=30s")
    # A ScheduledJob's finalizer first deletes its hourglass job: one DeleteJob may time out
    # (10 s) on a busy machine and be retried 5 s later.
    for kind, name in OWNED:
        wait_for(
            f"{kind} {name} gone",
            lambda kind=kind, name=name: get(kubectl, kind, name) is None,
            timeout=60,
        )
    assert get(kubectl, "url", "links") is None
    assert not job_ids & {job.id for job in hourglass_api.jobs()}
