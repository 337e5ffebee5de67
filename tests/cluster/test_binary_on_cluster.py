"""An uploaded binary run in-cluster, on a release of its own: the CLI, on a laptop's side of
`kubectl port-forward` with a token, uploads and schedules a program (`schedule --binary`); a
worker pod's Job runs it in a real pod whose init container fetches it and verifies its digest,
then the main container runs it and its output flows back to the API.

The artifact store is a real S3 server (MinIO, `scripts/s3-server`) on the node's address, as
an S3 service outside the cluster would be. The api, worker and claimer get its credentials from
a Secret (`extraEnv`); the job pod gets none: its init container fetches through a URL the
worker signed for that one object (hourglass/artifact_urls.py), read from the attempt's Secret,
which the worker deletes once the outcome is reported. A binary whose stored bytes no longer
match its digest is refused by the init container and never runs.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import S3Store

from tests.cluster.conftest import Cluster, Release, install, uninstall, wait_until
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_server_on

pytestmark = pytest.mark.timeout(1800)

HOURGLASS = Path(sys.executable).with_name("hourglass")
RUN_LABEL = "hourglass.io/run"
CREDENTIALS = "artifact-store"
FINISHED = ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_TIMED_OUT")


@pytest.fixture(scope="module")
def s3(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """MinIO on the node's address, which the pods reach through the node's bridge."""
    address = "{.items[0].status.addresses[?(@.type=='InternalIP')].address}"
    node = cluster.kubectl("get", "nodes", "-o", f"jsonpath={address}").strip()
    with s3_server_on(tmp_path_factory.mktemp("s3"), host=node) as server:
        yield server


@pytest.fixture(scope="module")
def release(cluster: Cluster, s3: S3Server) -> Iterator[Release]:
    namespace = f"hg-bin-{secrets.token_hex(3)}"
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    credentials = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS},
        "type": "Opaque",
        "stringData": dict(zip(keys, (ACCESS_KEY, SECRET_KEY), strict=True)),
    }
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS, "key": key}}}
        for key in keys
    ]
    url = f"s3://{s3.bucket}/{namespace}?endpoint={s3.endpoint}&region={REGION}"
    print(f"artifacts.url: {url}")
    installed = install(
        cluster, "hg", namespace, objects=(credentials,), artifacts={"url": url},
        api={"extraEnv": env}, worker={"leaseTTL": 10, "extraEnv": env},
        claimer={"extraEnv": env},
    )  # fmt: skip
    try:
        yield installed
    finally:
        cluster.show(installed.namespace, "all")
        uninstall(cluster, installed)


@contextmanager
def _forwarded_cli(cluster: Cluster, release: Release) -> Iterator[Callable[..., str]]:
    """This checkout's CLI against the API through `kubectl port-forward`, with the token."""
    forward = subprocess.Popen(
        [str(cluster.tools / "kubectl"), "--namespace", release.namespace, "port-forward",
         f"service/{release.component('api')}", ":50051"],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 50051
        print(line.strip())
        port = int(line.split("127.0.0.1:")[1].split()[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HOURGLASS_"))}
        env |= {"HOURGLASS_SERVER": f"127.0.0.1:{port}", "HOURGLASS_TOKEN": release.token}

        def cli(*args: str) -> str:
            result = subprocess.run(
                [str(HOURGLASS), *args], env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        yield cli
    finally:
        forward.terminate()
        forward.wait(10)


def _finished_run(cli: Callable[..., str], job_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        runs = json.loads(cli("status", job_id, "-o", "json")).get("recentRuns") or []
        return runs[0] if runs and runs[0]["state"] in FINISHED else None

    return check


def _pod_of_run(cluster: Cluster, release: Release, run_id: str) -> dict[str, Any]:
    (pod,) = cluster.get(release.namespace, "pods", "-l", f"{RUN_LABEL}={run_id}")["items"]
    return pod


def _program(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_a_binary_scheduled_through_port_forward_runs_in_a_pod_without_store_credentials(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    ns = release.namespace
    tool = _program(tmp_path, "greet", 'echo "uploaded binary says: $*"')
    with _forwarded_cli(cluster, release) as cli:
        digest = cli("upload", str(tool)).split()[0]
        job_id = cli("schedule", "--after", "1s", "--binary", str(tool), "--name", "greet",
                     "--", "one", "two").strip()  # fmt: skip
        run = wait_until("the binary's run to finish", _finished_run(cli, job_id), timeout=240)
        print(cli("status", job_id))
    cluster.show(ns, "pods,jobs", "-l", f"{RUN_LABEL}={run['id']}")
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    assert run["attempts"][-1]["stdoutTail"].strip() == "uploaded binary says: one two"

    pod = _pod_of_run(cluster, release, run["id"])
    name = pod["metadata"]["name"]
    fetched = cluster.kubectl("--namespace", ns, "logs", name, "-c", "fetch")
    print(f"$ kubectl logs {name} -c fetch\n{fetched}")
    assert fetched.strip() == f"{digest} verified and written to /hourglass/bin/task"
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    # No credential in the pod: the init container's one variable is a reference to the
    # attempt's Secret; the task's container has none of it, nor anything of the store.
    spec = json.dumps(pod["spec"])
    assert SECRET_KEY not in spec and ACCESS_KEY not in spec and "s3://" not in spec
    (fetch,) = pod["spec"]["initContainers"]
    assert [var["name"] for var in fetch["env"]] == ["HOURGLASS_BINARY_URL"]
    (task,) = pod["spec"]["containers"]
    assert not [var for var in task["env"] if "valueFrom" in var or "AWS" in var["name"]]
    # The signed URL goes with the attempt: its Secret is deleted once the outcome is in.
    secret = pod["spec"]["initContainers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    wait_until(
        f"the attempt's Secret {secret} to be deleted",
        lambda: secret not in cluster.kubectl("--namespace", ns, "get", "secrets", "-o", "name"),
        timeout=60,
    )


def test_a_binary_whose_stored_bytes_changed_is_refused_by_the_init_container(
    cluster: Cluster, release: Release, s3: S3Server, tmp_path: Path
) -> None:
    ns = release.namespace
    tool = _program(tmp_path, "tampered", "echo this must never run")
    with _forwarded_cli(cluster, release) as cli:
        digest = cli("upload", str(tool)).split()[0]
        # Someone with write access to the bucket replaces the bytes under that name.
        store = S3Store(
            s3.bucket,
            config={"endpoint": s3.endpoint, "region": REGION, "access_key_id": ACCESS_KEY,
                    "secret_access_key": SECRET_KEY},
            client_options={"allow_http": True},
        )  # fmt: skip
        key = f"{ns}/sha256/{digest.split(':')[1]}"
        obstore.put(store, key, b"#!/bin/sh\necho evil\n")
        # The same file again: already stored under its digest, so not uploaded again.
        job_id = cli("schedule", "--after", "1s", "--binary", str(tool), "--max-attempts", "1",
                     "--name", "tampered").strip()  # fmt: skip
        run = wait_until("the tampered run to finish", _finished_run(cli, job_id), timeout=240)
        print(cli("status", job_id))
    cluster.show(ns, "pods,jobs", "-l", f"{RUN_LABEL}={run['id']}")
    assert run["state"] == "RUN_STATE_FAILED", run
    assert "init container fetch exited 1" in run["attempts"][-1]["error"], run
    assert "evil" not in json.dumps(run) and "never run" not in json.dumps(run)
    pod = _pod_of_run(cluster, release, run["id"])
    name = pod["metadata"]["name"]
    fetched = cluster.kubectl("--namespace", ns, "logs", name, "-c", "fetch")
    print(f"$ kubectl logs {name} -c fetch\n{fetched}")
    assert f"artifact {digest} is corrupt" in fetched
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 1
    (task,) = pod["status"]["containerStatuses"]
    assert "terminated" not in task["state"] or task["state"]["terminated"]["exitCode"] != 0
