"""Tokens and artifacts on the production shape (api with tokens, producer, worker), used as a
tenant would, through the CLI: a revoked token's open streams end within the auth cache's
lifetime, tokens expire, a namespace cannot run or even detect another's binaries, uploads
have an idle timeout and a quota."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hourglass.api.auth import DEFAULT_CACHE_SECONDS
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import HOURGLASS, Processes

IDLE_TIMEOUT = 2
# A stream may take one round of its own work past the cache's lifetime to notice; a CLI
# process also needs a moment to print and exit on a busy machine.
SLACK = 2.0


def create_token(p: Processes, namespace: str, *extra: str) -> tuple[str, str]:
    """(token id, token)."""
    created = p.cli("token", "create", "--namespace", namespace, *extra)
    return created.stderr.split()[1], created.stdout.strip()


def wait_until(check: object, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def shape(cluster_env: Processes) -> Processes:
    p = cluster_env
    p.start(
        "api",
        "api",
        "--listen",
        p.env["HOURGLASS_SERVER"],
        "--artifacts",
        str(p.logs / "artifacts"),
        "--upload-idle-timeout",
        f"{IDLE_TIMEOUT}s",
    )
    p.start("producer", "producer")
    p.start(
        "worker",
        "worker",
        "--artifacts",
        str(p.logs / "artifacts"),
        "--binary-cache",
        str(p.logs / "binaries"),
        "--shutdown-grace",
        "1",
    )
    p.wait_for_log("api", "serving")
    return p


class Streaming:
    """A CLI command left running, its output collected as it comes."""

    def __init__(self, p: Processes, *args: str) -> None:
        self.process = subprocess.Popen(
            [*HOURGLASS, *args],
            env=p.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def streams() -> Iterator[list[Streaming]]:
    started: list[Streaming] = []
    yield started
    for stream in started:
        stream.stop()


def seconds_until_it_ends(p: Processes, stream: Streaming, token_id: str) -> float:
    """Revokes the token; returns how long the stream's process took to end after that."""
    assert stream.process.poll() is None, "the stream ended before its token was revoked"
    p.cli("token", "revoke", token_id)
    revoked = time.monotonic()
    stream.process.wait(timeout=DEFAULT_CACHE_SECONDS + 30)
    return time.monotonic() - revoked


def test_watch_ends_within_the_cache_lifetime_after_its_token_is_revoked(
    shape: Processes, streams: list[Streaming]
) -> None:
    p = shape
    token_id, secret = create_token(p, "watchers")
    job_id = p.cli("schedule", "--token", secret, "--every", "1h", "--", "true").stdout.strip()
    watch = Streaming(p, "watch", job_id, "--token", secret)
    streams.append(watch)
    wait_until(lambda: any(job_id in line for line in watch.lines), what="watch's first event")
    # The token still works: a trigger reaches the stream.
    p.cli("trigger", job_id, "--token", secret)
    wait_until(lambda: any(line.startswith("run") for line in watch.lines), what="a run event")

    elapsed = seconds_until_it_ends(p, watch, token_id)
    print(f"watch ended {elapsed:.2f}s after `token revoke` (cache {DEFAULT_CACHE_SECONDS}s)")
    assert elapsed < DEFAULT_CACHE_SECONDS + SLACK
    assert watch.process.returncode == 5  # UNAUTHENTICATED
    assert watch.process.stderr is not None
    assert "UNAUTHENTICATED" in watch.process.stderr.read()


def test_logs_follow_ends_within_the_cache_lifetime_after_its_token_is_revoked(
    shape: Processes, streams: list[Streaming]
) -> None:
    p = shape
    token_id, secret = create_token(p, "followers")
    job_id = p.cli(
        "schedule",
        "--token",
        secret,
        "--every",
        "1h",
        "--",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ).stdout.strip()
    run_id = p.cli("trigger", job_id, "--token", secret).stdout.strip()
    follow = Streaming(p, "logs", run_id, "-f", "--token", secret)
    streams.append(follow)
    wait_until(lambda: len(follow.lines) >= 3, what="output reaching `logs -f`")

    elapsed = seconds_until_it_ends(p, follow, token_id)
    print(f"logs -f ended {elapsed:.2f}s after `token revoke` (cache {DEFAULT_CACHE_SECONDS}s)")
    assert elapsed < DEFAULT_CACHE_SECONDS + SLACK
    assert follow.process.returncode == 5
    # The run itself goes on: revoking a token stops its reader, not the job.
    _, admin = create_token(p, "followers")
    status = p.cli_json("status", job_id, "--token", admin)
    assert status["recentRuns"][0]["state"] == "RUN_STATE_RUNNING"
    p.cli("cancel-run", run_id, "--token", admin)
    wait_until(
        lambda: (
            p.cli_json("status", job_id, "--token", admin)["recentRuns"][0]["state"]
            == "RUN_STATE_CANCELLED"
        ),
        what="the run's cancellation",
    )


def test_an_expired_token_is_refused_and_told_how_to_get_a_new_one(shape: Processes) -> None:
    p = shape
    _, secret = create_token(p, "short-lived", "--ttl", "2s")
    listed = p.cli("token", "list").stdout
    row = next(line for line in listed.splitlines() if "short-lived" in line)
    assert "EXPIRES" in listed and "never" not in row
    wait_until(
        lambda: p.cli("jobs", "--token", secret, check=False).returncode != 0,
        what="the token expiring",
    )
    refused = p.cli("jobs", "--token", secret, check=False)
    assert refused.returncode == 5
    assert "UNAUTHENTICATED" in refused.stderr and "expired" in refused.stderr
    assert "hourglass token create --namespace short-lived" in refused.stderr
    row = next(line for line in p.cli("token", "list").stdout.splitlines() if "short-lived" in line)
    assert row.rstrip().endswith("expired")


