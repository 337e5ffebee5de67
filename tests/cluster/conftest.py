"""A real single-node cluster for tests: real pods, real Jobs, the chart installed by helm.

`scripts/k8s-cluster up` brings the node up (kube-apiserver, controller-manager, scheduler,
containerd + kubelet, kube-proxy, CoreDNS; it builds what is missing, once, into
~/.cache/hourglass), and `scripts/k8s-images` builds the images (hourglass from the
Dockerfile, PostgreSQL, Redis, etcd, busybox) without a registry and imports them into the
node. A cluster that these tests brought up is brought down after them; one that already
ran is left running (and HOURGLASS_KEEP_CLUSTER=1 keeps it up too).

Without root, Go or Debian's packages the suite skips, unless `HOURGLASS_REQUIRE_CLUSTER=1`
(as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "k8s-cluster"
IMAGES = REPO / "scripts" / "k8s-images"
TOOLS = REPO / "scripts" / "k8s-tools"
CHART = REPO / "charts" / "hourglass"
BUSYBOX = "hourglass-busybox:1.36"
BUILD_TIMEOUT = 3600.0
# Where the hostPath volumes of the releases' StatefulSets live (scripts/k8s-cluster's state).
VOLUMES = Path(os.environ.get("HOURGLASS_CLUSTER_DIR", "/var/lib/hourglass-cluster")) / "volumes"


def _required() -> bool:
    return os.environ.get("HOURGLASS_REQUIRE_CLUSTER") == "1"


def _unavailable(message: str) -> None:
    if _required():
        pytest.fail(f"HOURGLASS_REQUIRE_CLUSTER=1 but {message}", pytrace=False)
    pytest.skip(message)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """The running cluster: kubectl and helm against it, as the admin."""

    kubeconfig: Path
    tools: Path
    values: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.tools / tool), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> str:
        return self.run("kubectl", *args, **kwargs).stdout

    def helm(self, *args: str, **kwargs: Any) -> str:
        return self.run("helm", *args, **kwargs).stdout

    def get(self, namespace: str, *what: str) -> dict[str, Any]:
        """`kubectl get ... -o json` as a dict."""
        out = self.kubectl("--namespace", namespace, "get", *what, "-o", "json")
        document: dict[str, Any] = json.loads(out)
        return document

    def show(self, namespace: str, what: str = "pods,jobs", *extra: str) -> str:
        """What the cluster holds, printed into the test's output (pods and Jobs seen)."""
        out = self.kubectl("--namespace", namespace, "get", what, "-o", "wide", *extra)
        print(f"\n$ kubectl -n {namespace} get {what} -o wide {' '.join(extra)}\n{out}")
        return out


