"""The chart's part of the MetricsPipeline: its CRD, its plural in the operator's RBAC, and
the object store's URL in the cases' Secret (a MetricsPipeline keeps its column files
there; its server refuses to start without one)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable

from tests.k8s.test_chart import _documents

pytest_plugins = ["tests.k8s.test_chart"]

Render = Callable[..., subprocess.CompletedProcess[str]]


def test_the_chart_installs_the_crd_and_puts_the_object_store_in_the_cases_secret(
    template: Render,
) -> None:
    url = "s3://telemetry/hourglass?endpoint=http://minio:9000"
    rendered = template("--set", f"artifacts.url={url}", crds=True)
    assert rendered.returncode == 0, rendered.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(rendered.stdout)}
    crd = objects[("CustomResourceDefinition", "metricspipelines.hourglass.io")]
    assert crd["spec"]["names"]["kind"] == "MetricsPipeline"
    secret = objects[("Secret", "hg-hourglass-cases")]
    assert base64.b64decode(secret["data"]["artifacts-url"]).decode() == url
    rules = json.dumps([d for (kind, _), d in objects.items() if "Role" in kind])
    assert "metricspipelines" in rules
    without = template(crds=False)
    assert "artifacts-url" not in without.stdout
