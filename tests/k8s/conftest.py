"""A real Kubernetes API server for tests: kube-apiserver on an etcd of its own, no mocks.

The binaries come from `$KUBEBUILDER_ASSETS` (the envtest convention) or from the cache folder
that `scripts/k8s-tools` builds them into (it prints that folder with `--print-dir`). The
fixtures never build: without the binaries the tests skip, unless `HOURGLASS_REQUIRE_K8S=1`
(as in CI), where they fail.

There is no kube-controller-manager, scheduler or kubelet: objects are stored, validated,
authenticated and authorized exactly as in a cluster, but nothing acts on them. A test that
wants a Job to look finished patches its status the way the Job controller would. Deleted
namespaces therefore stay `Terminating` (the namespace controller would empty them).

Authentication is a static token file with two users: `admin` (group `system:masters`) and
`limited` (no groups, so RBAC grants it only discovery); a test can bind roles to `limited`
or ask for a service account token with `KubeApiServer.service_account_token`.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from hourglass.embedded import EmbeddedEtcd, free_port

# The case tests' shared steps assert too: rewrite them like a test module's.
pytest.register_assert_rewrite("tests.k8s.case_helpers")

REPO = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = REPO / "scripts" / "k8s-tools"
START_TIMEOUT = 60.0
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
HOW_TO_GET = "run scripts/k8s-tools (needs Go) or set KUBEBUILDER_ASSETS"


def _required() -> bool:
    return os.environ.get("HOURGLASS_REQUIRE_K8S") == "1"


def _missing(what: str) -> None:
    message = f"{what}: {HOW_TO_GET}"
    if _required():
        pytest.fail(f"HOURGLASS_REQUIRE_K8S=1 but {message}", pytrace=False)
    pytest.skip(message)


@functools.cache
def tools_cache_dir() -> Path | None:
    """The folder that `scripts/k8s-tools` builds into (it honours HOURGLASS_K8S_TOOLS)."""
    try:
        out = subprocess.run(
            ["bash", str(TOOLS_SCRIPT), "--print-dir"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def find_tool(name: str) -> Path | None:
    """`name` from KUBEBUILDER_ASSETS, else from the k8s-tools cache, else None."""
    folders = [os.environ.get("KUBEBUILDER_ASSETS"), tools_cache_dir()]
    for folder in folders:
        if folder:
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    """The folder holding kube-apiserver."""
    apiserver = find_tool("kube-apiserver")
    if apiserver is None:
        _missing("no kube-apiserver binary in KUBEBUILDER_ASSETS or the k8s-tools cache")
    assert apiserver is not None
    return apiserver.parent


@pytest.fixture(scope="session")
def k8s_tool() -> Callable[[str], Path]:
    """`k8s_tool("helm")`: the path of a test-bed binary (helm, kubeconform, grpcurl, ...);
    skips the test when it is missing (fails it under HOURGLASS_REQUIRE_K8S=1)."""

    def lookup(name: str) -> Path:
        path = find_tool(name)
        if path is None:
            _missing(f"no {name} binary in KUBEBUILDER_ASSETS or the k8s-tools cache")
        assert path is not None
        return path

    return lookup


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(folder: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and an RSA key pair
    for service account tokens, with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.fail("the Kubernetes test bed needs the openssl command", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
    )
    (folder / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=folder)
    _openssl(
        "req", "-new", "-key", "ca.key", "-subj", "/CN=hourglass-test-ca", "-out", "ca.csr",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "30",
        "-extfile", "ca.ext", "-out", "ca.crt",
        cwd=folder,
    )  # fmt: skip
    _openssl("genrsa", "-out", "server.key", "2048", cwd=folder)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "30", "-extfile", "server.ext", "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class KubeApiServer:
    """A running kube-apiserver. `tokens` maps each static user to its bearer token."""

    url: str
    ca_file: Path
    folder: Path
    tokens: dict[str, str]
    log_file: Path
    kubeconfigs: dict[str, Path] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The admin's token (group system:masters)."""
        return self.tokens["admin"]

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the admin."""
        return self.kubeconfigs["admin"]

    def write_kubeconfig(self, user: str, token: str, path: Path) -> Path:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "hourglass-test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": user, "context": {"cluster": "hourglass-test", "user": user}},
            ],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)
        return path

    def api_client(self, user: str = "admin") -> client.ApiClient:
        """A kubernetes client for a static user, through that user's kubeconfig."""
        return config.new_client_from_config(config_file=str(self.kubeconfigs[user]))

    def token_client(self, token: str) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token for service account `namespace/name` (created if missing), through
        the TokenRequest API: the identity that a pod in the cluster would have."""
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            try:
                core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
            except client.ApiException as error:
                if error.status != 409:
                    raise
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
            )
            response = core.create_namespaced_service_account_token(name, namespace, request)
            return str(response.status.token)

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        """A raw GET with a bearer token (the admin's by default): (status, body)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {token or self.token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


def _wait_ready(server: KubeApiServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"kube-apiserver exited with code {process.returncode} while starting; "
                f"last lines of {server.log_file}:\n{_log_tail(server.log_file)}"
            )
        try:
            status, body = server.get("/readyz")
            if status == 200 and body.strip() == "ok":
                return
            last = f"HTTP {status}: {body.strip()[-500:]}"
        except (OSError, ssl.SSLError) as error:
            last = repr(error)
        time.sleep(0.25)
    raise TimeoutError(
        f"kube-apiserver was not ready at {server.url}/readyz within {START_TIMEOUT:.0f}s "
        f"(last: {last}); last lines of {server.log_file}:\n{_log_tail(server.log_file)}"
    )


@pytest.fixture(scope="session")
def kube_apiserver(
    k8s_tools: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeApiServer]:
    folder = tmp_path_factory.mktemp("kube-apiserver")
    # An etcd of its own, so hourglass's keys and Kubernetes' never share a server.
    etcd = EmbeddedEtcd(folder / "etcd").start()
    process: subprocess.Popen[bytes] | None = None
    try:
        pki = folder / "pki"
        _make_pki(pki)
        tokens = {"admin": secrets.token_hex(16), "limited": secrets.token_hex(16)}
        token_file = folder / "tokens.csv"
        token_file.write_text(
            f'{tokens["admin"]},admin,admin-uid,"system:masters"\n'
            f"{tokens['limited']},limited,limited-uid\n"
        )
        token_file.chmod(0o600)
        port = free_port()
        server = KubeApiServer(
            url=f"https://127.0.0.1:{port}",
            ca_file=pki / "ca.crt",
            folder=folder,
            tokens=tokens,
            log_file=folder / "kube-apiserver.log",
        )
        for user, token in tokens.items():
            server.kubeconfigs[user] = server.write_kubeconfig(
                user, token, folder / f"kubeconfig-{user}.yaml"
            )
        args = [
            str(k8s_tools / "kube-apiserver"),
            f"--etcd-servers=http://{etcd.endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={folder / 'certs'}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            # No token controller runs to create each namespace's `default` service
            # account, which this plugin would demand of every pod.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        with server.log_file.open("wb") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _wait_ready(server, process)
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        etcd.stop()


@pytest.fixture(scope="session")
def k8s_client(kube_apiserver: KubeApiServer) -> Iterator[client.ApiClient]:
    """A kubernetes client for the admin."""
    with kube_apiserver.api_client() as api:
        yield api


@pytest.fixture
def k8s_namespace(k8s_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for this test; deleted afterwards (it then stays Terminating, as
    no namespace controller runs)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    core = client.CoreV1Api(k8s_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _job_condition(kind: str, at: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": at,
        "lastTransitionTime": at,
    }


def finish_job(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    failed: str = "",
    message: str = "",
) -> None:
    """Plays the Job controller (none runs here): patches the Job's status as the controller
    would when the Job ends, Complete, or Failed with reason `failed`. This is the status that
    passes the API server's validation in v1.36 (see test_apiserver.py)."""
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    at = (started + timedelta(seconds=3)).isoformat()
    status: dict[str, Any] = {
        "startTime": started.isoformat(),
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    if failed:
        status["failed"] = 1
        status["conditions"] = [
            _job_condition("FailureTarget", at, failed, message),
            _job_condition("Failed", at, failed, message),
        ]
    else:
        status["succeeded"] = 1
        status["completionTime"] = at
        status["conditions"] = [
            _job_condition(
                "SuccessCriteriaMet", at, "CompletionsReached", "Reached expected number"
            ),
            _job_condition("Complete", at, "CompletionsReached", "Reached expected number"),
        ]
    client.BatchV1Api(api).patch_namespaced_job_status(name, namespace, {"status": status})
