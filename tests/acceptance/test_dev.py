"""`hourglass dev` and the CLI, as the README tells a newcomer to use them."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from hourglass.embedded import free_port
from tests.acceptance.conftest import HOURGLASS, Processes


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """One `hourglass dev` for the module, on a free port, data in a temporary folder."""
    import os

    folder = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env["HOURGLASS_SERVER"] = f"127.0.0.1:{port}"
    procs = Processes(logs=folder, env=env)
    procs.start("dev", "dev", "--data-dir", str(folder / "data"), "--listen", f"127.0.0.1:{port}")
    procs.wait_for_log("dev", f"serving hourglass.v1.JobScheduler on 127.0.0.1:{port}", 60)
    yield procs
    procs.stop_all()
    assert procs.running["dev"].returncode == 0, procs.log("dev")


def test_schedule_every_2s_and_see_hello_within_5_seconds(dev: Processes) -> None:
    job_id = dev.cli("schedule", "--every", "2s", "--", "echo", "hello").stdout.strip()
    assert uuid.UUID(job_id)
    deadline = time.monotonic() + 5
    succeeded: list[dict[str, object]] = []
    while time.monotonic() < deadline and not succeeded:
        status = dev.cli_json("status", job_id)
        succeeded = [r for r in status.get("recentRuns", []) if r["state"] == "RUN_STATE_SUCCEEDED"]
        time.sleep(0.2)
    assert succeeded, f"no succeeded run within 5s: {status}"
    assert succeeded[0]["attempts"][0]["stdoutTail"] == "hello\n"  # type: ignore[index]

    table = dev.cli("status", job_id).stdout
    assert "every 2s" in table and "succeeded" in table and "hello" in table
    assert job_id in dev.cli("jobs").stdout
    assert "succeeded" in dev.cli("runs", job_id).stdout
    assert "cancelled" in dev.cli("cancel", job_id).stdout


def test_bad_input_exits_2_and_names_the_field(dev: Processes) -> None:
    local = dev.cli("schedule", "--every", "2x", "--", "true", check=False)
    assert local.returncode == 2 and "invalid duration '2x'" in local.stderr
    remote = dev.cli("schedule", "--cron", "99 * * * *", "--", "true", check=False)
    assert remote.returncode == 2
    assert "schedule.cron.expression" in remote.stderr and "INVALID_ARGUMENT" in remote.stderr
    missing = dev.cli("schedule", "--every", "1s", check=False)
    assert missing.returncode == 2 and "give the command to run" in missing.stderr


def test_unknown_job_exits_3_and_unreachable_server_exits_4(dev: Processes) -> None:
    unknown = dev.cli("status", str(uuid.uuid4()), check=False)
    assert unknown.returncode == 3 and "not found" in unknown.stderr
    away = dev.cli(
        "--log-level", "ERROR", "jobs", "--server", f"127.0.0.1:{free_port()}", check=False
    )
    assert away.returncode == 4 and "hourglass dev" in away.stderr


def test_a_reflection_only_client_schedules_and_reads_back(dev: Processes) -> None:
    """No .proto files and no generated code: everything comes from server reflection."""
    with grpc.insecure_channel(dev.env["HOURGLASS_SERVER"]) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "hourglass.v1.JobScheduler" in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("hourglass.v1.JobScheduler")

        def call(method_name: str, body: dict[str, object]) -> dict[str, object]:
            method = service.FindMethodByName(method_name)
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            rpc = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            response = rpc(json_format.ParseDict(body, request_class()), timeout=10)
            return json_format.MessageToDict(response)

        created = call(
            "ScheduleJob",
            {
                "requestId": str(uuid.uuid4()),
                "spec": {
                    "name": "reflected",
                    "task": {"command": ["echo", "from reflection"]},
                    "schedule": {"after": "3600s"},
                },
            },
        )
        status = call("GetJobStatus", {"jobId": created["jobId"]})
    job = status["job"]
    assert job["id"] == created["jobId"]  # type: ignore[index]
    assert job["spec"]["name"] == "reflected"  # type: ignore[index]
    assert job["state"] == "JOB_STATE_ACTIVE"  # type: ignore[index]


def test_dev_keeps_its_data_under_the_data_dir(dev: Processes) -> None:
    data = Path(dev.logs) / "data"
    assert (data / "postgres" / "PG_VERSION").exists()
    assert (data / "etcd" / "member").is_dir()


def wait_until(check: Callable[[], object], timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def runs_of(dev: Processes, job_id: str) -> list[dict[str, object]]:
    return dev.cli_json("runs", job_id).get("runs", [])  # type: ignore[no-any-return]


def test_logs_follow_a_live_run(dev: Processes) -> None:
    job_id = dev.cli(
        "schedule", "--after", "0s", "--", "sh", "-c", "echo one; sleep 2; echo two"
    ).stdout.strip()
    run = wait_until(
        lambda: next((r for r in runs_of(dev, job_id) if r["state"] == "RUN_STATE_RUNNING"), None)
    )
    follower = subprocess.Popen(
        [*HOURGLASS, "logs", "-f", run["id"]],  # type: ignore[index]
        stdout=subprocess.PIPE,
        text=True,
        env=dev.env,
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "one\n"
    # The first line came while the run was still going.
    assert runs_of(dev, job_id)[0]["state"] == "RUN_STATE_RUNNING"
    assert follower.stdout.readline() == "two\n"
    assert follower.wait(10) == 0  # ends by itself once the run has finished
    assert runs_of(dev, job_id)[0]["state"] == "RUN_STATE_SUCCEEDED"


def test_every_call_is_reachable_from_the_cli(dev: Processes, tmp_path: Path) -> None:
    tool = tmp_path / "tool.sh"
    tool.write_text('#!/bin/sh\necho "tool got: $*"\n')
    digest = dev.cli("upload", str(tool)).stdout.strip()
    assert digest.startswith("sha256:")
    job_id = dev.cli(
        "schedule", "--binary", str(tool), "--every", "1h", "--", "x", "y"
    ).stdout.strip()

    watcher = subprocess.Popen(
        [*HOURGLASS, "watch", job_id], stdout=subprocess.PIPE, text=True, env=dev.env
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline().startswith(f"job  {job_id}  active")

    run_id = dev.cli("trigger", job_id).stdout.strip()
    seen = [watcher.stdout.readline() for _ in range(3)]
    assert [line.split()[4] for line in seen] == ["queued", "running", "succeeded"]
    assert all(run_id in line for line in seen)
    watcher.terminate()
    assert (
        dev.cli_json("status", job_id)["recentRuns"][0]["attempts"][0]["stdoutTail"]
        == "tool got: x y\n"
    )

    assert "paused" in dev.cli("pause", job_id).stdout
    assert dev.cli_json("status", job_id)["job"]["state"] == "JOB_STATE_PAUSED"
    assert "resumed" in dev.cli("resume", job_id).stdout
    assert (
        "revision 2"
        in dev.cli(
            "update", job_id, "--cron", "0 * * * *", "--overlap", "skip", "--", "true"
        ).stdout
    )
    assert (
        "4 runs queued"
        in dev.cli(
            "backfill",
            job_id,
            "--from",
            "2026-01-01T00:30:00+00:00",
            "--to",
            "2026-01-01T04:00:00+00:00",
        ).stdout
    )
    cancelled = dev.cli_json("runs", job_id)
    assert len(cancelled["runs"]) >= 4
    long_job = dev.cli("schedule", "--after", "0s", "--", "sleep", "60").stdout.strip()
    run = wait_until(
        lambda: next((r for r in runs_of(dev, long_job) if r["state"] == "RUN_STATE_RUNNING"), None)
    )
    assert "cancel requested" in dev.cli("cancel-run", run["id"]).stdout  # type: ignore[index]
    wait_until(lambda: runs_of(dev, long_job)[0]["state"] == "RUN_STATE_CANCELLED")
    assert "deleted" in dev.cli("delete", job_id).stdout
    assert dev.cli("status", job_id, check=False).returncode == 3
