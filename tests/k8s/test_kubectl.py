"""The user's path, with the real kubectl: `kubectl apply` of the example ScheduledJob against
a real API server, with the operator running and a real hourglass API behind it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_operator import (
    HourglassApi,
    RunningOperator,
    ScheduledJobs,
    _scheduled,
    wait_for,
)

pytest_plugins = ["tests.k8s.test_operator"]


@pytest.fixture
def kubectl(
    k8s_tool: Callable[[str], Path], kube_apiserver: KubeApiServer, k8s_namespace: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = k8s_tool("kubectl")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(binary),
                "--kubeconfig",
                str(kube_apiserver.kubeconfig),
                "-n",
                k8s_namespace,
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_kubectl_apply_get_and_delete(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    repo_root: Path,
    crds: list[str],
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
) -> None:
    applied = kubectl("apply", "-f", str(repo_root / "examples/scheduledjob.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "scheduledjob.hourglass.io/hello created" in applied.stdout

    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    listed = kubectl("get", "sj")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "LAST", "RESULT",
        "NEXT", "FIRE", "READY", "REASON", "AGE",
    ]  # fmt: skip
    assert row.split()[0] == "hello" and "every 30s" in row
    assert hourglass_api.job(job_id).job.spec.schedule.every.interval.seconds == 30

    deleted = kubectl("delete", "sj", "hello", "--wait=true", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(grpc.RpcError) as missing:
        hourglass_api.job(job_id)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_kubectl_apply_of_a_bad_spec_names_the_field(
    kubectl: Callable[..., subprocess.CompletedProcess[str]], crds: list[str]
) -> None:
    bad = """
apiVersion: hourglass.io/v1
kind: ScheduledJob
metadata:
  name: broken
spec:
  schedule:
    every:
      interval: 30 seconds
  task:
    image: busybox
    command: ["true"]
  overlap: sometimes
"""
    refused = kubectl("apply", "-f", "-", stdin=bad)
    assert refused.returncode != 0
    assert "spec.schedule.every.interval" in refused.stderr
    assert "spec.overlap" in refused.stderr
    assert "sometimes" in refused.stderr
    assert kubectl("get", "sj", "broken").returncode != 0  # nothing was stored
