"""The Helm chart (charts/hourglass): it lints, it renders manifests that a real API server's
schemas accept, it installs against a real kube-apiserver, and its values schema refuses bad
values.

Where kubeconform gets its schemas offline: kubeconform downloads JSON schemas from GitHub by
default, which these tests must not need. Instead the `kubeconform_schemas` fixture builds
them from the test API server itself, in kubeconform's own folder layout:

- It reads the server's OpenAPI v2 document (`GET /openapi/v2`, the admin token) and writes,
  for every definition that carries `x-kubernetes-group-version-kind`, a standalone JSON
  schema `<dir>/v<version>-standalone-strict/<kind>-<group>-<version>.json`: the definition
  as `$ref`, plus every definition it reaches (so recursive types such as JSONSchemaProps
  stay finite). This is what the `openapi2jsonschema` script does for kubeconform's published
  schemas, done here in a few lines of Python.
- "Strict" is made true to its name: each object schema that lists `properties` gets
  `additionalProperties: false`, so an unknown or misspelled field fails. The two types the
  OpenAPI document describes as strings but which accept numbers too (`int-or-string`,
  `Quantity`) accept both.
- The chart's CRDs (charts/hourglass/crds/, if any) are converted too: each served version's
  `openAPIV3Schema` (strict the same way, except under `x-kubernetes-preserve-unknown-fields`;
  `metadata` is the server's ObjectMeta), so custom resources are validated as well instead of
  skipped, and the CRD objects themselves validate as CustomResourceDefinitions.

kubeconform then runs with `-strict -kubernetes-version <the server's version>
-schema-location <dir>` (a local folder: kubeconform appends its standard
`{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{
.KindSuffix }}.json` template), and nothing is skipped.

The install test plays the Job controller, since none runs: the migration hook Job must
complete before `helm install` goes on, so a background thread marks every Job in the
release's namespace Complete the way the controller would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from hourglass.domain import FencingToken, JobId, RunId, Task
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from scripts import chart_check
from tests.k8s.conftest import REPO, KubeApiServer, finish_job
from tests.k8s.netpol import Endpoint, allowed

CHART = REPO / "charts" / "hourglass"
HELM_TIMEOUT = "2m"

# Bundled PostgreSQL and etcd off, everything external, and every optional branch taken.
EXTERNAL_VALUES = [
    "--set", "postgresql.enabled=false",
    "--set", "database.url=postgresql://hourglass:secret@db.example.com:5432/hourglass",
    "--set", "etcd.enabled=false",
    "--set", r"etcd.endpoints=etcd-0.example.com:2379\,etcd-1.example.com:2379",
    "--set", "redis.enabled=false",
    "--set", "redis.url=redis://:secret@redis.example.com:6379/0",
    "--set", "artifacts.url=s3://hourglass/binaries?endpoint=http://minio.example.com:9000",
    "--set", "worker.jobNamespaces={jobs-a,jobs-b}",
    "--set", "operator.watchNamespaces={team-a,team-b}",
    "--set", "imagePullSecrets[0].name=registry",
    "--set", "api.service.type=LoadBalancer",
    "--set", "postgresql.persistence.storageClass=fast",
    "--set", "operator.rbac.kopfScanning=true",
    "--set", "api.insecure=true",
    "--set", "jobs.podSecurity.createNamespaces=true",
    "--set", "networkPolicy.apiClientCIDRs={203.0.113.0/24}",
]  # fmt: skip
EXISTING_SECRET_VALUES = [
    "--set", "postgresql.enabled=false",
    "--set", "database.existingSecret=my-database",
    "--set", "database.existingSecretKey=dsn",
    "--set", "etcd.enabled=false",
    "--set", "etcd.endpoints=etcd.example.com:2379",
    "--set", "operator.enabled=false",
    "--set", "migrations.enabled=false",
    "--set", "etcd.persistence.storageClass=fast",
    "--set", "postgresql.persistence.storageClass=fast",
]  # fmt: skip


# --- helpers -------------------------------------------------------------------------------


def _run(args: list[str | Path], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _is_hook(document: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (document["metadata"].get("annotations") or {})


def _is_uninstall_hook(document: dict[str, Any]) -> bool:
    """pre-delete and post-delete hooks (operator-cleanup.yaml): install does not run them."""
    return "delete" in (document["metadata"].get("annotations") or {}).get("helm.sh/hook", "")


@pytest.fixture(scope="module")
def helm(k8s_tool: Callable[[str], Path]) -> Path:
    return k8s_tool("helm")


@pytest.fixture(scope="module")
def kubeconform(k8s_tool: Callable[[str], Path]) -> Path:
    return k8s_tool("kubeconform")


@pytest.fixture(scope="module")
def kube_version(kube_apiserver: KubeApiServer) -> str:
    """The API server's version without the `v` (1.36.3), for --kube-version and kubeconform."""
    status, body = kube_apiserver.get("/version")
    assert status == 200, body
    return str(json.loads(body)["gitVersion"]).removeprefix("v").split("+")[0]


