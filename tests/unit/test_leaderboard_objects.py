"""The Leaderboard resource -> the objects the operator applies; the spec's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hourglass import cases
from hourglass.cases import Platform, Resource
from hourglass.cases.leaderboard import CASE, spec
from hourglass.cases.leaderboard.objects import objects

PLATFORM = Platform(
    image="ghcr.io/hourglass/hourglass:1.2.3", secret="hourglass-db", etcd_endpoints="etcd:2379"
)


def resource(**spec_fields: Any) -> Resource:
    return Resource(name="games", namespace="arcade", uid="u-1", generation=3, spec=spec_fields)


def by_kind(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["kind"], []).append(item)
    return out


def test_the_case_record() -> None:
    assert (CASE.name, CASE.kind, CASE.plural, CASE.short_names) == (
        "leaderboard",
        "Leaderboard",
        "leaderboards",
        ("lb",),
    )
    assert (CASE.migrations / "migrations" / "0001_initial.sql").exists()
    assert (CASE.migrations / "schema.sql").exists()
    assert CASE.http and CASE.spec_schema is spec.SCHEMA
    assert cases.get("leaderboard") is CASE


def test_objects_are_a_deployment_service_configmap_and_two_scheduled_jobs() -> None:
    items = objects(resource(retention="14d", replicas=2), PLATFORM)
    kinds = by_kind(items)
    assert sorted(kinds) == ["ConfigMap", "Deployment", "ScheduledJob", "Service"]
    assert all(i["metadata"]["namespace"] == "arcade" for i in items)
    assert all("ownerReferences" not in i["metadata"] for i in items)

    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == PLATFORM.image
    assert container["args"] == cases.server_args("leaderboard", resource(), http_port=8080)
    env = {e["name"]: e for e in container["env"]}
    assert env["HOURGLASS_LOG_FORMAT"]["value"] == "json"
    assert env["HOURGLASS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "hourglass-db",
        "key": "database-url",
    }
    assert env["HOURGLASS_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    (service,) = kinds["Service"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 50051,
        "http": 8080,
        "metrics": 9090,
    }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    (config,) = kinds["ConfigMap"]
    assert json.loads(config["data"]["spec.json"]) == {"retention": "14d", "replicas": 2}
    mounted = {v["name"]: v for v in pod["volumes"]}
    assert mounted["spec"]["configMap"]["name"] == config["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "spec"]
    assert f"{mount['mountPath']}/spec.json" == cases.SPEC_FILE
    # A changed spec rolls the pods (they read the spec once, at start).
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["hourglass.io/spec-hash"] == cases.spec_hash(
        resource(retention="14d", replicas=2)
    )


def test_the_server_container_runs_hourglass_serve_as_the_cli_parses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container's args and env, given to the real CLI parser, are `hourglass serve
    leaderboard` for this resource, with the ports the Service and the probes name."""
    from hourglass.cli import main

    items = by_kind(objects(resource(), PLATFORM))
    (container,) = items["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    for entry in container["env"]:
        monkeypatch.setenv(entry["name"], entry.get("value", "from-the-secret"))
    parsed = main.build_parser().parse_args(container["args"])
    assert (parsed.command, parsed.case, parsed.name, parsed.resource_namespace) == (
        "serve", "leaderboard", "games", "arcade",
    )  # fmt: skip
    assert str(parsed.spec) == cases.SPEC_FILE
    assert parsed.log_format == "json"
    assert parsed.database_url == parsed.redis_url == "from-the-secret"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert parsed.listen == f"0.0.0.0:{ports['grpc']}"
    assert parsed.http_listen == f"0.0.0.0:{ports['http']}"
    assert parsed.metrics_listen == f"0.0.0.0:{ports['metrics']}"
    (service,) = items["Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)


def test_the_scheduled_jobs_are_a_kind_the_operator_may_own() -> None:
    from hourglass.operator import owned

    owner = owned.Owner("Leaderboard", "games", "arcade", "u-1", "leaderboard")
    prepared = owned.prepare(objects(resource(), PLATFORM), owner)
    assert {(p["kind"], p["metadata"]["name"]) for p in prepared} >= {
        ("ScheduledJob", "lb-games-rollup"), ("ScheduledJob", "lb-games-retention"),
    }  # fmt: skip


def test_scheduled_jobs_call_the_servers_admin_rpcs_without_credentials() -> None:
    jobs = by_kind(objects(resource(), PLATFORM))["ScheduledJob"]
    assert [j["apiVersion"] for j in jobs] == ["hourglass.io/v1"] * 2
    tasks = {j["metadata"]["name"]: j["spec"]["task"] for j in jobs}
    assert tasks["lb-games-rollup"]["args"] == [
        "leaderboard",
        "rollup",
        "--server",
        "lb-games.arcade.svc:50051",
    ]
    assert tasks["lb-games-retention"]["args"][:2] == ["leaderboard", "retention"]
    for job in jobs:
        assert job["spec"]["overlap"] == "skip"
        assert "env" not in job["spec"]["task"]  # no secrets reach a job pod
    schedules = {j["metadata"]["name"]: j["spec"]["schedule"] for j in jobs}
    assert schedules["lb-games-rollup"] == {"every": {"interval": "10m"}}


def test_the_scheduled_jobs_fit_the_crd(repo_root: Path) -> None:
    crd = yaml.safe_load(
        (repo_root / "charts/hourglass/crds/scheduledjobs.hourglass.io.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for job in by_kind(objects(resource(), PLATFORM))["ScheduledJob"]:
        assert crd["spec"]["group"] == job["apiVersion"].split("/")[0]
        assert set(job["spec"]) <= set(schema["properties"])
        assert set(job["spec"]["task"]) <= set(schema["properties"]["task"]["properties"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retention": "forever"}, "spec.retention: invalid duration"),
        ({"retention": 30}, "spec.retention: must be a duration"),
        ({"retention": "1h"}, "spec.retention: 1h is shorter than the largest bucket"),
        ({"buckets": ["10m", "15m"]}, r"spec.buckets\[1\]: 15m must be a whole multiple of 10m"),
        ({"buckets": "1m"}, "spec.buckets: must be a list"),
        ({"replicas": 0}, "spec.replicas: must be between 1 and 50"),
        ({"replicas": True}, "spec.replicas: must be a whole number"),
        ({"colour": "red"}, "spec.colour: unknown field"),
    ],
)
def test_a_bad_spec_names_the_field_and_makes_no_objects(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        objects(resource(**fields), PLATFORM)


def test_spec_defaults() -> None:
    parsed = spec.parse({})
    assert (parsed.retention, parsed.sizes[0], parsed.replicas) == (30 * 86400, 60, 1)


def test_the_example_resource_is_valid(repo_root: Path) -> None:
    example = yaml.safe_load((repo_root / "examples/leaderboard.yaml").read_text())
    assert (example["apiVersion"], example["kind"]) == ("hourglass.io/v1alpha1", "Leaderboard")
    spec.parse(example["spec"])
