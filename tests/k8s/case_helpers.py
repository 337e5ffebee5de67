"""What the tests of cases on Kubernetes share: kubectl's answers read as JSON, the operator
started as `hourglass operator --case-image ... --case-secret ...` runs it (in a thread), and
a Kubelet stand-in for a test bed where no kubelet runs (tests/k8s/conftest.py).

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
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hourglass import cases
from hourglass.embedded import free_port
from hourglass.operator import main
from tests.acceptance.conftest import HOURGLASS
from tests.k8s.test_operator import HourglassApi, RunningOperator

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