def wait_until(
    what: str, condition: Callable[[], Any], timeout: float = 300, every: float = 2
) -> Any:
    """Polls `condition` until it returns something truthy; fails with `what` at the deadline.
    Errors inside the condition count as "not yet" (the cluster is eventually consistent)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (AssertionError, subprocess.SubprocessError, KeyError, ValueError) as error:
            value, last = None, error
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """The cluster for this package's tests; brought down after the last one (not at the end
    of the whole session), so that the rest of the suite does not run beside it."""
    if os.geteuid() != 0:
        _unavailable("the cluster test bed needs root (containerd, kubelet, iptables)")
    already = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0
    for command in (["bash", str(CLUSTER), "up"], ["bash", str(IMAGES)]):
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        print(f"{' '.join(command[1:])}: {time.monotonic() - started:.0f}s")
        if result.returncode != 0:
            _unavailable(f"{' '.join(command[1:])} failed:\n{_tail(result.stderr)}")
    tools = Path(subprocess.check_output(["bash", str(TOOLS), "--print-dir"], text=True).strip())
    kubeconfig = Path(
        subprocess.check_output(["bash", str(CLUSTER), "kubeconfig"], text=True).strip()
    )
    values = yaml.safe_load(subprocess.check_output(["bash", str(IMAGES), "--values"], text=True))
    try:
        yield Cluster(kubeconfig=kubeconfig, tools=tools, values=values)
    finally:
        if not already and os.environ.get("HOURGLASS_KEEP_CLUSTER") != "1":
            subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=300)


@dataclass
class Release:
    """An installed chart: its namespace, names, and an API token for tenant `default`."""

    cluster: Cluster
    name: str
    namespace: str
    token: str = ""
    uninstalled: bool = False

    def component(self, name: str) -> str:
        return f"{self.name}-hourglass-{name}"

    def hourglass(self, *args: str, timeout: float = 60) -> str:
        """The CLI inside the API pod, against the API on its loopback, with the token."""
        return self.cluster.kubectl(
            "--namespace", self.namespace, "exec", f"deploy/{self.component('api')}", "--",
            "env", f"HOURGLASS_TOKEN={self.token}", "hourglass", *args,
            timeout=timeout,
        )  # fmt: skip


def _persistent_volumes(
    cluster: Cluster, release: str, namespace: str, *, etcd_members: int = 1
) -> list[str]:
    """A hostPath PersistentVolume for each claim the chart's StatefulSets make, bound to it
    in advance (the node has no provisioner); written with mode 0777 since hostPath ignores
    fsGroup. Each etcd member (etcd.replicas) claims a volume of its own."""
    names = []
    claims = [("postgresql", 0)] + [("etcd", member) for member in range(etcd_members)]
    for component, ordinal in claims:
        claim = f"data-{release}-hourglass-{component}-{ordinal}"
        name = f"{namespace}-{component}" + (f"-{ordinal}" if ordinal else "")
        path = VOLUMES / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"hourglass.io/test-volume": namespace}},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))
        names.append(name)
    return names


def install_values(cluster: Cluster, **extra: Any) -> str:
    """The chart values of the test bed: the local images, no pulls, small requests."""
    values: dict[str, Any] = {
        **cluster.values,
        "redis": {**cluster.values["redis"], "persistence": {"enabled": False}},
        "worker": {"leaseTTL": 10},
    }
    values.update(extra)
    return yaml.safe_dump(values)


def install(
    cluster: Cluster,
    name: str,
    namespace: str,
    *,
    objects: tuple[dict[str, Any], ...] = (),
    **extra: Any,
) -> Release:
    """`helm install` (the migrate hook runs as a real Job), then waits for every Deployment.
    `objects` are applied in the new namespace first (a Secret that values refer to). The
    chart's CRDs are applied first, as the README says: helm installs a chart's CRDs only when
    they are missing, so a cluster that ran an older chart would keep older ones."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.kubectl("create", "namespace", namespace)
    for manifest in objects:
        cluster.kubectl("--namespace", namespace, "apply", "-f", "-", input=json.dumps(manifest))
    members = int((extra.get("etcd") or {}).get("replicas", 1))
    _persistent_volumes(cluster, name, namespace, etcd_members=members)
    started = time.monotonic()
    cluster.helm(
        "install", name, str(CHART), "--namespace", namespace, "--values", "-",
        "--timeout", "15m",
        input=install_values(cluster, **extra), timeout=1000,
    )  # fmt: skip
    release = Release(cluster=cluster, name=name, namespace=namespace)
    for deployment in ("api", "producer", "worker", "claimer", "operator"):
        cluster.kubectl(
            "--namespace", namespace, "rollout", "status",
            f"deployment/{release.component(deployment)}", "--timeout=600s",
            timeout=620,
        )  # fmt: skip
    print(f"helm install and rollout: {time.monotonic() - started:.0f}s")
    # The CLI's token. The operator needs none: it sends its projected service account token,
    # which the API checks with a TokenReview.
    release.token = cluster.kubectl(
        "--namespace", namespace, "exec", f"deploy/{release.component('api')}", "--",
        "hourglass", "token", "create", "--namespace", "default", "--name", "tests",
    ).strip()  # fmt: skip
    return release


def uninstall(cluster: Cluster, release: Release) -> None:
    if not release.uninstalled:
        cluster.run("helm", "uninstall", release.name, "--namespace", release.namespace,
                    "--wait", "--timeout", "5m", timeout=400, check=False)  # fmt: skip
    cluster.run("kubectl", "delete", "namespace", release.namespace, "--wait=true",
                "--timeout=300s", timeout=320, check=False)  # fmt: skip
    cluster.run("kubectl", "delete", "persistentvolume", "-l",
                f"hourglass.io/test-volume={release.namespace}", check=False)  # fmt: skip
    for volume in VOLUMES.glob(f"{release.namespace}-*"):
        shutil.rmtree(volume, ignore_errors=True)


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """The whole chart installed in a namespace of its own, shared by a module's tests."""
    suffix = secrets.token_hex(3)
    installed = install(cluster, "hg", f"hg-{suffix}")
    try:
        yield installed
    finally:
        cluster.show(installed.namespace, "all")
        uninstall(cluster, installed)
