"""The chart in production shape: probes and PodDisruptionBudgets on every component, the
optional spread, monitors and autoscalers, `helm template` with the defaults, the offline
`make chart-check` (which fails when it validates nothing), and the operator's credentials
without manual steps: its projected service account token, which the real API accepts after a
TokenReview against a real kube-apiserver.

That each probe path is served, and flips with PostgreSQL, is tests/integration/test_health.py
(api, producer, worker, claimer) and the operator test below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client

from hourglass.embedded import free_port
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.k8s.conftest import REPO, KubeApiServer

CHART = REPO / "charts" / "hourglass"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
COMPONENTS = ("api", "producer", "worker", "claimer", "operator")
DEADLINE = 60.0


def _run(args: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def helm(k8s_tool: Callable[[str], Path]) -> Path:
    return k8s_tool("helm")


def _render(helm: Path, *values: str) -> dict[tuple[str, str], dict[str, Any]]:
    """`helm template` with no --kube-version, as a user types it: {(kind, name): object}."""
    result = _run([helm, "template", "hg", CHART, "--namespace", "hourglass", *values])
    assert result.returncode == 0, result.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_helm_template_renders_with_the_defaults(helm: Path) -> None:
    objects = _render(helm)
    assert ("Deployment", "hg-hourglass-api") in objects
    assert len(objects) > 30


@pytest.mark.parametrize("metrics", ["true", "false"])
def test_every_component_has_probes_on_its_health_port_and_a_disruption_budget(
    helm: Path, metrics: str
) -> None:
    objects = _render(helm, "--set", f"metrics.enabled={metrics}")
    for component in COMPONENTS:
        name = f"hg-hourglass-{component}"
        deployment = objects[("Deployment", name)]
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        # The port the probes call is the one the process serves /healthz and /readyz on.
        assert env["HOURGLASS_METRICS_LISTEN"] == f"0.0.0.0:{ports['metrics']}"
        readiness = container["readinessProbe"]["httpGet"]
        assert readiness == {"path": "/readyz", "port": "metrics"}, component
        if component == "api":
            assert container["livenessProbe"]["grpc"] == {"port": ports["grpc"]}
        else:
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        assert ("prometheus.io/scrape" in annotations) == (metrics == "true")

        budget = objects[("PodDisruptionBudget", name)]["spec"]
        assert budget["maxUnavailable"] == 1
        assert budget["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_every_option_renders_spread_monitors_autoscalers_and_budgets(helm: Path) -> None:
    objects = _render(helm, "--values", str(ALL_OPTIONS))
    for component in COMPONENTS:
        spec = objects[("Deployment", f"hg-hourglass-{component}")]["spec"]
        spread = spec["template"]["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == [
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        ]
        assert spread[0]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
        # With an autoscaler, the Deployment leaves the replica count to it.
        assert ("replicas" in spec) == (component not in ("api", "worker"))
    assert objects[("PodDisruptionBudget", "hg-hourglass-api")]["spec"] == {
        **objects[("PodDisruptionBudget", "hg-hourglass-api")]["spec"],
        "minAvailable": 1,
    }
    assert "maxUnavailable" not in objects[("PodDisruptionBudget", "hg-hourglass-api")]["spec"]
    hpa = objects[("HorizontalPodAutoscaler", "hg-hourglass-worker")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    monitor = objects[("ServiceMonitor", "hg-hourglass")]
    service = objects[("Service", "hg-hourglass-metrics")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pods = objects[("PodMonitor", "hg-hourglass")]["spec"]["selector"]["matchExpressions"][0]
    assert sorted(pods["values"]) == sorted(COMPONENTS)


def test_the_operator_authenticates_with_its_projected_token_which_the_api_maps(
    helm: Path,
) -> None:
    """No Secret to make: the API accepts exactly the operator's service account, for the
    audience the operator's projected token is issued for, and may only review tokens."""
    objects = _render(helm)
    operator = objects[("Deployment", "hg-hourglass-operator")]["spec"]["template"]["spec"]
    api = _container(objects[("Deployment", "hg-hourglass-api")])
    args = api["args"]
    account = args[args.index("--kubernetes-service-account") + 1]
    assert account == f"hourglass/{operator['serviceAccountName']}=default"
    audience = args[args.index("--kubernetes-token-audience") + 1]
    projected = operator["volumes"][-1]["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == audience
    env = {
        e["name"]: e.get("value")
        for e in _container({"spec": {"template": {"spec": operator}}})["env"]
    }
    assert env["HOURGLASS_TOKEN_FILE"] == "/var/run/secrets/hourglass/token"
    assert "HOURGLASS_TOKEN" not in env
    role = next(
        o for (kind, name), o in objects.items() if kind == "ClusterRole" and name.endswith("-api")
    )
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    # The old way stays available: a token from a Secret.
    legacy = _render(helm, "--set", "operator.token.fromServiceAccount=false")
    legacy_env = _container(legacy[("Deployment", "hg-hourglass-operator")])["env"]
    assert any(e["name"] == "HOURGLASS_TOKEN" for e in legacy_env)
    assert (
        "--kubernetes-service-account"
        not in _container(legacy[("Deployment", "hg-hourglass-api")])["args"]
    )


# --- make chart-check ------------------------------------------------------------------------


def _chart_check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run(
        [REPO / "scripts" / "chart-check", *args],
        input=stdin,
        env={**os.environ, "PYTHON": sys.executable},
    )


def test_chart_check_validates_the_defaults_and_every_option(
    k8s_tool: Callable[[str], Path],
) -> None:
    for name in ("kube-apiserver", "helm", "kubeconform"):
        k8s_tool(name)
    result = _chart_check()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "objects valid" in line]
    assert [line.split(":")[0] for line in lines] == [
        "helm template (defaults)",
        "helm template (charts/hourglass/ci/all-options-values.yaml)",
    ]
    for line in lines:
        assert int(line.split(": ")[1].split()[0]) > 40, line


