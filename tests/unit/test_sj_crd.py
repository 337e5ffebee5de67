"""The ScheduledJob CRD's rules come from the API's bounds (operator/sj_crd.py): the chart's
file must be what the generator makes, so a bound changed in hourglass.limits without
regenerating the file fails here."""

from __future__ import annotations

import copy
import re
import zoneinfo
from pathlib import Path

import yaml

from hourglass import limits
from hourglass.operator import sj_crd, sj_rules

CRD = Path(__file__).resolve().parents[2] / sj_crd.PATH


def _load() -> dict:  # type: ignore[type-arg]
    document: dict = yaml.safe_load(CRD.read_text())  # type: ignore[type-arg]
    return document


def test_the_chart_file_is_what_the_generator_makes() -> None:
    document = _load()
    zones = sj_crd.zones_in(document)
    regenerated = sj_crd.render(sj_crd.apply(copy.deepcopy(document), zones))
    assert CRD.read_text() == regenerated, "run: python -m hourglass.operator.sj_crd"


def test_the_duration_rules_carry_the_api_bounds() -> None:
    spec = sj_crd._spec(_load())["properties"]
    timeout = " ".join(rule["rule"] for rule in spec["timeout"]["x-kubernetes-validations"])
    assert f"<= {limits.MAX_TIMEOUT.total_seconds()!r}" in timeout
    backoff = " ".join(r["rule"] for r in spec["retryBackoff"]["x-kubernetes-validations"])
    assert f"<= {limits.MAX_BACKOFF.total_seconds()!r}" in backoff
    every = spec["schedule"]["properties"]["every"]["properties"]["interval"]
    interval = " ".join(r["rule"] for r in every["x-kubernetes-validations"])
    assert f">= {limits.MIN_INTERVAL.total_seconds()!r}" in interval
    assert f"<= {limits.MAX_INTERVAL.total_seconds()!r}" in interval
    assert spec["maxAttempts"]["maximum"] == limits.MAX_ATTEMPTS
    # No regex or enum is left to produce an unexplained refusal.
    for name in ("timeout", "retryBackoff", "overlap"):
        assert "pattern" not in spec[name] and "enum" not in spec[name]


def test_every_listed_time_zone_is_one_the_api_loads() -> None:
    zones = sj_crd.zones_in(_load())
    assert len(zones) > 400
    assert {"Europe/Berlin", "America/New_York", "UTC"} <= set(zones)
    assert not set(zones) & sj_crd.HOST_FILES
    for zone in zones:
        zoneinfo.ZoneInfo(zone)  # raises for a name the API would refuse


def test_int_range_matches_exactly_its_numbers() -> None:
    for low in range(0, 60):
        for high in range(low, 60):
            pattern = re.compile(f"({sj_rules.int_range(low, high)})")
            matched = {n for n in range(100) if pattern.fullmatch(str(n))}
            assert matched == set(range(low, high + 1)), (low, high)


def test_no_field_repeats_a_rule_which_server_side_apply_refuses() -> None:
    """`kubectl apply --server-side` (and helm 4) refuse a CRD with two equal rules on one
    field ("duplicate entries for key [rule=...]"); each generator pass must keep one."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            rules = [rule["rule"] for rule in node.get("x-kubernetes-validations", ())]
            assert len(rules) == len(set(rules)), f"{path}: a rule appears twice"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(_load(), "")
    twice = sj_crd.apply(sj_crd.apply(copy.deepcopy(_load()), ["UTC"]), ["UTC"])
    walk(twice, "")