@pytest.fixture(scope="module")
def template(helm: Path, kube_version: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`helm template` of the chart for the server's Kubernetes version (the chart also
    renders without one: test_chart_production.py)."""

    def render(
        *values: str, release: str = "hg", namespace: str = "hourglass", crds: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args: list[str | Path] = [
            helm, "template", release, CHART, "--namespace", namespace,
            "--kube-version", kube_version, *values,
        ]  # fmt: skip
        if crds:
            args.append("--include-crds")
        return _run(args)

    return render


# --- schemas for kubeconform, from the test API server -------------------------------------
# The conversion is scripts/chart_check.py's (`make chart-check`), applied here to the
# session's API server.


@pytest.fixture(scope="module")
def kubeconform_schemas(
    kube_apiserver: KubeApiServer, kube_version: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A folder in kubeconform's layout with strict schemas of every kind the test API server
    serves (and of the chart's CRDs); see the module docstring."""
    status, body = kube_apiserver.get("/openapi/v2")
    assert status == 200, body[:500]
    root = tmp_path_factory.mktemp("kubeconform-schemas")
    folder = root / f"v{kube_version}-standalone-strict"
    chart_check.write_cluster_schemas(json.loads(body), folder)
    chart_check.write_crd_schemas(chart_check.chart_crds(), folder)
    return root


@pytest.fixture(scope="module")
def validate(
    kubeconform: Path, kubeconform_schemas: Path, kube_version: str, tmp_path_factory: Any
) -> Callable[[str], dict[str, Any]]:
    """kubeconform -strict over a YAML stream; its JSON report."""
    folder = tmp_path_factory.mktemp("manifests")

    def run(manifests: str) -> dict[str, Any]:
        path = folder / f"{uuid.uuid4().hex}.yaml"
        path.write_text(manifests)
        result = _run(
            [
                kubeconform, "-strict", "-summary", "-output", "json",
                "-kubernetes-version", kube_version,
                "-schema-location", kubeconform_schemas,
                path,
            ]
        )  # fmt: skip
        report: dict[str, Any] = json.loads(result.stdout)
        report["returncode"] = result.returncode
        report["stderr"] = result.stderr
        return report

    return run


