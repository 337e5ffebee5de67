"""Faults with real pods, on a release of its own: a job that fires every few seconds keeps
firing, with no fire lost or doubled, while the API and producer pods are deleted and while
the PostgreSQL pod is killed; the components recover by themselves.

"No fire lost" is read from the API: the job's runs, by their scheduled time, are one
unbroken sequence one interval apart (catch-up `all` runs a fire that came due while the
producer or the database was away), and each finished run succeeded.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import pytest

from tests.cluster.conftest import BUSYBOX, Cluster, Release, wait_until

pytestmark = pytest.mark.timeout(1800)

INTERVAL = 3.0
FINISHED = {"RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_TIMED_OUT", "RUN_STATE_LOST"}


def _runs(release: Release, job_id: str) -> list[dict[str, Any]]:
    """The job's runs, oldest first."""
    status = json.loads(release.hourglass("status", job_id, "--runs", "100", "-o", "json"))
    runs: list[dict[str, Any]] = status.get("recentRuns") or []
    return sorted(runs, key=lambda run: run["scheduledAt"])


def _at(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["scheduledAt"].replace("Z", "+00:00"))


def _assert_unbroken(runs: list[dict[str, Any]]) -> None:
    """One run per fire, one interval apart, each finished one succeeded."""
    times = [_at(run) for run in runs]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(abs(gap - INTERVAL) < 0.01 for gap in gaps), gaps
    failed = [r for r in runs if r["state"] in FINISHED and r["state"] != "RUN_STATE_SUCCEEDED"]
    assert not failed, failed


def _ticking_job(release: Release) -> str:
    return release.hourglass(
        "schedule", "--every", f"{INTERVAL:.0f}s", "--catch-up", "all", "--max-attempts", "3",
        "--image", BUSYBOX, "--name", "tick", "--", "echo", "tick",
    ).strip()  # fmt: skip


def _succeeded_after(release: Release, job_id: str, since: datetime, count: int) -> bool:
    done = [
        run
        for run in _runs(release, job_id)
        if _at(run) > since and run["state"] == "RUN_STATE_SUCCEEDED"
    ]
    return len(done) >= count


def _pods(cluster: Cluster, release: Release, component: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component={component}"
    items: list[dict[str, Any]] = cluster.get(release.namespace, "pods", "-l", selector)["items"]
    return items


def _ready_pod(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _kill_and_wait_for_successor(cluster: Cluster, release: Release, component: str) -> None:
    """Deletes the component's pod (1 s of grace), then waits for a ready pod that is not
    that one (a Deployment's gets a new name, a StatefulSet's the same name, a new uid)."""
    (pod,) = _pods(cluster, release, component)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    print(f"deleting {component} pod {name}")
    cluster.kubectl("--namespace", release.namespace, "delete", "pod", name, "--grace-period=1",
                    "--wait=false")  # fmt: skip

    def successor() -> str | None:
        fresh = [
            p for p in _pods(cluster, release, component)
            if p["metadata"]["uid"] != uid and _ready_pod(p)
        ]  # fmt: skip
        return fresh[0]["metadata"]["name"] if fresh else None

    print(f"{component} pod {wait_until(f'a new {component} pod', successor, timeout=300)} ready")


def _ready(cluster: Cluster, release: Release, kind: str, component: str) -> None:
    cluster.kubectl("--namespace", release.namespace, "rollout", "status",
                    f"{kind}/{release.component(component)}", "--timeout=300s",
                    timeout=320)  # fmt: skip


def _latest_fire(release: Release, job_id: str) -> datetime:
    return max(_at(run) for run in _runs(release, job_id))


def test_deleting_api_and_producer_pods_loses_no_fire(cluster: Cluster, release: Release) -> None:
    job_id = _ticking_job(release)
    wait_until("three runs", lambda: len(_runs(release, job_id)) >= 3, timeout=180)
    cut = _latest_fire(release, job_id)
    _kill_and_wait_for_successor(cluster, release, "producer")
    _kill_and_wait_for_successor(cluster, release, "api")
    wait_until(
        "five runs after the deletions to succeed",
        lambda: _succeeded_after(release, job_id, cut, 5),
        timeout=240,
    )
    runs = _runs(release, job_id)
    cluster.show(release.namespace, "pods", "-l", "app.kubernetes.io/component in (api,producer)")
    print(f"{len(runs)} runs, fired {runs[0]['scheduledAt']} .. {runs[-1]['scheduledAt']}")
    _assert_unbroken(runs)
    release.hourglass("delete", job_id)


def test_killing_postgresql_components_recover(cluster: Cluster, release: Release) -> None:
    job_id = _ticking_job(release)
    wait_until("three runs", lambda: len(_runs(release, job_id)) >= 3, timeout=180)
    cut = _latest_fire(release, job_id)
    _kill_and_wait_for_successor(cluster, release, "postgresql")
    for component in ("api", "producer", "worker", "claimer"):
        _ready(cluster, release, "deployment", component)
    # The API answers again, and the job's fires go on, those missed while the database was
    # away included.
    wait_until(
        "five runs after PostgreSQL's return to succeed",
        lambda: _succeeded_after(release, job_id, cut, 5),
        timeout=300,
    )
    runs = _runs(release, job_id)
    cluster.show(release.namespace, "pods")
    print(f"{len(runs)} runs, fired {runs[0]['scheduledAt']} .. {runs[-1]['scheduledAt']}")
    _assert_unbroken(runs)
    release.hourglass("delete", job_id)