BAD_STREAMS = {
    "empty render": ("", "no object validated"),
    "unknown field": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nbogus: 1\n",
        "additional properties 'bogus' not allowed",
    ),
    "kind without schema": (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
        "could not find schema for Widget",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_chart_check_fails_when_it_validates_nothing_or_something_is_wrong(
    k8s_tool: Callable[[str], Path], case: str
) -> None:
    k8s_tool("kube-apiserver")
    stream, message = BAD_STREAMS[case]
    result = _chart_check("--manifests", "-", stdin=stream)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr


# --- the operator's token, reviewed by the real API server -----------------------------------


def _token(kube: KubeApiServer, namespace: str, name: str, audience: str) -> str:
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except client.ApiException as error:
            if error.status != 409:
                raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=3600)
        )
        response = core.create_namespaced_service_account_token(name, namespace, request)
        return str(response.status.token)


def _allow_token_reviews(kube: KubeApiServer, user: str) -> None:
    """What the chart's ClusterRole grants the API, bound to a static user."""
    name = f"reviewer-{uuid.uuid4().hex[:8]}"
    with kube.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(
            {
                "metadata": {"name": name},
                "rules": [
                    {
                        "apiGroups": ["authentication.k8s.io"],
                        "resources": ["tokenreviews"],
                        "verbs": ["create"],
                    }
                ],
            }
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [
                    {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
                ],
            }
        )


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def _until(port: int, path: str, status: int) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        last = _get(port, path)
        if last[0] == status:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered {status}; last {last}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _start(
    processes: list[subprocess.Popen[bytes]], args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hourglass.cli.main", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    processes.append(process)
    return process


def test_the_api_accepts_the_operators_projected_token_and_nothing_else(
    kube_apiserver: KubeApiServer,
    k8s_namespace: str,
    database_url: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    _allow_token_reviews(kube_apiserver, "limited")
    api_metrics = free_port()
    api = _start(
        processes,
        [
            "api",
            "--listen",
            "127.0.0.1:0",
            "--kubernetes-service-account",
            f"{k8s_namespace}/operator=default",
        ],
        {
            "HOURGLASS_DATABASE_URL": database_url,
            "HOURGLASS_METRICS_LISTEN": f"127.0.0.1:{api_metrics}",
            # Its Kubernetes identity may only create TokenReviews.
            "KUBECONFIG": str(kube_apiserver.kubeconfigs["limited"]),
        },
    )
    assert api.stdout is not None
    address = api.stdout.readline().decode().split()[-1]

    def list_jobs(token: str) -> grpc.StatusCode:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.JobSchedulerStub(channel)  # type: ignore[no-untyped-call]
            try:
                stub.ListJobs(
                    pb.ListJobsRequest(),
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=30,
                )
            except grpc.RpcError as error:
                return error.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

    operator_token = _token(kube_apiserver, k8s_namespace, "operator", "hourglass")
    assert list_jobs(operator_token) == grpc.StatusCode.OK
    other = _token(kube_apiserver, k8s_namespace, "someone-else", "hourglass")
    assert list_jobs(other) == grpc.StatusCode.UNAUTHENTICATED
    wrong_audience = _token(kube_apiserver, k8s_namespace, "operator", "another-service")
    assert list_jobs(wrong_audience) == grpc.StatusCode.UNAUTHENTICATED
    assert list_jobs(operator_token[:-4] + "AAAA") == grpc.StatusCode.UNAUTHENTICATED

    # The operator reads the token from its (projected) file and is ready once the API
    # answers; /readyz turns 503 when the API goes away, /healthz stays 200.
    token_file = tmp_path / "token"
    token_file.write_text(operator_token)
    operator_metrics = free_port()
    _start(
        processes,
        [
            "operator",
            "--server",
            address,
            "--namespace",
            k8s_namespace,
            "--lease",
            "",
            "--token-file",
            str(token_file),
        ],
        {
            "HOURGLASS_METRICS_LISTEN": f"127.0.0.1:{operator_metrics}",
            "KUBECONFIG": str(kube_apiserver.kubeconfig),
        },
    )
    body = _until(operator_metrics, "/readyz", 200)
    assert body["checks"] == {"hourglass api": "ok"}
    api.terminate()
    api.wait(30)
    body = _until(operator_metrics, "/readyz", 503)
    assert body["checks"]["hourglass api"] == "the hourglass API: UNAVAILABLE"
    assert _get(operator_metrics, "/healthz")[0] == 200
