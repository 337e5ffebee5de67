"""The chart's bundled etcd as three members (`etcd.replicas: 3`) on a real cluster, on a
release of its own: the member first in the components' endpoint list is force-deleted while a
worker holds its lease and an attempt's pod runs. Every component carries on through the other
two members: the running attempt finishes once (one attempt, one Job, no lost lease), a job
firing every few seconds keeps firing with no fire lost or doubled, and no hourglass pod is
restarted or replaced.

tests/acceptance/test_etcd_failover.py shows the same with processes and SIGKILL; here the
members are a StatefulSet's pods reached by their DNS names, and the dead member's name
vanishes from DNS until the StatefulSet brings it back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.cluster.conftest import BUSYBOX, Cluster, Release, install, uninstall, wait_until
from tests.cluster.test_faults_on_cluster import (
    _assert_unbroken,
    _pods,
    _ready,
    _ready_pod,
    _runs,
    _succeeded_after,
    _ticking_job,
)

pytestmark = pytest.mark.timeout(1800)

COMPONENTS = ("api", "producer", "worker", "claimer")
RUN_LABEL = "hourglass.io/run"
JOB_LABEL = "hourglass.io/job"


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    installed = install(
        cluster, "hg", f"hg-etcd-{secrets.token_hex(3)}",
        etcd={**cluster.values["etcd"], "replicas": 3},
    )  # fmt: skip
    try:
        yield installed
    finally:
        cluster.show(installed.namespace, "all")
        uninstall(cluster, installed)


def _endpoints(cluster: Cluster, release: Release) -> list[str]:
    """HOURGLASS_ETCD_ENDPOINTS of the worker, as the chart gives it to every component."""
    deployment = cluster.get(release.namespace, "deployment", release.component("worker"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (value,) = [e["value"] for e in container["env"] if e["name"] == "HOURGLASS_ETCD_ENDPOINTS"]
    return str(value).split(",")


def _component_pods(cluster: Cluster, release: Release) -> dict[str, tuple[str, int]]:
    """Each hourglass component's pod: its uid and its containers' restarts."""
    pods = {}
    for component in COMPONENTS:
        for pod in _pods(cluster, release, component):
            restarts = sum(s["restartCount"] for s in pod["status"].get("containerStatuses") or [])
            pods[pod["metadata"]["name"]] = (pod["metadata"]["uid"], restarts)
    return pods


def test_killing_the_first_etcd_member_every_component_carries_on(
    cluster: Cluster, release: Release
) -> None:
    ns = release.namespace
    _ready(cluster, release, "statefulset", "etcd")
    endpoints = _endpoints(cluster, release)
    print(f"the components' etcd endpoints: {endpoints}")
    assert len(endpoints) == 3
    first = endpoints[0].split(".")[0]
    assert first == f"{release.component('etcd')}-0"
    cluster.show(ns, "pods", "-l", "app.kubernetes.io/component=etcd")

    ticking = _ticking_job(release)
    wait_until("three runs of the ticking job", lambda: len(_runs(release, ticking)) >= 3,
               timeout=180)  # fmt: skip
    long_job = release.hourglass(
        "schedule", "--after", "1s", "--max-attempts", "3", "--image", BUSYBOX,
        "--name", "through-etcd-loss", "--", "sh", "-c", "sleep 30; echo survived",
    ).strip()  # fmt: skip

    def running_pod() -> dict[str, Any] | None:
        pods = cluster.get(ns, "pods", "-l", f"{JOB_LABEL}={long_job}")["items"]
        return pods[0] if pods and pods[0]["status"]["phase"] == "Running" else None

    pod = wait_until("the long attempt's pod to run", running_pod, timeout=180, every=1)
    run_id = pod["metadata"]["labels"][RUN_LABEL]
    before = _component_pods(cluster, release)
    (member,) = [p for p in _pods(cluster, release, "etcd") if p["metadata"]["name"] == first]
    cut = datetime.now(UTC)
    cluster.show(ns, "pods,jobs", "-l", f"{JOB_LABEL}={long_job}")
    print(f"force-deleting etcd member {first} while run {run_id} runs in pod "
          f"{pod['metadata']['name']}")  # fmt: skip
    cluster.kubectl("--namespace", ns, "delete", "pod", first, "--grace-period=0", "--force",
                    "--wait=false")  # fmt: skip

    def finished() -> dict[str, Any] | None:
        status = release.hourglass("status", long_job, "-o", "json")
        runs = json.loads(status).get("recentRuns") or []
        done = runs and runs[0]["state"] not in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING")
        return runs[0] if done else None

    run = wait_until("the long run to finish after the member's loss", finished, timeout=300)
    print("\nthe long job after the loss:\n" + release.hourglass("status", long_job))
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    # Once: the worker's lease outlived the member, so the claimer never took the run back.
    assert [a["state"] for a in run["attempts"]] == ["RUN_STATE_SUCCEEDED"], run["attempts"]
    assert run["attempts"][0]["stdoutTail"].strip() == "survived"
    jobs = cluster.get(ns, "jobs", "-l", f"{RUN_LABEL}={run_id}")["items"]
    assert [job["metadata"]["name"] for job in jobs] == [f"hg-{run_id}-1"]
    assert len(cluster.get(ns, "pods", "-l", f"{RUN_LABEL}={run_id}")["items"]) == 1

    # The fires go on: five more succeeded after the loss, and none was lost or doubled.
    wait_until("five runs of the ticking job after the loss to succeed",
               lambda: _succeeded_after(release, ticking, cut, 5), timeout=240)  # fmt: skip
    runs = _runs(release, ticking)
    print(f"{len(runs)} ticking runs, fired {runs[0]['scheduledAt']} .. {runs[-1]['scheduledAt']}")
    _assert_unbroken(runs)

    # The member comes back under its name with its volume, a new pod.
    def member_back() -> bool:
        return any(
            p["metadata"]["name"] == first
            and p["metadata"]["uid"] != member["metadata"]["uid"]
            and _ready_pod(p)
            for p in _pods(cluster, release, "etcd")
        )

    wait_until(f"etcd member {first} to return", member_back, timeout=300)
    cluster.show(ns, "pods")
    # Every component carried on in the pod it had: none restarted, none replaced.
    assert _component_pods(cluster, release) == before
    worker_log = cluster.kubectl("--namespace", ns, "logs",
                                 f"deployment/{release.component('worker')}")  # fmt: skip
    switches = [line for line in worker_log.splitlines() if "etcd: now using" in line]
    print("the worker's etcd failover:\n" + "\n".join(switches))
    assert switches, "the worker never left the dead member"
    for name in (long_job, ticking):
        release.hourglass("delete", name)
