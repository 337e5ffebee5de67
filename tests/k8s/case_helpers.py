"""What the tests of cases on Kubernetes share: kubectl's answers read as JSON, the operator
started as `hourglass operator --case-image ... --case-secret ...` runs it (in a thread), and
a Kubelet stand-in for a test bed where no kubelet runs (tests/k8s/conftest.py).

`Example` names a case's example resource and what the operator makes of it; `apply_example`,
`run_pods`, `wait_ready` and `delete_example` are the steps every case's test takes with it,
and the `case_operator` fixture (with `redis_server`) starts the operator for the module's
`CASE`. A case's test module lists this module in its `pytest_plugins` and keeps only what
its case serves.

The Kubelet runs one container of a Deployment the way a kubelet would, on this machine: its
command (the hourglass image's entry point `hourglass` unless the container names another),
its args, its env with secretKeyRefs resolved from the Secret, its ConfigMap and Secret
volumes as files, and each containerPort on a free local port (`0.0.0.0:P` in the args, or a
bare `P` after `--port`, becomes the local one; `--bind 0.0.0.0` binds loopback). Its
readiness probe is the container's own: httpGet, grpc (the standard health service) or
tcpSocket.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from hourglass import cases
from hourglass.embedded import EmbeddedEtcd, EmbeddedRedis, free_port
from hourglass.operator import main, owned
from tests.acceptance.conftest import HOURGLASS
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def get(kubectl: Kubectl, kind: str, name: str) -> dict[str, Any] | None:
    done = kubectl("get", kind, name, "-o", "json", "--show-managed-fields", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def b64(text: str) -> str:
    return base64.b64decode(text).decode()


def condition(resource: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in (resource or {}).get("status", {}).get("conditions") or ():
        if item["type"] == kind:
            return dict(item)
    return {}


def make_available(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    """Plays the Deployment controller: the rollout is done and every replica available."""
    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment(name, namespace)
    status = {
        "observedGeneration": deployment.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    apps.patch_namespaced_deployment_status(name, namespace, {"status": status})


REPO = Path(__file__).resolve().parents[2]
SECRET = "hourglass-cases"
PLATFORM = cases.Platform(image="hourglass:test", secret=SECRET, etcd_endpoints="etcd:2379")


@dataclass(frozen=True)
class Example:
    """A case's example resource, `examples/<file>`, and the objects the operator makes of
    it (kind and name, as kubectl names them)."""

    file: str
    kind: str  # Leaderboard
    short: str  # lb, kubectl's short name
    name: str  # games, the example's metadata.name
    owned: tuple[tuple[str, str], ...]
    # The case's servers take ids under etcd leases: the operator names a real etcd.
    etcd: bool = False

    @property
    def path(self) -> Path:
        return REPO / "examples" / self.file

    @property
    def crd(self) -> str:
        return f"{self.kind.lower()}s.hourglass.io"

    @property
    def scheduled_jobs(self) -> list[str]:
        return [name for kind, name in self.owned if kind == "scheduledjob"]

    def get(self, kubectl: Kubectl) -> dict[str, Any] | None:
        return get(kubectl, self.short, self.name)


def platform_secret(kubectl: Kubectl, values: dict[str, str]) -> None:
    """The platform Secret as the chart makes it (charts/hourglass: the cases' Secret)."""
    literals = [f"--from-literal={key}={value}" for key, value in values.items()]
    kubectl("create", "secret", "generic", SECRET, *literals)


def apply_example(
    kubectl: Kubectl, example: Example, api: HourglassApi
) -> tuple[dict[str, Any], set[str]]:
    """`kubectl apply -f` the example; waits for its status and for every object it owns,
    checks each is owned by it (ownerReference and label), and returns the resource and
    the hourglass job ids of its ScheduledJobs, which are scheduled in hourglass."""
    applied = kubectl("apply", "-f", str(example.path))
    assert f"{example.kind.lower()}.hourglass.io/{example.name} created" in applied.stdout
    resource = wait_for(
        f"the {example.kind}'s status",
        lambda: condition(example.get(kubectl), "Ready") and example.get(kubectl),
    )
    uid = resource["metadata"]["uid"]
    for kind, name in example.owned:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": owned.API_VERSION, "kind": example.kind, "name": example.name,
            "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
    job_ids = {
        wait_for(
            f"{name} scheduled",
            lambda name=name: (get(kubectl, "sj", name) or {}).get("status", {}).get("jobId"),
        )
        for name in example.scheduled_jobs
    }
    assert job_ids <= {job.id for job in api.jobs()}
    assert condition(resource, "Ready")["status"] == "False"  # nothing runs the pods yet
    return resource, job_ids


def run_pods(
    kubectl: Kubectl,
    api: client.ApiClient,
    namespace: str,
    deployments: list[str],
    folder: Path,
) -> dict[str, Kubelet]:
    """Plays the kubelet and the Deployment controller for `deployments`, in order (the
    first server of a resource applies its migrations): runs each one's container, waits
    for its readiness probe, then marks its replicas available. The caller stops them."""
    kubelets: dict[str, Kubelet] = {}
    try:
        for name in deployments:
            deployment = get(kubectl, "deployment", name)
            assert deployment is not None
            kubelets[name] = kubelet = Kubelet(kubectl, deployment, folder / name)
            wait_for(f"{name}'s readiness probe", kubelet.ready, timeout=90)
            make_available(api, namespace, name, deployment["spec"]["replicas"])
    except BaseException:
        for kubelet in kubelets.values():
            kubelet.stop()
        raise
    return kubelets


def wait_ready(kubectl: Kubectl, example: Example) -> dict[str, Any]:
    """The resource once it is Ready because its Deployments are available."""
    ready = wait_for(
        "Ready=True",
        lambda: (
            condition(example.get(kubectl), "Ready").get("status") == "True"
            and example.get(kubectl)
        ),
    )
    assert condition(ready, "Ready")["reason"] == "Available"
    return ready


def delete_example(
    kubectl: Kubectl, example: Example, api: HourglassApi, job_ids: set[str]
) -> None:
    """`kubectl delete -f` the example: everything it owned goes, its hourglass jobs too.

    With no garbage collector here, removal is the operator's own, under its finalizer. A
    ScheduledJob's finalizer first deletes its hourglass job: one DeleteJob may time out
    (10 s) on a busy machine and be retried 5 s later."""
    kubectl("delete", "-f", str(example.path), "--wait=true", "--timeout=30s")
    for kind, name in example.owned:
        wait_for(
            f"{kind} {name} gone",
            lambda kind=kind, name=name: get(kubectl, kind, name) is None,
            timeout=60,
        )
    assert example.get(kubectl) is None
    assert not job_ids & {job.id for job in api.jobs()}


@pytest.fixture
def case_operator(
    request: pytest.FixtureRequest,
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningOperator]:
    """The operator as `hourglass operator --case-image ... --case-secret ...` runs it, for
    the test module's `CASE` (an Example), with the real case registry."""
    example: Example = request.module.CASE
    assert example.crd in crds  # the chart's generated CRD file
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    platform = PLATFORM
    if example.etcd:
        etcd: EmbeddedEtcd = request.getfixturevalue("etcd_server")
        platform = dataclasses.replace(PLATFORM, etcd_endpoints=etcd.endpoint)
    running = start_case_operator(hourglass_api, k8s_namespace, platform, name=example.short)
    yield running
    running.shutdown()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def start_case_operator(
    api: HourglassApi, namespace: str, platform: cases.Platform, *, name: str = "case-operator"
) -> RunningOperator:
    """The operator for `namespace`, with the cases' platform, until its `shutdown`. The
    caller points KUBECONFIG at the credentials it should use."""
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            main.run(
                api.address,
                [namespace],
                None,
                token=api.token,
                refresh_interval=0.5,
                platform=platform,
                stop=stop,
                ready=ready,
            )
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    running = RunningOperator(thread, stop, ready, errors)
    thread.start()
    assert ready.wait(30), f"the operator did not start: {errors!r}"
    return running


class Kubelet:
    """One container of `deployment`, running here (see the module's docstring)."""

    def __init__(self, kubectl: Kubectl, deployment: dict[str, Any], folder: Path) -> None:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        self.ports = {p["name"]: free_port() for p in container["ports"]}
        self.by_number = {p["containerPort"]: self.ports[p["name"]] for p in container["ports"]}
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        for entry in container.get("env", ()):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                secret = get(kubectl, "secret", ref["name"])
                assert secret is not None, f"no Secret {ref['name']}"
                if ref["key"] in secret["data"] or not ref.get("optional"):
                    env[entry["name"]] = b64(secret["data"][ref["key"]])
        mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            local = folder / mount["name"]
            local.mkdir(parents=True)
            if "configMap" in volume:
                config = get(kubectl, "configmap", volume["configMap"]["name"])
                assert config is not None
                for key, text in config["data"].items():
                    (local / key).write_text(text)
            if "secret" in volume:
                secret = get(kubectl, "secret", volume["secret"]["secretName"])
                assert secret is not None
                for item in volume["secret"]["items"]:
                    (local / item["path"]).write_text(b64(secret["data"][item["key"]]))
            mounts[mount["mountPath"]] = local
        args: list[str] = []
        for arg in container["args"]:
            for path, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
                if arg.startswith(path + "/"):
                    arg = str(local) + arg[len(path) :]
                    break
            host, _, port = arg.rpartition(":")
            if host == "0.0.0.0" and int(port) in self.by_number:
                arg = f"127.0.0.1:{self.by_number[int(port)]}"
            elif args[-1:] == ["--port"] and arg.isdigit() and int(arg) in self.by_number:
                arg = str(self.by_number[int(arg)])
            elif args[-1:] == ["--bind"] and arg == "0.0.0.0":
                arg = "127.0.0.1"
            args.append(arg)
        self.args = args
        command = container.get("command") or []
        launcher = [sys.executable, *command[1:]] if command[:1] == ["python"] else HOURGLASS
        self.probe = container["readinessProbe"]
        self.log = folder / "server.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*launcher, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def port(self, named: str | int) -> int:
        return self.ports[named] if isinstance(named, str) else self.by_number[named]

    def ready(self) -> bool:
        """The readiness probe, as the kubelet would run it."""
        assert self.process.poll() is None, self.log.read_text(errors="replace")
        if "httpGet" in self.probe:
            check = self.probe["httpGet"]
            url = f"http://127.0.0.1:{self.port(check['port'])}{check['path']}"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return bool(answer.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        if "grpc" in self.probe:
            check = self.probe["grpc"]
            with grpc.insecure_channel(f"127.0.0.1:{self.port(check['port'])}") as channel:
                request = health_pb2.HealthCheckRequest(service=check.get("service", ""))
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=2)
                except grpc.RpcError:
                    return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port(self.probe["tcpSocket"]["port"])), timeout=2
            ):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
