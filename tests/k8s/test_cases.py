"""The operator's generic reconcile of a case's resource, against a real kube-apiserver with the
real kubectl, and a real hourglass API behind the ScheduledJobs the case owns.

The case is `probe`, defined here and registered for the test (hourglass.cases.NAMES and
sys.modules, as a case package would be). Its CRD comes from operator/crds.py, as the chart's
case CRDs do. No kube-controller-manager runs here: nothing makes Deployments available and no
garbage collector follows ownerReferences, so the test plays the Deployment controller by
patching a Deployment's status, and the operator deletes what a resource owns itself (under its
finalizer), which the test checks along with the ownerReferences.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from hourglass import cases
from hourglass.operator import cases as case_handlers
from hourglass.operator import crds, owned
from tests.k8s import case_helpers
from tests.k8s.case_helpers import Kubectl, condition, get, make_available
from tests.k8s.conftest import KubeApiServer
from tests.k8s.test_operator import HourglassApi, RunningOperator, wait_for

pytest_plugins = ["tests.k8s.test_operator"]

PLURAL = "probes"
PLATFORM = cases.Platform(image="hourglass:test", secret="cases-secret", etcd_endpoints="etcd:2379")


def probe_objects(resource: cases.Resource, platform: cases.Platform) -> list[dict[str, Any]]:
    """A server Deployment and Service, the spec ConfigMap, a rollup ScheduledJob, and an
    `extra` ConfigMap while spec.extra is true."""
    replicas = resource.spec.get("replicas", 1)
    if replicas > 5:
        raise ValueError("spec.replicas: at most 5")
    name = f"probe-{resource.name}"
    labels = {"app": name}
    objects: list[dict[str, Any]] = [
        cases.spec_configmap("probe", resource),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"hourglass.io/spec-hash": cases.spec_hash(resource)},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": platform.image,
                                "args": cases.server_args("probe", resource),
                                "env": cases.server_env(platform),
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"name": "grpc", "port": 50051}]},
        },
        {
            "apiVersion": "hourglass.io/v1",
            "kind": "ScheduledJob",
            "metadata": {"name": f"{name}-rollup"},
            "spec": {
                "schedule": {"every": {"interval": "1h"}},
                "task": {"image": platform.image, "command": ["true"]},
            },
        },
    ]
    if resource.spec.get("extra", False):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-extra"},
                "data": {"extra": "yes"},
            }
        )
    return objects


PROBE = cases.Case(
    name="probe",
    kind="Probe",
    plural=PLURAL,
    short_names=("pr",),
    serve=lambda settings, stop: stop.wait(),
    objects=probe_objects,
    migrations=Path("/nonexistent"),
)


def probe_crd() -> dict[str, Any]:
    spec = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
            "extra": {"type": "boolean"},
        },
    }
    return crds.definition(
        kind="Probe", plural=PLURAL, short_names=["pr"], description="a test case", spec=spec
    )


@pytest.fixture(scope="module")
def probe_crd_installed(kube_apiserver: KubeApiServer, k8s_client: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(k8s_client)
    document = probe_crd()
    try:
        extensions.create_custom_resource_definition(document)
    except client.ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(document["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or ()
        )

    wait_for("the Probe CRD established", established)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """`probe` in the registry, the way a package in cases/ would be."""
    module = types.ModuleType("hourglass.cases.probe")
    module.CASE = PROBE  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hourglass.cases.probe", module)
    monkeypatch.setattr(cases, "NAMES", ("probe",))


@pytest.fixture
def start_case_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    probe_crd_installed: None,
    registered: None,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Path | None], RunningOperator]]:
    """Starts the operator, as `hourglass operator --case-image ...` runs it, for the test's
    namespace, as the admin or with the credentials of `kubeconfig`."""
    started: list[RunningOperator] = []

    def start(kubeconfig: Path | None = None) -> RunningOperator:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig or kube_apiserver.kubeconfig))
        running = case_helpers.start_case_operator(hourglass_api, k8s_namespace, PLATFORM)
        started.append(running)
        return running

    yield start
    for running in started:
        running.shutdown()


@pytest.fixture
def case_operator(start_case_operator: Callable[[Path | None], RunningOperator]) -> RunningOperator:
    return start_case_operator(None)


@pytest.fixture
def kubectl(
    k8s_tool: Callable[[str], Path], kube_apiserver: KubeApiServer, k8s_namespace: str
) -> Kubectl:
    binary = k8s_tool("kubectl")

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(binary), "--kubeconfig", str(kube_apiserver.kubeconfig), "-n", k8s_namespace,
             *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done

    return run


def probe(name: str, **spec: Any) -> str:
    document = {"apiVersion": owned.API_VERSION, "kind": "Probe", "metadata": {"name": name},
                "spec": spec}  # fmt: skip
    return yaml.safe_dump(document)


OWNED = [
    ("deployment", "probe-one"),
    ("service", "probe-one"),
    ("configmap", "probe-one-spec"),
    ("scheduledjob", "probe-one-rollup"),
]


def test_a_resource_becomes_owned_objects_whose_status_follows_them(
    case_operator: RunningOperator,
    kubectl: Kubectl,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    hourglass_api: HourglassApi,
) -> None:
    applied = kubectl("apply", "-f", "-", stdin=probe("one", extra=True))
    assert "probe.hourglass.io/one created" in applied.stdout
    resource = wait_for(
        "the Probe's status",
        lambda: condition(get(kubectl, "pr", "one"), "Ready") and get(kubectl, "pr", "one"),
    )
    uid = resource["metadata"]["uid"]

    for kind, name in [*OWNED, ("configmap", "probe-one-extra")]:
        found = wait_for(f"{kind} {name}", lambda kind=kind, name=name: get(kubectl, kind, name))
        (reference,) = found["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "hourglass.io/v1alpha1", "kind": "Probe", "name": "one", "uid": uid,
            "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert found["metadata"]["labels"][owned.OWNER_LABEL] == uid
        managers = {(m["manager"], m["operation"]) for m in found["metadata"]["managedFields"]}
        assert (owned.FIELD_MANAGER, "Apply") in managers  # server-side apply
    deployment = get(kubectl, "deployment", "probe-one")
    assert deployment is not None
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"][owned.SERVER_LABEL] == "probe"
    assert pod["spec"]["containers"][0]["args"][:3] == ["serve", "probe", "--name"]
    spec = get(kubectl, "configmap", "probe-one-spec")
    assert spec is not None and json.loads(spec["data"]["spec.json"]) == {
        "extra": True,
        "replicas": 1,
    }

    # The case's ScheduledJob is in `kubectl get sj`, and the ScheduledJob handlers scheduled it.
    listed = kubectl("get", "sj")
    assert "probe-one-rollup" in listed.stdout
    wait_for(
        "the rollup job scheduled",
        lambda: get(kubectl, "sj", "probe-one-rollup").get("status", {}).get("jobId"),
    )  # type: ignore[union-attr]

    # No pod is available yet: not Ready, Progressing.
    status = resource["status"]
    assert status["observedGeneration"] == 1
    assert condition(resource, "Ready")["status"] == "False"
    assert condition(resource, "Progressing")["status"] == "True"
    assert condition(resource, "Degraded")["status"] == "False"
    assert status["endpoints"] == [f"grpc=probe-one.{k8s_namespace}.svc:50051"]

    make_available(k8s_client, k8s_namespace, "probe-one", 1)
    ready = wait_for(
        "Ready=True",
        lambda: (
            condition(get(kubectl, "pr", "one"), "Ready").get("status") == "True"
            and get(kubectl, "pr", "one")
        ),
    )
    assert condition(ready, "Ready")["reason"] == "Available"
    assert condition(ready, "Progressing")["status"] == "False"
    assert "True" in kubectl("get", "pr", "one").stdout  # the Ready printer column

    # An update changes the objects, prunes the one no longer returned, and rolls out again.
    kubectl("apply", "-f", "-", stdin=probe("one", replicas=3))

    def updated() -> dict[str, Any] | None:
        found = get(kubectl, "pr", "one")
        return found if found and found["status"].get("observedGeneration") == 2 else None

    resource = wait_for("generation 2 applied", updated)
    assert get(kubectl, "deployment", "probe-one")["spec"]["replicas"] == 3  # type: ignore[index]
    assert get(kubectl, "configmap", "probe-one-extra") is None
    assert condition(resource, "Ready")["status"] == "False"  # 3 wanted, none rolled out yet
    assert condition(resource, "Progressing")["status"] == "True"
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=one").stdout
    assert "Applied" in events

    # Deleting the resource deletes everything it owns, the ScheduledJob's job included.
    job_id = get(kubectl, "sj", "probe-one-rollup")["status"]["jobId"]  # type: ignore[index]
    kubectl("delete", "pr", "one", "--wait=true", "--timeout=30s")
    for kind, name in OWNED:
        wait_for(
            f"{kind} {name} gone", lambda kind=kind, name=name: get(kubectl, kind, name) is None
        )
    assert job_id not in {job.id for job in hourglass_api.jobs()}


def test_a_spec_the_case_refuses_is_degraded_and_applies_nothing(
    case_operator: RunningOperator, kubectl: Kubectl
) -> None:
    kubectl("apply", "-f", "-", stdin=probe("bad", replicas=7))

    def degraded() -> dict[str, Any] | None:
        found = condition(get(kubectl, "pr", "bad"), "Degraded")
        return found if found.get("status") == "True" else None

    found = wait_for("Degraded=True", degraded)
    assert found["reason"] == "InvalidSpec"
    assert "spec.replicas: at most 5" in found["message"]
    assert get(kubectl, "deployment", "probe-bad") is None
    # The CRD's schema refuses on its own what it can judge, naming the field.
    refused = kubectl("apply", "-f", "-", stdin=probe("worse", replicas=0), check=False)
    assert refused.returncode != 0
    assert "spec.replicas" in refused.stderr
    # Fixing the spec applies it.
    kubectl("apply", "-f", "-", stdin=probe("bad", replicas=2))
    wait_for("the Deployment", lambda: get(kubectl, "deployment", "probe-bad"))
    wait_for(
        "Degraded=False",
        lambda: condition(get(kubectl, "pr", "bad"), "Degraded").get("status") == "False",
    )


def test_pruning_leaves_another_resources_objects_alone(
    case_operator: RunningOperator, kubectl: Kubectl
) -> None:
    kubectl("apply", "-f", "-", stdin=probe("left", extra=True))
    kubectl("apply", "-f", "-", stdin=probe("right", extra=True))
    wait_for("right's extra", lambda: get(kubectl, "configmap", "probe-right-extra"))
    wait_for("left's extra", lambda: get(kubectl, "configmap", "probe-left-extra"))
    kubectl("apply", "-f", "-", stdin=probe("left"))
    wait_for("left's extra pruned", lambda: get(kubectl, "configmap", "probe-left-extra") is None)
    assert get(kubectl, "configmap", "probe-right-extra") is not None
    kubectl("delete", "pr", "left", "--wait=true", "--timeout=30s")
    assert get(kubectl, "deployment", "probe-right") is not None


class _Heard(logging.Handler):
    """Sets `event` when a record's message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_resource_deleted_while_its_status_refresh_is_in_flight_goes_once_it_returns(
    start_case_operator: Callable[[Path | None], RunningOperator],
    kubectl: Kubectl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf keeps the finalizer until the resource's timers exit; a refresh caught mid-call
    used to be looked at again only after a minute (kubectl delete --timeout=30s failed)."""
    armed, inside, release = threading.Event(), threading.Event(), threading.Event()
    items = case_handlers.Kube.items

    async def held_items(self: case_handlers.Kube, kind: Any, *args: Any) -> Any:
        if kind.kind == "Deployment" and armed.is_set():
            armed.clear()
            inside.set()
            await asyncio.to_thread(release.wait, 60)
        return await items(self, kind, *args)

    monkeypatch.setattr(case_handlers.Kube, "items", held_items)
    objects = logging.getLogger("kopf.objects")
    heard = _Heard("is still exiting")
    objects.addHandler(heard)
    level = objects.level
    objects.setLevel(logging.DEBUG)  # (setLevel, not the attribute: it clears the level cache)
    try:
        start_case_operator(None)
        kubectl("apply", "-f", "-", stdin=probe("slow"))
        wait_for(
            "generation 1 applied",
            lambda: (get(kubectl, "pr", "slow") or {}).get("status", {}).get("observedGeneration"),
        )
        armed.set()  # the next Deployment listing is the refresh timer's
        assert inside.wait(30), "the refresh timer did not run"
        kubectl("delete", "pr", "slow", "--wait=false")
        assert heard.event.wait(30), "kopf did not find the refresh timer still running"
        release.set()
        wait_for("the Probe gone", lambda: get(kubectl, "pr", "slow") is None, timeout=20)
    finally:
        release.set()
        objects.removeHandler(heard)
        objects.setLevel(level)
