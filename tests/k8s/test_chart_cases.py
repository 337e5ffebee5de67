"""The chart's part of the cases: the case CRDs, Redis (bundled with a volume, or an emptyDir,
or external), the cases' Secret, and the operator's RBAC for what it owns, shown sufficient by
running the generic reconcile with exactly those rules."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_cases import Kubectl, get, probe
from tests.k8s.test_chart import _documents
from tests.k8s.test_operator import RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_chart", "tests.k8s.test_cases"]

Render = Callable[..., subprocess.CompletedProcess[str]]


def _objects(rendered: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, Any]]:
    assert rendered.returncode == 0, rendered.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in _documents(rendered.stdout)}


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", ())}


def test_the_chart_installs_redis_the_cases_secret_and_the_operators_platform(
    template: Render,
) -> None:
    objects = _objects(template(crds=True))
    crd = objects[("CustomResourceDefinition", "leaderboards.hourglass.io")]
    assert crd["spec"]["names"]["shortNames"] == ["lb"]
    redis = objects[("StatefulSet", "hg-hourglass-redis")]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "/etc/redis/auth/redis.conf"  # the password is in a file, not argv
    assert args[args.index("--appendfsync") : args.index("--appendfsync") + 2] == [
        "--appendfsync",
        "always",
    ]
    secret = objects[("Secret", "hg-hourglass-cases")]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    password = data["redis-password"]
    assert data["redis-url"] == f"redis://:{password}@hg-hourglass-redis.hourglass.svc:6379/0"
    assert data["redis.conf"] == f"requirepass {password}\n"
    database = objects[("Secret", "hg-hourglass-database")]
    assert base64.b64decode(database["data"]["url"]).decode() == data["database-url"]
    env = _env(objects[("Deployment", "hg-hourglass-operator")])
    assert env["HOURGLASS_CASE_IMAGE"].startswith("hourglass:")
    assert env["HOURGLASS_CASE_SECRET"] == "hg-hourglass-cases"
    assert env["HOURGLASS_CASE_ETCD_ENDPOINTS"] == "hg-hourglass-etcd.hourglass.svc:2379"
    # Only the cases' server pods reach Redis; they reach PostgreSQL and etcd too.
    policy = objects[("NetworkPolicy", "hg-hourglass-redis")]
    (peer,) = policy["spec"]["ingress"][0]["from"]
    keys = {e["key"]: e["operator"] for e in peer["podSelector"]["matchExpressions"]}
    assert keys == {"hourglass.io/case-server": "Exists", "hourglass.io/run": "DoesNotExist"}
    for name in ("hg-hourglass-postgresql", "hg-hourglass-etcd"):
        peers = objects[("NetworkPolicy", name)]["spec"]["ingress"][0]["from"]
        assert any("hourglass.io/case-server" in str(p) for p in peers), name


def test_redis_can_be_ephemeral_external_or_off(template: Render) -> None:
    ephemeral = _objects(template("--set", "redis.persistence.enabled=false"))
    spec = ephemeral[("StatefulSet", "hg-hourglass-redis")]["spec"]
    assert "volumeClaimTemplates" not in spec
    assert {"name": "data", "emptyDir": {}} in spec["template"]["spec"]["volumes"]

    url = "redis://:pw@redis.example.com:6379/2"
    external = _objects(template("--set", "redis.enabled=false", "--set", f"redis.url={url}"))
    assert ("StatefulSet", "hg-hourglass-redis") not in external
    data = external[("Secret", "hg-hourglass-cases")]["data"]
    assert base64.b64decode(data["redis-url"]).decode() == url
    assert "redis.conf" not in data

    refused = template("--set", "redis.enabled=false")
    assert refused.returncode != 0
    assert "redis.url" in refused.stderr

    off = _objects(template("--set", "cases.enabled=false"))
    assert ("StatefulSet", "hg-hourglass-redis") not in off
    assert ("Secret", "hg-hourglass-cases") not in off
    assert "HOURGLASS_CASE_IMAGE" not in _env(off[("Deployment", "hg-hourglass-operator")])

    # With the database in a Secret of the user's, the chart cannot build the cases' Secret:
    # the cases stay off unless cases.existingSecret names one.
    existing = ["--set", "postgresql.enabled=false", "--set", "database.existingSecret=db"]
    without = _objects(template(*existing))
    assert "HOURGLASS_CASE_IMAGE" not in _env(without[("Deployment", "hg-hourglass-operator")])
    mine = _objects(template(*existing, "--set", "cases.existingSecret=mine"))
    assert ("Secret", "hg-hourglass-cases") not in mine
    assert _env(mine[("Deployment", "hg-hourglass-operator")])["HOURGLASS_CASE_SECRET"] == "mine"


def test_bad_redis_values_are_refused_naming_the_field(template: Render) -> None:
    for values, field in [
        (["--set", "redis.appendfsync=never"], "appendfsync"),
        (["--set", "redis.enabled=false", "--set", "redis.url=http://x"], "url"),
        (["--set", "cases.unknown=1"], "unknown"),
    ]:
        refused = template(*values)
        assert refused.returncode != 0
        assert field in refused.stderr


def _operator_rules(template: Render) -> list[dict[str, Any]]:
    objects = _objects(template("--set", "operator.watchNamespaces={team}"))
    rules: list[dict[str, Any]] = objects[("Role", "hg-hourglass-operator")]["rules"]
    return rules


def test_the_operators_rules_are_least_privilege(template: Render) -> None:
    rules = _operator_rules(template)
    granted = {(group, resource) for rule in rules for group in rule["apiGroups"]
               for resource in rule["resources"]}  # fmt: skip
    assert ("", "secrets") not in granted  # the operator never reads the Secret it names
    assert ("hourglass.io", "leaderboards/status") in granted
    assert {("apps", "deployments"), ("", "services"), ("", "configmaps")} <= granted
    assert ("networking.k8s.io", "networkpolicies") in granted  # a case's own fences
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_the_generic_reconcile_works_with_only_the_charts_rules(
    template: Render,
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    start_case_operator: Callable[[Path | None], RunningOperator],
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    """The chart's rules for its case kinds, given to the test's kind (probes) instead."""
    rules = json.loads(json.dumps(_operator_rules(template)).replace("leaderboards", "probes"))
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    rbac.create_namespaced_role(k8s_namespace, {"metadata": {"name": "op"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        k8s_namespace,
        {
            "metadata": {"name": "op"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": k8s_namespace}],
        },
    )
    token = kube_apiserver.service_account_token(k8s_namespace, "op")
    start_case_operator(kube_apiserver.write_kubeconfig("op", token, tmp_path / "op.yaml"))
    kubectl("apply", "-f", "-", stdin=probe("rbac", extra=True))
    owned = [
        ("deployment", "probe-rbac"),
        ("service", "probe-rbac"),
        ("configmap", "probe-rbac-extra"),
        ("scheduledjob", "probe-rbac-rollup"),
    ]
    for kind, name in owned:
        wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
    wait_for(
        "the status",
        lambda: (get(kubectl, "pr", "rbac") or {}).get("status", {}).get("observedGeneration") == 1,
    )
    kubectl("apply", "-f", "-", stdin=probe("rbac"))
    wait_for("the prune", lambda: get(kubectl, "configmap", "probe-rbac-extra") is None)
    kubectl("delete", "pr", "rbac", "--wait=true", "--timeout=30s")
    wait_for("the Deployment gone", lambda: get(kubectl, "deployment", "probe-rbac") is None)
