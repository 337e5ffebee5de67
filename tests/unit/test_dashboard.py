"""The Grafana dashboard shipped with the chart queries only metrics that hourglass exports,
so that no panel stays empty because a name drifted."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import hourglass.metrics

SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


# The sample names each metric type exposes (a labelled metric has no samples until used).
SAMPLES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported_names() -> set[str]:
    """The scheduler's metrics (hourglass.metrics); a case's own metrics belong to its own
    dashboard, whichever modules a test run happened to import first."""
    return {
        family.name + suffix
        for metric in vars(hourglass.metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in SAMPLES[family.type]
    }


def test_every_dashboard_query_uses_an_exported_metric(repo_root: Path) -> None:
    dashboard = json.loads((repo_root / "charts/hourglass/dashboards/hourglass.json").read_text())
    exported = exported_names()
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"hourglass_[a-z_]+", target["expr"])
    }
    assert used, "the dashboard queries nothing"
    missing = {name for name in used if name not in exported}
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"
    # Each exported family appears on the dashboard at least once.
    families = {name.removesuffix(s) for name in used for s in SUFFIXES if name.endswith(s)} | used
    unshown = {
        n
        for n in exported
        if not any(n.startswith(f) for f in families) and not n.endswith("_created")
    }
    assert not unshown, f"exported but not on the dashboard: {sorted(unshown)}"
