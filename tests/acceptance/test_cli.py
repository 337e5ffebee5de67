"""The CLI as kubectl, temporal and argo users expect it, against a real `hourglass dev`: jobs
by name or short id, -o json|yaml that parse back, exit codes a script can tell apart,
--version."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import yaml

from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes

T = TypeVar("T")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    folder = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env["HOURGLASS_SERVER"] = f"127.0.0.1:{port}"
    procs = Processes(logs=folder, env=env)
    procs.start("dev", "dev", "--data-dir", str(folder / "data"), "--listen", f"127.0.0.1:{port}")
    procs.wait_for_log("dev", f"serving hourglass.v1.JobScheduler on 127.0.0.1:{port}", 60)
    yield procs
    procs.stop_all()


def until(check: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def schedule(dev: Processes, name: str, *command: str) -> str:
    return dev.cli(
        "schedule", "--every", "1h", "--name", name, "--", *(command or ("true",))
    ).stdout.strip()


def test_status_by_name_by_namespace_and_name_and_by_id_prefix(dev: Processes) -> None:
    job_id = schedule(dev, "nightly-report")
    for word in ("nightly-report", "default/nightly-report", job_id[:8], job_id[:6].upper()):
        status = dev.cli_json("status", word)
        assert status["job"]["id"] == job_id, word
    # Every command that takes a job reads the same words.
    assert f"job {job_id} paused" in dev.cli("pause", "nightly-report").stdout
    assert f"job {job_id} resumed" in dev.cli("resume", job_id[:5]).stdout
    run_id = dev.cli("trigger", "default/nightly-report").stdout.strip()
    assert run_id in dev.cli("runs", "nightly-report").stdout
    # ... and a run is found by a short id too.
    until(
        lambda: dev.cli_json("runs", job_id)["runs"][0]["state"] == "RUN_STATE_SUCCEEDED",
        "the triggered run to succeed",
    )
    wide = dev.cli("status", "nightly-report", "-o", "wide").stdout
    assert "TRIGGER" in wide and "manual" in wide and "namespace:" in wide
    assert f"job {job_id} deleted" in dev.cli("delete", "nightly-report").stdout
    gone = dev.cli("status", "nightly-report", check=False)
    assert gone.returncode == 3 and "job 'nightly-report' not found" in gone.stderr


def test_a_run_prints_its_output_by_short_id(dev: Processes) -> None:
    job_id = schedule(dev, "greeter", "echo", "hello from a short id")
    run_id = dev.cli("trigger", "greeter").stdout.strip()
    until(
        lambda: dev.cli_json("status", job_id)["recentRuns"][0]["state"] == "RUN_STATE_SUCCEEDED",
        "the run to succeed",
    )
    assert dev.cli("logs", run_id[:6]).stdout == "hello from a short id\n"


def test_a_running_run_is_cancelled_by_short_id(dev: Processes) -> None:
    job_id = schedule(dev, "sleeper", "sleep", "60")
    run_id = dev.cli("trigger", "sleeper").stdout.strip()
    until(
        lambda: dev.cli_json("status", job_id)["recentRuns"][0]["state"] == "RUN_STATE_RUNNING",
        "the run to start",
    )
    assert f"run {run_id} cancel requested" in dev.cli("cancel-run", run_id[:7]).stdout
    until(
        lambda: dev.cli_json("status", job_id)["recentRuns"][0]["state"] == "RUN_STATE_CANCELLED",
        "the run to be cancelled",
    )


def test_an_ambiguous_name_is_refused_listing_the_candidates(dev: Processes) -> None:
    first = schedule(dev, "twin")
    second = schedule(dev, "twin")
    refused = dev.cli("status", "twin", check=False)
    assert refused.returncode == 2
    assert "job 'twin' is ambiguous: it names 2 jobs" in refused.stderr
    assert first in refused.stderr and second in refused.stderr
    # Nothing changed: both still run on their schedule.
    refused = dev.cli("cancel", "twin", check=False)
    assert refused.returncode == 2
    for job_id in (first, second):
        assert dev.cli_json("status", job_id)["job"]["state"] == "JOB_STATE_ACTIVE"
        dev.cli("cancel", job_id)


def test_output_formats_parse_back_to_the_same_data(dev: Processes) -> None:
    job_id = schedule(dev, "formats")
    as_json = json.loads(dev.cli("status", "formats", "-o", "json").stdout)
    as_yaml = yaml.safe_load(dev.cli("status", "formats", "-o", "yaml").stdout)
    assert as_json == as_yaml and as_json["job"]["id"] == job_id
    listed = yaml.safe_load(dev.cli("jobs", "-o", "yaml").stdout)
    assert job_id in [job["id"] for job in listed["jobs"]]
    assert json.loads(dev.cli("runs", job_id, "-o", "json").stdout) == {}  # no runs yet
    table, wide = dev.cli("jobs").stdout, dev.cli("jobs", "-o", "wide").stdout
    assert "NAMESPACE" not in table.splitlines()[0]
    assert "NAMESPACE" in wide.splitlines()[0] and "REVISION" in wide.splitlines()[0]


def test_not_found_exits_3_and_unreachable_exits_4(dev: Processes) -> None:
    for word in (str(uuid.uuid4()), "no-such-job", "team-z/no-such-job", "ffff0000"):
        missing = dev.cli("status", word, check=False)
        assert missing.returncode == 3, (word, missing.stderr)
        assert "not found" in missing.stderr
    missing_run = dev.cli("logs", "0000ffff", check=False)
    assert missing_run.returncode == 3 and "run '0000ffff' not found" in missing_run.stderr
    away = dev.cli(
        "--log-level", "ERROR", "status", "hello", "--server", f"127.0.0.1:{free_port()}",
        check=False,
    )  # fmt: skip
    assert away.returncode == 4 and "cannot reach the API" in away.stderr
    bad = dev.cli("schedule", "--cron", "61 * * * *", "--", "true", check=False)
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr


def test_version(dev: Processes) -> None:
    from importlib import metadata

    shown = dev.cli("--version").stdout.strip()
    assert shown == f"hourglass {metadata.version('hourglass')}"


def test_a_job_the_operator_manages_is_refused_with_a_kubectl_hint_unless_forced(
    dev: Processes,
) -> None:
    """What the operator sees as a ScheduledJob's job: the CLI must not undo it by accident."""
    import grpc

    from hourglass.v1 import scheduler_pb2 as pb
    from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

    with grpc.insecure_channel(dev.env["HOURGLASS_SERVER"]) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)  # type: ignore[no-untyped-call]
        spec = pb.JobSpec(
            name="team/hello",
            task=pb.Task(command=["true"]),
            schedule=pb.Schedule(every=pb.Every(interval={"seconds": 3600})),
        )
        request = pb.ScheduleJobRequest(
            request_id=str(uuid.uuid4()), spec=spec, managed_by="ScheduledJob team/hello"
        )
        job_id = stub.ScheduleJob(request, timeout=30).job_id
    run_id = dev.cli("trigger", job_id).stdout.strip()
    until(lambda: run_id in dev.cli("runs", job_id).stdout, "the triggered run")
    for words, hint in (
        (("delete", job_id), "kubectl delete scheduledjob"),
        (("pause", job_id), "suspend"),
        (("cancel", job_id), "kubectl"),
    ):
        refused = dev.cli(*words, check=False)
        assert refused.returncode == 6, (words, refused.stderr)
        assert hint in refused.stderr, refused.stderr
    status = dev.cli_json("status", job_id)
    assert status["job"]["state"] == "JOB_STATE_ACTIVE"
    assert status["job"]["managedBy"] == "ScheduledJob team/hello"
    assert run_id in dev.cli("runs", job_id).stdout  # nothing of its history went
    assert f"job {job_id} paused" in dev.cli("pause", job_id, "--force").stdout
    assert dev.cli_json("status", job_id)["job"]["state"] == "JOB_STATE_PAUSED"
