"""Tenancy and transport security of the API, through the gRPC interface and the CLI: tokens
belong to namespaces, a namespace sees only its own jobs, TLS and mutual TLS work, secrets
are never echoed."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from hourglass.embedded import free_port
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.acceptance.conftest import Processes


def token(p: Processes, namespace: str) -> str:
    return p.cli("token", "create", "--namespace", namespace).stdout.strip()


def stub_for(channel: grpc.Channel) -> pb_grpc.JobSchedulerStub:
    return pb_grpc.JobSchedulerStub(channel)


def bearer(value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {value}")]


def every_minute(command: str = "true", **task: object) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=[command], **task)))  # type: ignore[arg-type]
    request.spec.schedule.every.interval.FromSeconds(60)
    return request


@pytest.fixture
def secured(cluster_env: Processes) -> Processes:
    cluster_env.start("api", "api", "--listen", cluster_env.env["HOURGLASS_SERVER"])
    cluster_env.wait_for_log("api", "serving")
    return cluster_env


def test_a_namespace_sees_and_changes_only_its_own_jobs(secured: Processes) -> None:
    p = secured
    alice, bob = token(p, "team-a"), token(p, "team-b")
    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        stub = stub_for(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListJobs(pb.ListJobsRequest())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListJobs(pb.ListJobsRequest(), metadata=bearer("hg_not-a-real-token"))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

        a_job = stub.ScheduleJob(every_minute(), metadata=bearer(alice)).job_id
        b_job = stub.ScheduleJob(every_minute(), metadata=bearer(bob)).job_id
        a_run = stub.TriggerJob(pb.TriggerJobRequest(job_id=a_job), metadata=bearer(alice)).run.id

        listed = stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(bob))
        assert [job.id for job in listed.jobs] == [b_job]
        assert listed.jobs[0].namespace == "team-b"
        # Every call that names A's job or run, made with B's token, is NOT_FOUND...
        calls = [
            ("GetJobStatus", pb.GetJobStatusRequest(job_id=a_job)),
            ("ListRuns", pb.ListRunsRequest(job_id=a_job)),
            ("UpdateJob", pb.UpdateJobRequest(job_id=a_job, spec=every_minute("false").spec)),
            ("PauseJob", pb.PauseJobRequest(job_id=a_job)),
            ("ResumeJob", pb.ResumeJobRequest(job_id=a_job)),
            ("TriggerJob", pb.TriggerJobRequest(job_id=a_job)),
            ("CancelJob", pb.CancelJobRequest(job_id=a_job)),
            ("DeleteJob", pb.DeleteJobRequest(job_id=a_job)),
            ("CancelRun", pb.CancelRunRequest(run_id=a_run)),
        ]
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as raised:
                getattr(stub, method)(request, metadata=bearer(bob))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND, method
        for method, request in [
            ("WatchJob", pb.WatchJobRequest(job_id=a_job)),
            ("GetRunLogs", pb.GetRunLogsRequest(run_id=a_run)),
        ]:
            with pytest.raises(grpc.RpcError) as raised:
                list(getattr(stub, method)(request, metadata=bearer(bob)))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND, method
        # ...and changed nothing: A still sees its job as it was, with its queued run.
        status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=a_job), metadata=bearer(alice))
        assert status.job.state == pb.JOB_STATE_ACTIVE and status.job.revision == 1
        assert [r.state for r in status.recent_runs] == [pb.RUN_STATE_QUEUED]

        # The same request id in two namespaces makes two jobs, not a conflict.
        again = every_minute()
        again.request_id = "shared-id"
        assert (
            stub.ScheduleJob(again, metadata=bearer(alice)).job_id
            != stub.ScheduleJob(again, metadata=bearer(bob)).job_id
        )


def test_revoked_tokens_stop_working_and_the_cli_sends_tokens(secured: Processes) -> None:
    p = secured
    created = p.cli("token", "create", "--namespace", "ops", "--name", "ci")
    secret = created.stdout.strip()
    token_id = created.stderr.split()[1]
    job_id = p.cli(
        "--log-level", "ERROR", "schedule", "--token", secret, "--every", "1h", "--", "true"
    ).stdout.strip()
    assert job_id in p.cli("jobs", "--token", secret).stdout
    denied = p.cli("jobs", check=False)
    assert denied.returncode == 5 and "UNAUTHENTICATED" in denied.stderr
    assert "revoked" in p.cli("token", "revoke", token_id).stdout
    assert "ops" in p.cli("token", "list").stdout
    # The API caches a token's namespace for a few seconds.
    deadline = 50
    while deadline and p.cli("jobs", "--token", secret, check=False).returncode == 0:
        deadline -= 1
        __import__("time").sleep(0.2)
    assert p.cli("jobs", "--token", secret, check=False).returncode == 5


def test_secret_env_reaches_the_process_and_is_never_echoed(cluster_env: Processes) -> None:
    p = cluster_env
    p.start("api", "api", "--insecure", "--listen", p.env["HOURGLASS_SERVER"])
    p.start("producer", "producer")
    p.start("worker", "worker", "--log-dir", str(p.logs / "runs"))
    p.wait_for_log("api", "serving")
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    with grpc.insecure_channel(p.env["HOURGLASS_SERVER"]) as channel:
        stub = stub_for(channel)
        # The process proves it got the secret by printing its hash, not the secret.
        request = pb.ScheduleJobRequest(
            spec=pb.JobSpec(
                task=pb.Task(
                    command=["sh", "-c", 'printf %s "$API_KEY" | sha256sum | cut -c1-64'],
                    secret_env={"API_KEY": secret},
                )
            )
        )
        request.spec.schedule.after.FromSeconds(0)
        job_id = stub.ScheduleJob(request).job_id
        for _ in range(100):
            status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
            if status.recent_runs and status.recent_runs[0].state == pb.RUN_STATE_SUCCEEDED:
                break
            __import__("time").sleep(0.1)
        expected = hashlib.sha256(secret.encode()).hexdigest()
        assert status.recent_runs[0].attempts[0].stdout_tail == expected + "\n"
        assert dict(status.job.spec.task.secret_env) == {"API_KEY": "<redacted>"}
        watched = next(iter(stub.WatchJob(pb.WatchJobRequest(job_id=job_id))))
        assert secret not in str(watched)
    # Not in any answer above, nor in any component's log.
    for name in ("api", "producer", "worker"):
        assert secret not in p.log(name)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(tmp_path / "ca.key"),
        "-out",
        str(tmp_path / "ca.pem"),
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(tmp_path / f"{name}.key"),
            "-out",
            str(tmp_path / f"{name}.csr"),
        )
        (tmp_path / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(tmp_path / f"{name}.csr"),
            "-CA",
            str(tmp_path / "ca.pem"),
            "-CAkey",
            str(tmp_path / "ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(tmp_path / f"{name}.ext"),
            "-out",
            str(tmp_path / f"{name}.pem"),
        )
    return tmp_path


def test_tls_and_mutual_tls(cluster_env: Processes, pki: Path) -> None:
    p = cluster_env
    tls_port, mtls_port = free_port(), free_port()
    p.start(
        "tls",
        "api",
        "--listen",
        f"127.0.0.1:{tls_port}",
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
    )
    p.start(
        "mtls",
        "api",
        "--listen",
        f"127.0.0.1:{mtls_port}",
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-client-ca",
        str(pki / "ca.pem"),
    )
    p.wait_for_log("tls", "serving")
    p.wait_for_log("mtls", "serving")
    secret = token(p, "tls-team")
    ca = ["--tls-ca", str(pki / "ca.pem")]
    client = ["--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]

    assert (
        p.cli("jobs", "--server", f"127.0.0.1:{tls_port}", "--token", secret, *ca).returncode == 0
    )
    plain = p.cli("--log-level", "ERROR", "jobs", "--server", f"127.0.0.1:{tls_port}", check=False)
    assert plain.returncode == 4  # a plaintext client cannot talk to a TLS server

    with_cert = p.cli("jobs", "--server", f"127.0.0.1:{mtls_port}", "--token", secret, *ca, *client)
    assert with_cert.returncode == 0
    without_cert = p.cli(
        "--log-level",
        "ERROR",
        "jobs",
        "--server",
        f"127.0.0.1:{mtls_port}",
        "--token",
        secret,
        *ca,
        check=False,
    )
    assert without_cert.returncode == 4  # the handshake fails: UNAVAILABLE
