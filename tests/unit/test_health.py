"""hourglass.health without servers: how check results become /healthz and /readyz answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hourglass import health, metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _fails(reason: str) -> health.Check:
    async def check() -> None:
        raise RuntimeError(reason)

    return check


async def _passes() -> None:
    return None


async def test_ready_only_when_every_check_of_a_recent_round_passed() -> None:
    clock = Clock()
    checks = health.Health(interval=1, timeout=1, stale_after=10, clock=clock)
    assert not checks.readiness().healthy  # no round yet
    checks.add("database", _passes)
    checks.add("etcd", _fails("etcd: connection refused"))
    await checks.check_once()
    report = checks.readiness()
    assert not report.healthy
    assert report.body["checks"] == {"database": "ok", "etcd": "etcd: connection refused"}

    checks.add("etcd", _passes)
    await checks.check_once()
    assert checks.readiness().healthy
    assert checks.liveness().healthy

    clock.now += 10  # no round since: the loop is wedged
    assert not checks.readiness().healthy
    live = checks.liveness()
    assert not live.healthy and "10s" in live.body["reason"]


async def test_a_check_that_hangs_fails_on_its_timeout_without_stopping_the_others() -> None:
    checks = health.Health(interval=1, timeout=0.05, stale_after=10)

    async def hangs() -> None:
        await asyncio.sleep(3600)

    checks.add("stuck", hangs)
    checks.add("fine", _passes)
    await checks.check_once()
    assert checks.readiness().body["checks"] == {
        "stuck": "no answer within 0.05s",
        "fine": "ok",
    }


async def test_lease_and_pending_checks_say_why() -> None:
    held = False
    checks = health.Health()
    checks.add("lease", health.lease_check("the worker's etcd lease", lambda: held))
    checks.add("database", health.pending("connecting"))
    await checks.check_once()
    assert checks.readiness().body["checks"] == {
        "lease": "the worker's etcd lease not held",
        "database": "connecting",
    }


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="stale_after"):
        health.Health(interval=5, timeout=5, stale_after=10)


async def test_the_wsgi_app_answers_json_with_200_or_503_and_metrics_for_the_rest() -> None:
    checks = health.Health()
    checks.add("database", _fails("down"))
    await checks.check_once()
    app = health.app(checks)

    def call(path: str) -> tuple[str, bytes]:
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            seen["status"] = status

        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
        return seen["status"], body

    status, body = call("/readyz")
    assert status.startswith("503") and json.loads(body)["checks"] == {"database": "down"}
    status, body = call("/healthz")
    assert status.startswith("200") and json.loads(body)["live"] is True
    status, body = call("/metrics")
    assert status.startswith("200") and metrics.claims._name.encode() in body
