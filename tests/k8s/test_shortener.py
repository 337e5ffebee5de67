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
from pathlib import Path

import pytest
import redis
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
from tests.k8s.test_operator import HourglassApi, RunningOperator

pytest_plugins = ["tests.k8s.test_operator", "tests.k8s.test_cases", "tests.k8s.case_helpers"]

PASSWORD = "s3cret-cache-pw"
DEPLOYMENTS = ["url-links-write", "url-links-read", "url-links-cache-0"]  # write migrates
CASE = Example(
    "urlshortener.yaml", "UrlShortener", "url", "links",
    owned=(
        *(("deployment", name) for name in DEPLOYMENTS),
        *(("service", name) for name in DEPLOYMENTS),
        ("configmap", "shortener-links-spec"),
        ("scheduledjob", "url-links-purge"),
        ("scheduledjob", "url-links-rollup"),
        ("networkpolicy", "url-links-cache"),
    ),
)  # fmt: skip


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
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    database_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    # The platform Secret as the chart makes it (charts/hourglass: the cases' Secret).
    secret = {"database-url": database_url, "redis-url": redis_server.url}
    shard = {"redis-password": PASSWORD, "redis.conf": f"requirepass {PASSWORD}\n"}
    platform_secret(kubectl, {**secret, **shard})
    resource, job_ids = apply_example(kubectl, CASE, hourglass_api)
    assert resource["spec"]["writeReplicas"] == 1  # a CRD default, filled in by the API server

    kubelets = run_pods(kubectl, k8s_client, k8s_namespace, DEPLOYMENTS, tmp_path)
    try:
        assert "grpc" in kubelets["url-links-write"].probe  # a gRPC health probe
        wait_ready(kubectl, CASE)

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

    delete_example(kubectl, CASE, hourglass_api, job_ids)
