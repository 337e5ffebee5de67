"""The chart's bundled etcd as a 3-member cluster (`etcd.replicas: 3`), by `helm template`
alone: the members would form one cluster (each one's name and advertised peer URL are its
entry of --initial-cluster, under the DNS names the StatefulSet and its headless Service
give the pods), every component is given every member as an etcd endpoint, and the members
may reach each other's peer port under the chart's NetworkPolicies."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import REPO
from tests.k8s.netpol import Endpoint, allowed

CHART = REPO / "charts" / "hourglass"
NAMESPACE = "hourglass"
ETCD = "hg-hourglass-etcd"
LABELS = {
    "app.kubernetes.io/name": "hourglass",
    "app.kubernetes.io/instance": "hg",
    "app.kubernetes.io/component": "etcd",
}


@pytest.fixture(scope="module")
def render(k8s_tool: Callable[[str], Path]) -> Callable[..., subprocess.CompletedProcess[str]]:
    helm = k8s_tool("helm")
    # The Kubernetes version of the test bed's own binaries (helm would otherwise assume
    # v1.20 and refuse the chart's kubeVersion).
    shown = subprocess.run(
        [str(k8s_tool("kube-apiserver")), "--version"], capture_output=True, text=True, check=True
    )
    version = shown.stdout.split()[-1].removeprefix("v").split("+")[0]

    def run(*values: str) -> subprocess.CompletedProcess[str]:
        args = ["template", "hg", str(CHART), "--namespace", NAMESPACE, "--kube-version", version]
        return subprocess.run(
            [str(helm), *args, *values],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def documents(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


def etcd_endpoints(docs: list[dict[str, Any]]) -> dict[str, str]:
    """HOURGLASS_ETCD_ENDPOINTS of every container (and init container) that has it."""
    found = {}
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec")
        for container in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            for env in container.get("env", []):
                if env["name"] == "HOURGLASS_ETCD_ENDPOINTS":
                    found[f"{doc['metadata']['name']}/{container['name']}"] = env["value"]
    return found


def test_three_replicas_render_one_cluster_of_three_members(
    render: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    docs = documents(render("--set", "etcd.replicas=3"))
    statefulset = find(docs, "StatefulSet", ETCD)
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    # None is ready before a majority is up: an ordered start would wait forever.
    assert spec["podManagementPolicy"] == "Parallel"
    headless = find(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert {p["port"] for p in headless["spec"]["ports"]} == {2379, 2380}

    container = spec["template"]["spec"]["containers"][0]
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    args = flags(container)
    initial = dict(entry.split("=", 1) for entry in args["initial-cluster"].split(","))
    pods = [f"{ETCD}-{index}" for index in range(3)]
    assert list(initial) == pods
    domain = f"{spec['serviceName']}.{NAMESPACE}.svc"
    for pod in pods:
        # What the kubelet makes of the flags in this pod ($(POD_NAME) expanded): etcd
        # starts only when its name and advertised peer URL are its entry of the cluster.
        own = {k: v.replace("$(POD_NAME)", pod) for k, v in args.items()}
        assert own["name"] == pod
        assert own["initial-advertise-peer-urls"] == initial[pod] == f"http://{pod}.{domain}:2380"
        assert own["advertise-client-urls"] == f"http://{pod}.{domain}:2379"
    assert args["listen-peer-urls"] == "http://0.0.0.0:2380"
    assert args["initial-cluster-state"] == "new"
    assert args["initial-cluster-token"]
    assert {p["containerPort"] for p in container["ports"]} >= {2379, 2380}

    # Every component is given every member, and fails over between them.
    members = ",".join(f"{pod}.{domain}:2379" for pod in pods)
    given = etcd_endpoints(docs)
    assert {
        "hg-hourglass-api/api",
        "hg-hourglass-worker/worker",
        "hg-hourglass-claimer/claimer",
    } <= set(given), given
    assert set(given.values()) == {members}, given


def test_the_members_reach_each_others_peer_port_and_nothing_else_does(
    render: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    docs = documents(render("--set", "etcd.replicas=3"))
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    namespace = {"kubernetes.io/metadata.name": NAMESPACE}
    first = Endpoint("10.244.0.11", NAMESPACE, LABELS, namespace)
    second = Endpoint("10.244.0.12", NAMESPACE, LABELS, namespace)
    worker = Endpoint(
        "10.244.0.13", NAMESPACE, {**LABELS, "app.kubernetes.io/component": "worker"}, namespace
    )
    job = Endpoint(
        "10.244.1.20", "jobs", {"hourglass.io/run": "r"}, {"kubernetes.io/metadata.name": "jobs"}
    )
    assert allowed(policies, first, second, 2380) and allowed(policies, second, first, 2380)
    assert allowed(policies, worker, second, 2379)
    assert not allowed(policies, worker, second, 2380)
    assert not allowed(policies, job, first, 2380) and not allowed(policies, job, first, 2379)


def test_one_replica_stays_a_single_member_on_its_service(
    render: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    docs = documents(render())
    spec = find(docs, "StatefulSet", ETCD)["spec"]
    assert spec["replicas"] == 1 and spec["podManagementPolicy"] == "OrderedReady"
    args = flags(spec["template"]["spec"]["containers"][0])
    assert args["initial-cluster"] == "hourglass=http://127.0.0.1:2380"
    assert set(etcd_endpoints(docs).values()) == {f"{ETCD}.{NAMESPACE}.svc:2379"}
    assert not [d for d in docs if d["metadata"]["name"] == f"{ETCD}-peers"]


@pytest.mark.parametrize("replicas", ["2", "0", "7"])
def test_a_cluster_size_other_than_1_3_or_5_is_refused_naming_the_field(
    render: Callable[..., subprocess.CompletedProcess[str]], replicas: str
) -> None:
    result = render("--set", f"etcd.replicas={replicas}")
    assert result.returncode != 0, result.stdout
    assert "/etcd/replicas" in result.stderr and "1, 3, 5" in result.stderr, result.stderr