# --- a) lint -------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize(
    "values", [[], EXTERNAL_VALUES, EXISTING_SECRET_VALUES], ids=["default", "external", "secret"]
)
def test_helm_lint_passes(helm: Path, strict: bool, values: list[str]) -> None:
    result = _run([helm, "lint", CHART, *(["--strict"] if strict else []), *values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


# --- b) kubeconform ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [[], EXTERNAL_VALUES, EXISTING_SECRET_VALUES], ids=["default", "external", "secret"]
)
def test_rendered_manifests_validate_strictly_against_the_servers_schemas(
    template: Callable[..., subprocess.CompletedProcess[str]],
    validate: Callable[[str], dict[str, Any]],
    values: list[str],
) -> None:
    rendered = template(*values, crds=True)
    assert rendered.returncode == 0, rendered.stderr
    documents = _documents(rendered.stdout)
    report = validate(rendered.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert report["returncode"] == 0 and not problems, json.dumps(report, indent=2)
    assert report["summary"] == {
        "valid": len(documents),
        "invalid": 0,
        "errors": 0,
        "skipped": 0,
    }


def test_the_example_scheduledjob_validates_against_the_converted_crd_schema(
    validate: Callable[[str], dict[str, Any]],
) -> None:
    """The CRD's openAPIV3Schema, converted for kubeconform, accepts the example and refuses
    a misspelled field, so custom resources are validated, not skipped."""
    example = REPO / "examples" / "scheduledjob.yaml"
    if not chart_check.chart_crds() or not example.is_file():
        pytest.skip("no ScheduledJob CRD in charts/hourglass/crds or no examples/scheduledjob.yaml")
    report = validate(example.read_text())
    assert report["summary"]["valid"] >= 1 and report["returncode"] == 0, report
    documents = _documents(example.read_text())
    documents[0]["spec"]["maxAtempts"] = 3
    report = validate(yaml.safe_dump_all(documents))
    assert report["summary"]["invalid"] == 1, report
    assert "maxAtempts" in json.dumps(report)


def test_the_generated_schemas_are_strict(validate: Callable[[str], dict[str, Any]]) -> None:
    """A misspelled field is refused, so a passing chart really has only known fields."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Never"}]},
            },
        },
    }
    assert validate(yaml.safe_dump(deployment))["summary"]["valid"] == 1
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Never"
    report = validate(yaml.safe_dump(deployment))
    assert report["summary"]["invalid"] == 1, report
    assert "imagePulPolicy" in json.dumps(report)


def test_the_chart_renders_what_the_brief_asks_for(
    template: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """Spot checks of the default render: components, flags, probes, security, hooks."""
    rendered = template()
    assert rendered.returncode == 0, rendered.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(rendered.stdout)}
    deployments = {name: d for (kind, name), d in objects.items() if kind == "Deployment"}
    assert set(deployments) == {
        f"hg-hourglass-{c}" for c in ("api", "producer", "worker", "claimer", "operator", "console")
    }
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["image"] == "hourglass:0.1.0"
            assert container["resources"]["requests"]
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
    api = deployments["hg-hourglass-api"]["spec"]["template"]["spec"]
    assert api["containers"][0]["livenessProbe"]["grpc"] == {"port": 50051}
    assert api["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Its Kubernetes identity may only create TokenReviews (for the operator's token).
    assert api["automountServiceAccountToken"] is True
    worker = deployments["hg-hourglass-worker"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"][:5] == [
        "worker", "--executor", "kubernetes", "--job-namespace", "hourglass",
    ]  # fmt: skip
    operator = deployments["hg-hourglass-operator"]["spec"]["template"]["spec"]
    assert operator["containers"][0]["args"] == [
        "operator", "--server", "hg-hourglass-api.hourglass.svc:50051",
        "--lease", "hg-hourglass-operator",  # the release's own, as is the hook that deletes it
    ]  # fmt: skip
    lease_hook = objects[("Job", "hg-hourglass-operator-cleanup-lease")]["spec"]["template"]
    lease_args = lease_hook["spec"]["containers"][0]["args"]
    assert lease_args[lease_args.index("--lease") + 1] == "hg-hourglass-operator"
    env = {e["name"] for e in operator["containers"][0]["env"]}
    assert "HOURGLASS_DATABASE_URL" not in env  # the operator only talks to the API
    for name in ("postgresql", "etcd"):
        statefulset = objects[("StatefulSet", f"hg-hourglass-{name}")]
        assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    migrate = objects[("Job", "hg-hourglass-migrate")]
    annotations = migrate["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"  # bundled PostgreSQL
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert migrate["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]

    external = template(*EXTERNAL_VALUES)
    assert external.returncode == 0, external.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(external.stdout)}
    assert not [k for k in objects if k[0] == "StatefulSet"]
    hook = objects[("Job", "hg-hourglass-migrate")]["metadata"]["annotations"]["helm.sh/hook"]
    assert hook == "pre-install,pre-upgrade"
    roles = sorted(
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in _documents(external.stdout)
        if d["kind"] == "Role"
    )
    assert roles == [
        ("hourglass", "hg-hourglass-operator-cleanup-lease"),  # the uninstall hooks'
        ("hourglass", "hg-hourglass-operator-leader"),
        ("jobs-a", "hg-hourglass-worker"),
        ("jobs-b", "hg-hourglass-worker"),
        ("team-a", "hg-hourglass-operator"),
        ("team-a", "hg-hourglass-operator-cleanup"),
        ("team-b", "hg-hourglass-operator"),
        ("team-b", "hg-hourglass-operator-cleanup"),
    ]
    cluster_roles = sorted(name for kind, name in objects if kind == "ClusterRole")
    assert cluster_roles == ["hourglass-hg-hourglass-operator-kopf"]


# --- c) install against the test API server ------------------------------------------------


class JobController:
    """Marks every Job of a namespace Complete, as the Job controller would once its pod
    succeeded (the server demands SuccessCriteriaMet before Complete, and the times)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.completed: list[str] = []
        self.errors: list[str] = []
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-controller", daemon=True)

    def __enter__(self) -> JobController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for job in self.batch.list_namespaced_job(self.namespace).items:
                    conditions = {c.type for c in (job.status.conditions or [])}
                    if "Complete" not in conditions and job.metadata.uid not in self._done:
                        self._complete(job.metadata.name)
                        self._done.add(job.metadata.uid)
            except client.ApiException as error:
                self.errors.append(f"{error.status}: {error.body}")

    def _complete(self, name: str) -> None:
        finish_job(self.batch.api_client, self.namespace, name)
        self.completed.append(name)


@pytest.fixture
def release(
    helm: Path, kube_apiserver: KubeApiServer, k8s_namespace: str
) -> Iterator[tuple[str, str]]:
    """A release name for this test; uninstalled afterwards (its ClusterRoles are cluster-wide),
    without the uninstall hooks, whose Jobs no controller runs here (test_operator_cleanup.py
    runs their commands)."""
    name = f"hg{uuid.uuid4().hex[:6]}"
    yield name, k8s_namespace
    _run(
        [helm, "uninstall", name, "--namespace", k8s_namespace, "--kubeconfig",
         kube_apiserver.kubeconfig, "--timeout", HELM_TIMEOUT, "--no-hooks"]
    )  # fmt: skip


ACCESS_CHECKS = [
    ("create", "batch", "jobs", None),
    ("create", "batch", "jobs", "kube-system"),
    ("get", "", "pods/log", None),
    ("get", "", "secrets", None),
    ("create", "", "secrets", None),
    ("create", "coordination.k8s.io", "leases", None),
    ("patch", "hourglass.io", "scheduledjobs/status", "kube-system"),
]


def _allowed(
    server: KubeApiServer, namespace: str, service_account: str
) -> dict[tuple[str, str, str, str], bool]:
    """What the ServiceAccount may do, by SelfSubjectAccessReview with its own token
    (None in ACCESS_CHECKS: the release's namespace)."""
    token = server.service_account_token(namespace, service_account)
    answers = {}
    with server.token_client(token) as api:
        authorization = client.AuthorizationV1Api(api)
        for verb, group, resource, where in ACCESS_CHECKS:
            plural, _, subresource = resource.partition("/")
            review = authorization.create_self_subject_access_review(
                {
                    "spec": {
                        "resourceAttributes": {
                            "verb": verb,
                            "group": group,
                            "resource": plural,
                            "subresource": subresource,
                            "namespace": where or namespace,
                        }
                    }
                }
            )
            answers[(verb, group, resource, where or namespace)] = bool(review.status.allowed)
    return answers


def _database_password(core: client.CoreV1Api, name: str, namespace: str) -> str:
    secret = core.read_namespaced_secret(name, namespace)
    return base64.b64decode(secret.data["password"]).decode()


EXTERNAL_INSTALL_VALUES = [
    "--set", "postgresql.enabled=false",
    "--set", "database.url=postgresql://hourglass:secret@db.example.com:5432/hourglass",
    "--set", "etcd.enabled=false",
    "--set", "etcd.endpoints=etcd.example.com:2379",
]  # fmt: skip


def test_the_console_is_a_client_of_the_api_with_an_optional_ingress(
    template: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """The console gets the API's address and nothing else: no database, no etcd, no
    Kubernetes token; a TLS Ingress marks its cookie Secure."""
    rendered = template()
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(rendered.stdout)}
    pod = objects[("Deployment", "hg-hourglass-console")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "console", "--listen", "0.0.0.0:8642", "--server", "hg-hourglass-api:50051",
    ]  # fmt: skip
    names = {e["name"] for e in container["env"]}
    assert not names & {"HOURGLASS_DATABASE_URL", "HOURGLASS_ETCD_ENDPOINTS"}
    assert pod["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = objects[("Service", "hg-hourglass-console")]["spec"]
    assert service["ports"][0]["port"] == 8642
    assert not [k for k in objects if k[0] == "Ingress"]

    exposed = template(
        "--set", "console.ingress.enabled=true", "--set", "console.ingress.host=hg.example",
        "--set", "console.ingress.tls.secretName=hg-tls",
    )  # fmt: skip
    assert exposed.returncode == 0, exposed.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(exposed.stdout)}
    ingress = objects[("Ingress", "hg-hourglass-console")]["spec"]
    assert ingress["tls"] == [{"hosts": ["hg.example"], "secretName": "hg-tls"}]
    deployment = objects[("Deployment", "hg-hourglass-console")]
    assert "--secure-cookies" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    mutual = template("--set", "api.tls.existingSecret=t", "--set", "api.tls.clientAuth=true")
    assert mutual.returncode != 0
    assert "console.apiClientCert.existingSecret is required" in mutual.stderr

    # The cases whose pages it shows, each with its server; a name that is no case is refused.
    with_cases = template("--set", "console.caseServers.leaderboard=lb-games.games.svc:50051")
    assert with_cases.returncode == 0, with_cases.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _documents(with_cases.stdout)}
    deployment = objects[("Deployment", "hg-hourglass-console")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--case-server", "leaderboard=lb-games.games.svc:50051"]
    unknown = template("--set", "console.caseServers.ledger=l:1")
    assert unknown.returncode != 0
    assert "ledger" in unknown.stderr and "must be one of 'leaderboard'" in unknown.stderr


@pytest.mark.parametrize(
    ("values", "hooks"),
    [
        # Pod/test: `helm test`'s hook, which install leaves alone.
        ([], ["Pod/test", "Job/migrate"]),
        # The migration runs before anything else, with a hook Secret of its own for the DSN.
        (EXTERNAL_INSTALL_VALUES, ["Secret/migrate", "Pod/test", "Job/migrate"]),
    ],
    ids=["bundled", "external"],
)
def test_helm_install_creates_every_object_of_the_chart(
    helm: Path,
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    template: Callable[..., subprocess.CompletedProcess[str]],
    release: tuple[str, str],
    values: list[str],
    hooks: list[str],
) -> None:
    name, namespace = release
    kubeconfig = ["--kubeconfig", str(kube_apiserver.kubeconfig)]
    with JobController(k8s_client, namespace) as controller:
        installed = _run(
            [helm, "install", name, CHART, "--namespace", namespace, "--timeout", HELM_TIMEOUT,
             *kubeconfig, *values]
        )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert controller.completed == [f"{name}-hourglass-migrate"], controller.errors
    assert "kubectl --namespace" in installed.stdout  # NOTES.txt
    # The Jobs run in the release's namespace, which nothing labelled: NOTES says how.
    assert (
        f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=restricted"
        in installed.stdout
    )

    rendered = template(*values, release=name, namespace=namespace)
    assert rendered.returncode == 0, rendered.stderr
    documents = _documents(rendered.stdout)
    expected = [d for d in documents if not _is_hook(d)]
    assert len(expected) > 15
    assert [
        f"{d['kind']}/{d['metadata']['name'].removeprefix(f'{name}-hourglass-')}"
        for d in documents
        if _is_hook(d) and not _is_uninstall_hook(d)
    ] == hooks

    dynamic = DynamicClient(k8s_client)
    missing = []
    for document in expected:
        kind, object_name = document["kind"], document["metadata"]["name"]
        resource = dynamic.resources.get(api_version=document["apiVersion"], kind=kind)
        try:
            if resource.namespaced:
                found = resource.get(
                    name=object_name, namespace=document["metadata"].get("namespace", namespace)
                )
            else:
                found = resource.get(name=object_name)
        except NotFoundError:
            missing.append(f"{kind}/{object_name}")
            continue
        assert found.metadata.annotations["meta.helm.sh/release-name"] == name
    assert not missing, f"helm install did not create: {missing}"

    # Least privilege, asked of the API server as each ServiceAccount.
    assert _allowed(kube_apiserver, namespace, f"{name}-hourglass-worker") == {
        ("create", "batch", "jobs", namespace): True,
        ("create", "batch", "jobs", "kube-system"): False,
        ("get", "", "pods/log", namespace): True,
        ("get", "", "secrets", namespace): False,
        ("create", "", "secrets", namespace): True,  # a job's secret_env, per attempt
        ("create", "coordination.k8s.io", "leases", namespace): False,
        ("patch", "hourglass.io", "scheduledjobs/status", "kube-system"): False,
    }
    assert _allowed(kube_apiserver, namespace, f"{name}-hourglass-operator") == {
        ("create", "batch", "jobs", namespace): False,
        ("create", "batch", "jobs", "kube-system"): False,
        ("get", "", "pods/log", namespace): False,
        ("get", "", "secrets", namespace): False,
        ("create", "", "secrets", namespace): False,
        ("create", "coordination.k8s.io", "leases", namespace): True,
        ("patch", "hourglass.io", "scheduledjobs/status", "kube-system"): True,
    }
    assert not any(_allowed(kube_apiserver, namespace, f"{name}-hourglass-api").values())
    # The job pods' identity may do nothing at all.
    assert not any(_allowed(kube_apiserver, namespace, f"{name}-hourglass-job").values())

    # The hooks ran and, having succeeded, are gone (hook-succeeded).
    for hook in hooks:
        kind, _, short = hook.partition("/")
        resource = dynamic.resources.get(
            api_version="batch/v1" if kind == "Job" else "v1", kind=kind
        )
        with pytest.raises(NotFoundError):
            resource.get(name=f"{name}-hourglass-{short}", namespace=namespace)
    if values:
        return

    # The generated database password survives an upgrade (the Secret is looked up).
    core = client.CoreV1Api(k8s_client)
    secret = f"{name}-hourglass-database"
    password = _database_password(core, secret, namespace)
    assert len(password) == 32
    with JobController(k8s_client, namespace) as controller:
        upgraded = _run(
            [helm, "upgrade", name, CHART, "--namespace", namespace, "--timeout", HELM_TIMEOUT,
             *kubeconfig]
        )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert controller.completed == [f"{name}-hourglass-migrate"], controller.errors
    assert _database_password(core, secret, namespace) == password


# --- d) the values schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["--set", "worker.replicas=abc"], ["worker", "replicas"]),
        (["--set", "api.port=http"], ["api", "port"]),
        (["--set", "logLevel=LOUD"], ["logLevel"]),
        (["--set", "image.pullPolicy=Sometimes"], ["image", "pullPolicy"]),
        (["--set", "worker.replicaz=2"], ["worker", "replicaz"]),
        (["--set", "postgresql.persistence.size=lots"], ["postgresql", "persistence", "size"]),
        (["--set-json", 'worker.jobNamespaces=["Not_A_Namespace"]'], ["jobNamespaces"]),
        (["--set", "postgresql.enabled=false"], ["database.url", "database.existingSecret"]),
        (["--set", "etcd.enabled=false"], ["etcd.endpoints"]),
        (["--set", "jobs.runAsUser=0"], ["jobs", "runAsUser"]),
        (["--set", "jobs.podSecurity.level=lax"], ["podSecurity", "level"]),
        (["--set", "networkPolicy.apiClientCIDRs={everywhere}"], ["apiClientCIDRs"]),
    ],
    ids=[
        "replicas-not-an-integer",
        "port-not-an-integer",
        "log-level-unknown",
        "pull-policy-unknown",
        "unknown-key",
        "quantity-malformed",
        "namespace-malformed",
        "no-database",
        "no-etcd",
        "jobs-as-root",
        "pod-security-level-unknown",
        "cidr-malformed",
    ],
)
def test_bad_values_are_refused_naming_the_field(
    template: Callable[..., subprocess.CompletedProcess[str]],
    values: list[str],
    expected: list[str],
) -> None:
    result = template(*values)
    assert result.returncode != 0, result.stdout
    for word in expected:
        assert word in result.stderr, result.stderr


