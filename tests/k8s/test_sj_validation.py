"""A bad ScheduledJob is refused by `kubectl apply` itself, with a message that names the field
and says why in words: time zones, cron fields, every duration bound the API enforces. The
rules are CEL in the CRD (operator/sj_crd.py), run by a real kube-apiserver; what they accept
must be what the API accepts, which the dry-run comparison below checks."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client

from hourglass import schedules
from hourglass.api import validation
from hourglass.operator import resources
from hourglass.schedules import Cron
from tests.k8s.test_kubectl import kubectl  # noqa: F401  # a fixture
from tests.k8s.test_operator import GROUP, PLURAL, VERSION, example

pytest_plugins = ["tests.k8s.test_operator"]

NOISE = ("some validation rules were not checked", "should match")


def _with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = example()
    body["metadata"] = {"name": "bad"}
    change(body["spec"])
    return body


def _cron(expression: str, zone: str | None = None) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        cron: dict[str, Any] = {"expression": expression}
        if zone is not None:
            cron["timeZone"] = zone
        spec["schedule"] = {"cron": cron}

    return change


def _every(**every: str) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.update(schedule={"every": every})


# (the change, what the message must say: the field path and the reason in words)
REFUSED: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "unknown time zone": (
        _cron("0 2 * * *", "Mars/Olympus"),
        ["spec.schedule.cron.timeZone", "'Mars/Olympus' is not an IANA time zone"],
    ),
    "time zone in the wrong case": (
        _cron("0 2 * * *", "europe/berlin"),
        ["spec.schedule.cron.timeZone", "is not an IANA time zone"],
    ),
    "minute out of range": (
        _cron("61 * * * *"),
        ["spec.schedule.cron.expression", "the minute field '61'", "the minute is 0-59"],
    ),
    "second out of range": (
        _cron("60 0 * * * *"),
        ["spec.schedule.cron.expression", "the second field '60'", "0-59"],
    ),
    "hour out of range": (_cron("0 24 * * *"), ["the hour field '24'", "0-23"]),
    "day of month out of range": (_cron("0 0 32 * *"), ["the day-of-month field '32'"]),
    "month out of range": (_cron("0 0 1 13 *"), ["the month field '13'", "JAN-DEC"]),
    "weekday out of range": (_cron("0 0 * * 8"), ["the day-of-week field '8'"]),
    "range backwards": (_cron("5-1 * * * *"), ["the minute field '5-1'", "a <= b"]),
    "step of zero": (_cron("*/0 * * * *"), ["the minute field '*/0'"]),
    "a value in a list": (_cron("0 1,2,99 * * *"), ["the hour field '1,2,99'"]),
    "four fields": (
        _cron("* * * *"),
        ["spec.schedule.cron.expression", "has fewer than 5 fields", "use 5", "6 (seconds first)"],
    ),
    "seven fields": (_cron("* * * * * * *"), ["has more than 6 fields"]),
    "unknown macro": (_cron("@every 5m"), ["'@every 5m' is not a macro", "@daily"]),
    "empty expression": (_cron(""), ["has fewer than 5 fields"]),
    "timeout above 7d": (
        lambda s: s.update(timeout="30d"),
        ["spec.timeout", "the timeout must be longer than 0s and at most 7d, not 30d"],
    ),
    "timeout of zero": (lambda s: s.update(timeout="0s"), ["spec.timeout", "longer than 0s"]),
    "timeout not a duration": (
        lambda s: s.update(timeout="1 hour"),
        ["spec.timeout", "the timeout '1 hour' is not a duration", "e.g. 30s or 1h30m"],
    ),
    "retry backoff above 1h": (
        lambda s: s.update(retryBackoff="61m"),
        ["spec.retryBackoff", "between 0s and 1h, not 61m"],
    ),
    "interval below 100ms": (
        _every(interval="50ms"),
        ["spec.schedule.every.interval", "the interval must be between 100ms and 3650d"],
    ),
    "interval above ten years": (_every(interval="3651d"), ["spec.schedule.every.interval"]),
    "interval not a duration": (
        _every(interval="30 seconds"),
        ["spec.schedule.every.interval", "'30 seconds' is not a duration"],
    ),
    "jitter longer than the interval": (
        _every(interval="10s", jitter="11s"),
        ["spec.schedule.every", "the jitter must not be longer than the interval"],
    ),
    "after above ten years": (
        lambda s: s.update(schedule={"after": "3651d"}),
        ["spec.schedule.after", "between 0s and 3650d"],
    ),
    "catch-up window of zero": (
        lambda s: s.update(catchUp={"policy": "skip", "window": "0ms"}),
        ["spec.catchUp.window", "the catch-up window must be longer than 0s"],
    ),
    "end before start": (
        lambda s: s["schedule"].update(start="2031-01-02T00:00:00Z", end="2031-01-01T00:00:00Z"),
        ["spec.schedule", "schedule.end must be after schedule.start"],
    ),
    "bounds on a one-shot schedule": (
        lambda s: s.update(schedule={"after": "1h", "end": "2031-01-01T00:00:00Z"}),
        ["spec.schedule", "apply to cron and every schedules only"],
    ),
    "not a date-time": (
        lambda s: s.update(schedule={"at": "tomorrow"}),
        ["spec.schedule.at", "'tomorrow' is not an RFC 3339 date-time with an offset"],
    ),
    "a date-time without an offset": (
        lambda s: s.update(schedule={"at": "2031-01-01T02:00:00"}),
        ["spec.schedule.at", "is not an RFC 3339 date-time with an offset"],
    ),
    "an instant before 1970": (
        lambda s: s.update(schedule={"at": "1969-12-31T23:59:59Z"}),
        ["spec.schedule.at", "must be from 1970-01-01T00:00:00Z up to 9000-01-01T00:00:00Z"],
    ),
    "unknown overlap": (
        lambda s: s.update(overlap="sometimes"),
        ["spec.overlap", "'sometimes' is not one of allow, skip, buffer_one, replace"],
    ),
    "unknown catch-up policy": (
        lambda s: s.update(catchUp={"policy": "never"}),
        ["spec.catchUp.policy", "'never' is not one of all, latest, skip"],
    ),
    "no schedule": (
        lambda s: s.pop("schedule"),
        ["spec", "schedule is required: set one of at, after, cron or every"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_kubectl_apply_refuses_a_bad_spec_in_words(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    crds: list[str],
    case: str,
) -> None:
    change, expected = REFUSED[case]
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_with(change)))
    assert refused.returncode != 0, refused.stdout
    message = refused.stderr
    assert 'The ScheduledJob "bad" is invalid' in message, message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message}"
    for noise in NOISE:
        assert noise not in message, message
    assert kubectl("get", "sj", "bad").returncode != 0  # nothing was stored


def test_two_mistakes_get_two_messages_and_no_noise(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    crds: list[str],
) -> None:
    def change(spec: dict[str, Any]) -> None:
        spec.update(overlap="sometimes", timeout="30d", catchUp={"window": "soon"})
        spec["schedule"] = {"cron": {"expression": "61 * * * *", "timeZone": "Mars/Olympus"}}

    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_with(change)))
    assert refused.returncode != 0
    for fragment in (
        "spec.overlap", "spec.timeout", "minute field '61'", "Mars/Olympus", "spec.catchUp.window",
    ):  # fmt: skip
        assert fragment in refused.stderr, refused.stderr
    for noise in NOISE:
        assert noise not in refused.stderr, refused.stderr


# Expressions whose verdict the CRD and the API must share.
CRON_EXPRESSIONS = [
    "* * * * *", "*/5 * * * *", "0 2 * * *", "0 0 1 1 *", "0 9-17 * * MON-FRI",
    "0 9-17/2 * * mon-fri", "15,45 * * * *", "0 0 L * *", "0 0 LW * *", "0 0 * * 5L",
    "0 0 * * FRI#2", "0 0 * * 1#5", "0 0 * JAN,jul *", "*/10 * * * * *", "0 0 0 * * 7",
    "05 04 * * *", "@daily", "@hourly", " @weekly ", "59 23 31 12 6",
    "61 * * * *", "60 * * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 0 *",
    "* * * 13 *", "* * * * 8", "5-1 * * * *", "*/0 * * * *", "1,,2 * * * *", "* * * * 6#6",
    "* * * * 8L", "* * L5 * *", "@every", "* * * *", "* * * * * * *", "a b c d e",
    "0 0 * FOO *", "0 0 * * MON-", "-1 * * * *", "1-2-3 * * * *",
]  # fmt: skip


def test_the_crd_and_the_api_judge_cron_expressions_alike(
    crds: list[str], k8s_client: client.ApiClient, k8s_namespace: str
) -> None:
    custom = client.CustomObjectsApi(k8s_client)
    now = datetime.now(UTC)
    disagreements = []
    for expression in CRON_EXPRESSIONS:
        body = _with(_cron(expression))
        body["metadata"] = {"name": "probe"}
        try:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, k8s_namespace, PLURAL, copy.deepcopy(body), dry_run="All"
            )
            crd_accepts, why = True, ""
        except client.ApiException as error:
            assert error.status == 422, error.body
            crd_accepts, why = False, json.loads(error.body)["message"]
        try:
            schedules.validate(Cron(expression.strip()), now=now)
            api_accepts = True
        except ValueError:
            api_accepts = False
        if crd_accepts != api_accepts:
            disagreements.append((expression, crd_accepts, api_accepts, why))
    assert not disagreements


def test_the_bounds_themselves_are_accepted(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    crds: list[str],
) -> None:
    def change(spec: dict[str, Any]) -> None:
        spec.update(timeout="7d", retryBackoff="1h", maxAttempts=100)
        spec["schedule"] = {"every": {"interval": "100ms", "jitter": "100ms"}}
        spec["catchUp"] = {"policy": "skip", "window": "1ms"}

    body = _with(change)
    body["metadata"]["name"] = "edges"
    applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body))
    assert applied.returncode == 0, applied.stderr
    for instant in ("2031-05-04T03:02:01.5-07:00", "1970-01-01T00:00:00Z"):
        body = _with(lambda spec, instant=instant: spec.update(schedule={"at": instant}))
        body["metadata"]["name"] = "instants"
        applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body))
        assert applied.returncode == 0, (instant, applied.stderr)
    for zone in ("Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", ""):
        body = _with(_cron("0 2 * * *", zone))
        body["metadata"]["name"] = "zones"
        applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body))
        assert applied.returncode == 0, (zone, applied.stderr)


DURATIONS = [
    "0s", "0.0000001s", "0.5ms", "1ms", "99ms", "100ms", "1.5s", "30s", "1h", "61m", "1h0.5s",
    "7d", "168h", "6d23h59m60s", "7d1s", "3650d", "3651d", "30 s", "1w", "",
]  # fmt: skip
DURATION_FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "timeout": lambda s, v: s.update(timeout=v),
    "retryBackoff": lambda s, v: s.update(retryBackoff=v),
    "every.interval": lambda s, v: s.update(schedule={"every": {"interval": v}}),
    "every.jitter": lambda s, v: s.update(schedule={"every": {"interval": "3651d", "jitter": v}}),
    "after": lambda s, v: s.update(schedule={"after": v}),
    "catchUp.window": lambda s, v: s.update(catchUp={"policy": "skip", "window": v}),
}


def test_the_crd_and_the_api_judge_durations_alike(
    crds: list[str], k8s_client: client.ApiClient, k8s_namespace: str
) -> None:
    """Every duration field, at and around each bound: `kubectl apply` accepts exactly what the
    API accepts once the operator has turned the spec into a request."""
    custom = client.CustomObjectsApi(k8s_client)
    now = datetime.now(UTC)
    disagreements = []
    for field, setter in DURATION_FIELDS.items():
        for value in DURATIONS:
            body = _with(lambda spec, setter=setter, value=value: setter(spec, value))
            body["metadata"] = {"name": "probe"}
            if field == "every.jitter":  # the interval is out of range on purpose; fix it
                body["spec"]["schedule"]["every"]["interval"] = "3650d"
            try:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, k8s_namespace, PLURAL, copy.deepcopy(body), dry_run="All"
                )
                crd_accepts = True
            except client.ApiException as error:
                assert error.status == 422, error.body
                crd_accepts = False
            try:
                request = resources.job_spec(k8s_namespace, "probe", body["spec"])
                validation.job_spec(request, now=now)
                api_accepts = True
            except (resources.SpecError, validation.Invalid):
                api_accepts = False
            if crd_accepts != api_accepts:
                disagreements.append((field, value, crd_accepts, api_accepts))
    assert not disagreements