@pytest.mark.parametrize("ttl", ["0s", "-5d", "thirty days"])
def test_a_bad_ttl_is_refused_with_exit_code_2(shape: Processes, ttl: str) -> None:
    p = shape
    refused = p.cli("token", "create", "--namespace", "x", f"--ttl={ttl}", check=False)
    assert refused.returncode == 2
    assert "--ttl" in refused.stderr
    assert "(no tokens)" in p.cli("token", "list").stdout  # nothing was stored


def upload(p: Processes, path: Path, secret: str) -> dict[str, object]:
    reply: dict[str, object] = p.cli_json("upload", str(path), "--token", secret)
    return reply


def test_b_gets_not_found_for_as_binary_and_its_upload_reveals_nothing(
    shape: Processes, tmp_path: Path
) -> None:
    p = shape
    _, alice = create_token(p, "team-a")
    _, bob = create_token(p, "team-b")
    tool = tmp_path / "tool"
    tool.write_text('#!/bin/sh\necho "tool of team-a"\n')
    tool.chmod(0o755)
    first = upload(p, tool, alice)
    assert first["created"] is True
    digest = str(first["digest"])

    # A's job runs it.
    a_job = p.cli(
        "schedule", "--token", alice, "--after", "0s", "--binary", str(tool), "--", "x"
    ).stdout.strip()
    wait_until(
        lambda: (
            p.cli_json("status", a_job, "--token", alice)["recentRuns"][0]["state"]
            == "RUN_STATE_SUCCEEDED"
        ),
        what="A's run",
    )

    # B names the digest: NOT_FOUND, and nothing is scheduled.
    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(binary=digest)))
        request.spec.schedule.after.FromSeconds(0)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ScheduleJob(request, metadata=[("authorization", f"Bearer {bob}")])
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not found" in (raised.value.details() or "")
    assert "(no jobs)" in p.cli("jobs", "--token", bob).stdout

    # B's upload of the very same bytes is new to B (`created` is true, as for bytes nobody
    # stored): the answer does not tell B that A has them.
    assert upload(p, tool, bob)["created"] is True
    assert upload(p, tool, bob).get("created", False) is False  # B's own second upload


def stored_files(store: Path) -> list[Path]:
    """Every file in the artifact folder: published binaries and spooled parts alike."""
    return sorted(path for path in store.rglob("*") if path.is_file()) if store.exists() else []


def test_an_idle_upload_stream_times_out_and_keeps_nothing(shape: Processes) -> None:
    p = shape
    _, secret = create_token(p, "slow")
    stalled = threading.Event()

    def stalls() -> Iterator[pb.UploadBinaryRequest]:
        yield pb.UploadBinaryRequest(chunk=b"\x7fELF" + b"\0" * 1000)
        stalled.wait(60)  # the client goes quiet with the stream open

    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.UploadBinary(stalls(), metadata=[("authorization", f"Bearer {secret}")])
        elapsed = time.monotonic() - started
        stalled.set()
    print(f"idle upload ended after {elapsed:.2f}s (idle timeout {IDLE_TIMEOUT}s)")
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "nothing was stored" in (raised.value.details() or "")
    assert IDLE_TIMEOUT <= elapsed < IDLE_TIMEOUT + SLACK + 3
    assert stored_files(p.logs / "artifacts") == []


def test_the_byte_quota_refuses_an_upload_past_it(shape: Processes, tmp_path: Path) -> None:
    p = shape
    _, secret = create_token(p, "small")
    assert (
        "1KiB"
        in p.cli("quota", "set", "--namespace", "small", "--max-artifact-bytes", "1KiB").stdout
    )
    assert "small" in p.cli("quota", "list").stdout
    fits, too_big = tmp_path / "fits", tmp_path / "too-big"
    fits.write_bytes(b"a" * 600)
    too_big.write_bytes(b"b" * 600)
    assert upload(p, fits, secret)["created"] is True
    refused = p.cli("upload", str(too_big), "--token", secret, check=False)
    assert refused.returncode == 6  # refused by the quota, not bad usage
    assert "RESOURCE_EXHAUSTED" in refused.stderr
    assert "quota" in refused.stderr and "1KiB" in refused.stderr
    # Scheduling with the refused file uploads it first, and is refused the same way.
    job = p.cli(
        "schedule",
        "--token",
        secret,
        "--every",
        "1h",
        "--binary",
        str(too_big),
        "--",
        "x",
        check=False,
    )
    assert job.returncode == 6 and "quota" in job.stderr
    assert "(no jobs)" in p.cli("jobs", "--token", secret).stdout
    bad = p.cli("quota", "set", "--namespace", "small", "--max-artifact-bytes=-1", check=False)
    assert bad.returncode == 2 and "--max-artifact-bytes" in bad.stderr
    # Raised by the admin, it fits.
    p.cli("quota", "set", "--namespace", "small", "--max-artifact-bytes", "1MiB")
    assert upload(p, too_big, secret)["created"] is True