# --- e) what fences job pods in (tenants' untrusted code) ----------------------------------


def _objects(rendered: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
        for d in _documents(rendered)
    }


def test_job_pods_get_a_service_account_with_no_rights_in_labelled_namespaces(
    template: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    rendered = template(*EXTERNAL_VALUES)
    assert rendered.returncode == 0, rendered.stderr
    objects = _objects(rendered.stdout)
    for namespace in ("jobs-a", "jobs-b"):
        account = objects[("ServiceAccount", namespace, "hg-hourglass-job")]
        assert account["automountServiceAccountToken"] is False
        created = objects[("Namespace", "", namespace)]
        labels = created["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
        # Deleting the namespace would delete every Job in it.
        assert created["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        policy = objects[("NetworkPolicy", namespace, "hg-hourglass-job")]
        assert policy["spec"]["podSelector"] == {
            "matchExpressions": [{"key": "hourglass.io/run", "operator": "Exists"}]
        }
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"]["ingress"] == []
        # The worker may create and delete a job's Secret, never read one.
        role = objects[("Role", namespace, "hg-hourglass-worker")]
        assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]} in (
            role["rules"]
        )
    # The release's own namespace is not the chart's to create.
    assert not [key for key in objects if key[0] == "Namespace" and key[2] == "hourglass"]
    # Nothing grants the job pods' account anything.
    for (kind, _, _), document in objects.items():
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            assert "hg-hourglass-job" not in [s["name"] for s in document["subjects"]]
    worker = objects[("Deployment", "hourglass", "hg-hourglass-worker")]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--job-service-account") + 1] == "hg-hourglass-job"
    assert args[args.index("--job-run-as-user") + 1] == "10001"

    # By default the Jobs run in the release's namespace, which the chart does not create.
    objects = _objects(template().stdout)
    assert ("ServiceAccount", "hourglass", "hg-hourglass-job") in objects
    assert not [key for key in objects if key[0] == "Namespace"]

    custom = template(
        "--set", "worker.jobServiceAccount=runner", "--set", "networkPolicy.enabled=false"
    )  # fmt: skip
    objects = _objects(custom.stdout)
    assert (
        objects[("ServiceAccount", "hourglass", "runner")]["automountServiceAccountToken"] is False
    )
    assert not [key for key in objects if key[0] == "NetworkPolicy"]


# Pods as the chart and the executor label them, and places outside the cluster.
RELEASE_NS = {"kubernetes.io/metadata.name": "hourglass"}
JOBS_NS = {"kubernetes.io/metadata.name": "jobs-a"}


def _component(component: str, ip: str) -> Endpoint:
    labels = {
        "app.kubernetes.io/name": "hourglass",
        "app.kubernetes.io/instance": "hg",
        "app.kubernetes.io/component": component,
    }
    return Endpoint(ip, "hourglass", labels, RELEASE_NS)


def _job_pod(ip: str, namespace: str = "jobs-a") -> Endpoint:
    labels = {
        "hourglass.io/job": "j",
        "hourglass.io/run": "r",
        "hourglass.io/attempt": "1",
        "batch.kubernetes.io/job-name": "hg-r-1",
    }
    return Endpoint(ip, namespace, labels, {"kubernetes.io/metadata.name": namespace})


POSTGRESQL = _component("postgresql", "10.244.0.10")
ETCD = _component("etcd", "10.244.0.11")
API = _component("api", "10.244.0.12")
WORKER = _component("worker", "10.244.0.13")
OPERATOR = _component("operator", "10.244.0.14")
MIGRATE = _component("migrate", "10.244.0.15")
JOB = _job_pod("10.244.1.20")
OTHER_JOB = _job_pod("10.244.1.21", namespace="jobs-b")
JOB_IN_RELEASE_NS = _job_pod("10.244.0.30", namespace="hourglass")
DNS = Endpoint("10.244.0.2", "kube-system", {"k8s-app": "kube-dns"}, {})
PROMETHEUS = Endpoint("10.244.2.5", "monitoring", {"app": "prometheus"}, {})
INTERNET = Endpoint("198.51.100.7")
CLOUD_METADATA = Endpoint("169.254.169.254")
KUBERNETES_API = Endpoint("10.96.0.1")
NODE = Endpoint("192.168.1.5")
OFFICE = Endpoint("203.0.113.9")


@pytest.mark.parametrize("ip_blocks_match_pods", [True, False], ids=["calico-like", "strict"])
def test_network_policies_keep_job_pods_away_from_the_stores_and_the_api(
    template: Callable[..., subprocess.CompletedProcess[str]], ip_blocks_match_pods: bool
) -> None:
    """The rendered policies, applied as a network plugin would (tests/k8s/netpol.py), to
    each connection that matters: job pods reach the internet and DNS only; every component
    still reaches what it uses."""
    rendered = template(
        "--set", "worker.jobNamespaces={jobs-a,jobs-b,hourglass}",
        "--set", "networkPolicy.apiClientCIDRs={203.0.113.0/24}",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    policies = [d for d in _documents(rendered.stdout) if d["kind"] == "NetworkPolicy"]

    def may(source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return allowed(
            policies,
            source,
            destination,
            port,
            protocol=protocol,
            ip_blocks_match_pods=ip_blocks_match_pods,
        )

    for job in (JOB, OTHER_JOB, JOB_IN_RELEASE_NS):
        assert not may(job, POSTGRESQL, 5432)
        assert not may(job, ETCD, 2379)
        assert not may(job, API, 50051)
        assert not may(job, WORKER, 9100)
        assert not may(job, CLOUD_METADATA, 80)
        assert not may(job, KUBERNETES_API, 443)
        assert not may(job, NODE, 10250)  # the kubelet
        assert may(job, DNS, 53, "UDP") and may(job, DNS, 53, "TCP")
        assert may(job, INTERNET, 443)
    # Tenants' pods cannot reach each other.
    assert not may(JOB, OTHER_JOB, 8080)
    assert not may(OTHER_JOB, JOB, 8080)
    assert not may(JOB_IN_RELEASE_NS, JOB, 8080)
    assert not may(API, JOB, 8080)

    for component in ("api", "producer", "worker", "claimer"):
        assert may(_component(component, "10.244.0.40"), POSTGRESQL, 5432), component
    assert may(MIGRATE, POSTGRESQL, 5432)
    assert may(WORKER, ETCD, 2379) and may(_component("claimer", "10.244.0.41"), ETCD, 2379)
    # The API serves hourglass.v1.Locks on etcd.
    assert may(API, ETCD, 2379) and not may(OPERATOR, ETCD, 2379)
    assert not may(OPERATOR, POSTGRESQL, 5432)
    assert may(OPERATOR, API, 50051)
    assert may(PROMETHEUS, API, 50051) and not may(PROMETHEUS, POSTGRESQL, 5432)
    assert may(OFFICE, API, 50051) and not may(INTERNET, API, 50051)
    for target, port in ((API, 9100), (WORKER, 9100), (ETCD, 2381)):
        assert may(PROMETHEUS, target, port)


def _pod_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod a controller would create from a workload's template (a StatefulSet's volume
    claims become volumes, as the StatefulSet controller does)."""
    template = document["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    for claim in document["spec"].get("volumeClaimTemplates") or []:
        claim_name = claim["metadata"]["name"]
        spec.setdefault("volumes", []).append(
            {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"].get("labels") or {}},
        "spec": spec,
    }


def test_every_pod_of_the_release_and_the_executor_passes_a_restricted_namespace(
    helm: Path,
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    template: Callable[..., subprocess.CompletedProcess[str]],
    release: tuple[str, str],
) -> None:
    """Installed into a namespace that enforces the restricted profile, with the Jobs in it:
    every pod the chart's workloads would create is admitted, and so is the pod of a Job the
    executor creates with the worker's own token and RBAC, secret_env included."""
    name, namespace = release
    core = client.CoreV1Api(k8s_client)
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    with JobController(k8s_client, namespace) as controller:
        installed = _run(
            [helm, "install", name, CHART, "--namespace", namespace, "--timeout", HELM_TIMEOUT,
             "--kubeconfig", kube_apiserver.kubeconfig]
        )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert controller.completed, controller.errors
    # The API server warns about workloads whose pods the namespace would refuse.
    assert "PodSecurity" not in installed.stderr, installed.stderr
    assert "does not enforce the restricted Pod Security profile" not in installed.stdout

    documents = _documents(template(release=name, namespace=namespace).stdout)
    workloads = [d for d in documents if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert len(workloads) == 12  # with the bundled Redis, the console and the uninstall hooks
    for document in workloads:
        pod = _pod_of(document, f"{document['metadata']['name']}-0")
        core.create_namespaced_pod(namespace, pod, dry_run="All")  # raises if refused

    # The executor, as the chart's worker: its ServiceAccount token, its Role.
    token = kube_apiserver.service_account_token(namespace, f"{name}-hourglass-worker")
    config = KubernetesConfig(
        namespace=namespace, service_account=f"{name}-hourglass-job", api_retry_seconds=5.0
    )
    task = Task(command=("env",), image="busybox:1.36", secret_env={"API_KEY": "s3cr3t"})
    attempt = AttemptContext(
        run_id=RunId(uuid.uuid4()),
        job_id=JobId(uuid.uuid4()),
        attempt=1,
        fencing_token=FencingToken(5),
        scheduled_at=datetime.now(UTC),
        task=task,
        timeout=None,
        worker_id="chart-test",
    )
    job_name = f"hg-{attempt.run_id}-1"
    batch = client.BatchV1Api(k8s_client)

    def released() -> dict[str, Any] | None:
        try:
            response: Any = batch.read_namespaced_job(job_name, namespace, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        job: dict[str, Any] = json.loads(response.data)
        return None if job["spec"].get("suspend") else job

    async def run_and_terminate() -> dict[str, Any]:
        with kube_apiserver.token_client(token) as api:
            executor = KubernetesExecutor(config, api)
            execution = asyncio.create_task(executor.execute(attempt))
            deadline = time.monotonic() + 15
            while (job := await asyncio.to_thread(released)) is None:
                assert not execution.done(), execution.result()
                assert time.monotonic() < deadline, "the Job was not released"
                await asyncio.sleep(0.1)
            secret = core.read_namespaced_secret(job_name, namespace)
            assert secret.metadata.owner_references[0].uid == job["metadata"]["uid"]
            await executor.terminate(attempt)
            execution.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await execution
            return job

    job = asyncio.run(run_and_terminate())
    assert "s3cr3t" not in json.dumps(job)
    core.create_namespaced_pod(namespace, _pod_of(job, f"{job_name}-abcde"), dry_run="All")
    # terminate() took the Job and its Secret away, with the worker's rights alone.
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_secret(job_name, namespace)
    assert gone.value.status == 404
