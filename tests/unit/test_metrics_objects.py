"""The MetricsPipeline resource -> the objects the operator applies; the spec's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hourglass import cases
from hourglass.cases import Platform, Resource
from hourglass.cases.metrics import CASE, spec
from hourglass.cases.metrics.objects import objects

PLATFORM = Platform(
    image="ghcr.io/hourglass/hourglass:1.2.3", secret="hourglass-db", etcd_endpoints="etcd:2379"
)


def resource(**spec_fields: Any) -> Resource:
    return Resource(name="tm", namespace="obs", uid="u-1", generation=3, spec=spec_fields)


def by_kind(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["kind"], []).append(item)
    return out


def test_the_case_record() -> None:
    assert (CASE.name, CASE.kind, CASE.plural, CASE.short_names) == (
        "metrics", "MetricsPipeline", "metricspipelines", ("mp",),
    )  # fmt: skip
    assert (CASE.migrations / "migrations" / "0001_initial.sql").exists()
    assert CASE.http and CASE.spec_schema is spec.SCHEMA
    assert cases.get("metrics") is CASE


def test_a_server_and_a_consumer_deployment_a_service_and_three_scheduled_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hourglass.cli import main

    items = by_kind(objects(resource(consumers=3), PLATFORM))
    assert [d["metadata"]["name"] for d in items["Deployment"]] == ["mp-tm", "mp-tm-consumer"]
    assert [d["spec"]["replicas"] for d in items["Deployment"]] == [1, 3]
    roles = {}
    for deployment in items["Deployment"]:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for entry in container["env"]:
            monkeypatch.setenv(entry["name"], entry.get("value", "from-the-secret"))
        parsed = main.build_parser().parse_args(container["args"])
        assert (parsed.command, parsed.case, parsed.name, parsed.resource_namespace) == (
            "serve", "metrics", "tm", "obs",
        )  # fmt: skip
        assert parsed.database_url == parsed.redis_url == parsed.artifacts == "from-the-secret"
        roles[parsed.role] = (container, parsed)
        # The pods of one role are picked by the Deployment's selector, not the other's.
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/component"] == parsed.role
    server, parsed = roles["server"]
    assert parsed.http_listen == "0.0.0.0:8080"
    assert server["readinessProbe"]["httpGet"]["path"] == "/healthz"
    consumer, parsed = roles["consumer"]
    assert not parsed.http_listen and consumer["readinessProbe"]["tcpSocket"]["port"] == "metrics"
    (service,) = items["Service"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "server"
    jobs = {j["metadata"]["name"]: j for j in items["ScheduledJob"]}
    assert set(jobs) == {"mp-tm-compact", "mp-tm-downsample", "mp-tm-retention"}
    for name, job in jobs.items():
        action = name.rsplit("-", 1)[1]
        assert job["spec"]["task"]["args"] == ["metrics", action, "--server", "mp-tm.obs.svc:50051"]
        assert "env" not in job["spec"]["task"] and job["spec"]["overlap"] == "skip"


def test_the_scheduled_jobs_are_a_kind_the_operator_may_own_and_fit_the_crd(
    repo_root: Path,
) -> None:
    from hourglass.operator import owned

    owner = owned.Owner("MetricsPipeline", "tm", "obs", "u-1", "metrics")
    prepared = owned.prepare(objects(resource(), PLATFORM), owner)
    assert len(prepared) == 7
    crd = yaml.safe_load(
        (repo_root / "charts/hourglass/crds/scheduledjobs.hourglass.io.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for job in by_kind(objects(resource(), PLATFORM))["ScheduledJob"]:
        assert set(job["spec"]) <= set(schema["properties"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retention": "forever"}, "spec.retention: invalid duration"),
        ({"retention": "10m"}, "spec.retention: must be between 1h"),
        ({"retention": "30d", "rollupRetention": "1d"}, "spec.rollupRetention: must be between"),
        ({"shards": 0}, "spec.shards: must be between 1 and 64"),
        ({"consumers": True}, "spec.consumers: must be a whole number"),
        ({"claimAfter": "0s"}, "spec.claimAfter: must be between 1s and 1h"),
        ({"colour": "red"}, "spec.colour: unknown field"),
    ],
)
def test_a_bad_spec_names_the_field_and_makes_no_objects(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        objects(resource(**fields), PLATFORM)


def test_the_example_resource_is_valid(repo_root: Path) -> None:
    example = yaml.safe_load((repo_root / "examples/metricspipeline.yaml").read_text())
    assert (example["apiVersion"], example["kind"]) == ("hourglass.io/v1alpha1", "MetricsPipeline")
    assert spec.parse(example["spec"]).consumers == 2
