"""`kind`, `docker`, `helm` and `kubectl` for the README's Kubernetes blocks, on the test bed
of tests/k8s: a real kube-apiserver with no controllers, no kubelet, no container engine.

test_readme.py puts small scripts of these names first on PATH; each runs
`python -m tests.acceptance.readme_testbed TOOL ARGS...`. What a real API server can judge
goes to it; what needs a running cluster is checked as far as it can be and recorded for the
cluster suite (tests/cluster/, which runs them for real), one line each in `deferred`:

- `kind create cluster --name N`: recorded. `kind load docker-image IMAGE --name N`: IMAGE
  must have been built by the README's `docker build` and N created by its `kind create`.
- `docker build -t TAG CONTEXT`: CONTEXT must hold a Dockerfile; TAG is remembered.
- `helm install|upgrade RELEASE CHART ARGS`: the real `helm lint` and `helm template` with the
  same values, the namespace created (`--create-namespace`), the chart's CRDs applied for
  real (as helm would), and every rendered object sent with `kubectl apply --dry-run=server`.
  Every image of the release must be one the README built.
- `kubectl rollout status deployment/NAME`: the release renders that Deployment there.
  `kubectl port-forward service/NAME L:R`: the release renders that Service with port R.
  `kubectl exec deploy/NAME -- CMD`: the release renders that Deployment; CMD runs here with
  the dev database as HOURGLASS_DATABASE_URL (what the API pod's environment holds).
- any other `kubectl` command: the real kubectl against the API server.

The environment gives the folders: README_TESTBED_TOOLS (real helm and kubectl),
README_TESTBED_KUBECONFIG, README_TESTBED_STATE, README_TESTBED_DATABASE_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# helm flags that only steer the install itself, not what it renders.
_INSTALL_ONLY = {"--create-namespace", "--wait", "--atomic", "--install"}


class Refused(Exception):
    """The README's command would not work on a cluster; the message says why."""


def _state() -> Path:
    return Path(os.environ["README_TESTBED_STATE"])


def _remember(key: str, value: str) -> None:
    path = _state() / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    state.setdefault(key, []).append(value)
    path.write_text(json.dumps(state))


def _recalled(key: str) -> list[str]:
    path = _state() / "state.json"
    return list(json.loads(path.read_text()).get(key, [])) if path.exists() else []


def _defer(argv: list[str], checked: str) -> None:
    with (_state() / "deferred").open("a") as deferred:
        deferred.write(f"{' '.join(argv)}  [checked here: {checked}]\n")


def _tool(name: str) -> str:
    return str(Path(os.environ["README_TESTBED_TOOLS"]) / name)


def _kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("kubectl"), "--kubeconfig", os.environ["README_TESTBED_KUBECONFIG"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _must(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        raise Refused(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def kind(args: list[str]) -> int:
    if args[:2] == ["create", "cluster"]:
        _remember("clusters", _option(args, "--name") or "kind")
        _defer(["kind", *args], "nothing: no container engine here")
        return 0
    if args[:2] == ["load", "docker-image"]:
        image, cluster = args[2], _option(args, "--name") or "kind"
        if image not in _recalled("images"):
            raise Refused(f"kind loads {image}, which no `docker build` made")
        if cluster not in _recalled("clusters"):
            raise Refused(f"kind loads into cluster {cluster}, which no `kind create` made")
        _defer(["kind", *args], "the image was built and the cluster created above")
        return 0
    raise Refused(f"the test bed does not know `kind {' '.join(args)}`")


def docker(args: list[str]) -> int:
    if args[:1] == ["build"]:
        context = Path(args[-1])
        if not (context / "Dockerfile").is_file():
            raise Refused(f"`docker build {context}`: no Dockerfile there")
        _remember("images", _option(args, "-t", "--tag") or "")
        _defer(["docker", *args], "the Dockerfile exists")
        return 0
    raise Refused(f"the test bed does not know `docker {' '.join(args)}`")


def _rendered() -> list[dict[str, Any]]:
    path = _state() / "rendered.yaml"
    if not path.exists():
        raise Refused("no chart is installed: a `helm install` must come first")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _renders(kind_name: str, name: str, namespace: str | None) -> dict[str, Any]:
    release_namespace = _recalled("namespaces")[-1]
    if namespace not in (None, release_namespace):
        raise Refused(f"the release is in namespace {release_namespace}, not {namespace}")
    for document in _rendered():
        if document.get("kind") == kind_name and document["metadata"]["name"] == name:
            return document
    raise Refused(f"the chart renders no {kind_name} {name}")


# Kinds with no namespace, among those the chart renders.
_CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def _in_namespace(rendered: str, namespace: str) -> str:
    """The rendered objects as helm installs them: the release's namespace on each namespaced
    object that names none, the others (the worker's Roles in job namespaces) left as they are."""
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    for document in documents:
        if document["kind"] not in _CLUSTER_SCOPED:
            document["metadata"].setdefault("namespace", namespace)
    return yaml.safe_dump_all(documents)


def helm(args: list[str]) -> int:
    if args and args[0] in ("template", "lint"):  # need no cluster: the real helm answers
        return subprocess.run([_tool("helm"), *args]).returncode
    if not args or args[0] not in ("install", "upgrade"):
        raise Refused(f"the test bed does not know `helm {' '.join(args)}`")
    positional = [a for a in args[1:] if not a.startswith("-")]
    release, chart = positional[0], positional[1]  # flags come after them in the README
    namespace = _option(args, "--namespace", "-n") or "default"
    rest = list(args[1:])
    rest.remove(release)
    rest = [a for a in rest if a not in _INSTALL_ONLY]  # the chart and its values remain
    # This helm, not talking to a cluster, would assume Kubernetes v1.20: give it the server's.
    server = json.loads(_must(_kubectl("version", "-o", "json"), "kubectl version"))
    rest += ["--kube-version", server["serverVersion"]["gitVersion"].split("+")[0]]
    _must(
        subprocess.run([_tool("helm"), "lint", *rest], capture_output=True, text=True),
        "helm lint",
    )
    rendered = _must(
        subprocess.run(
            [_tool("helm"), "template", release, *rest],
            capture_output=True,
            text=True,
            timeout=120,
        ),
        "helm template",
    )
    (_state() / "rendered.yaml").write_text(rendered)
    _remember("namespaces", namespace)
    if "--create-namespace" in args:
        _kubectl("create", "namespace", namespace)  # already there: fine
    crds = Path(chart) / "crds"
    if crds.is_dir():
        _must(_kubectl("apply", "--server-side", "-f", str(crds)), "applying the chart's CRDs")
        _must(_kubectl("wait", "--for=condition=Established", "crd", "--all"), "CRDs served")
    _must(
        _kubectl("apply", "--dry-run=server", "-f", "-", stdin=_in_namespace(rendered, namespace)),
        "kubectl apply --dry-run=server of the rendered chart",
    )
    built = set(_recalled("images"))
    for document in _rendered():
        spec = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            image = container["image"]
            if image.split(":")[0] == "hourglass" and image not in built:
                raise Refused(f"the chart runs {image}, which the README never builds")
    _defer(["helm", *args], "lint, template, CRDs applied, objects accepted by dry-run=server")
    print(f'release "{release}" checked on the test bed')
    return 0


def kubectl(args: list[str]) -> int:
    namespace = _option(args, "-n", "--namespace")
    rest = [a for a in args if a not in ("-n", "--namespace", namespace)]
    if rest[:2] == ["rollout", "status"]:
        _renders("Deployment", rest[2].split("/", 1)[1], namespace)
        _defer(["kubectl", *args], "the release renders that Deployment")
        return 0
    if rest[:1] == ["port-forward"]:
        service = _renders("Service", rest[1].split("/", 1)[1], namespace)
        remote = int(rest[2].split(":")[-1])
        if remote not in [port["port"] for port in service["spec"]["ports"]]:
            raise Refused(f"service {rest[1]} has no port {remote}")
        _defer(["kubectl", *args], "the release renders that Service and port")
        return 0
    if rest[:1] == ["exec"]:
        _renders("Deployment", rest[1].split("/", 1)[1], namespace)
        command = rest[rest.index("--") + 1 :]
        env = dict(os.environ, HOURGLASS_DATABASE_URL=os.environ["README_TESTBED_DATABASE_URL"])
        _defer(["kubectl", *args], "the Deployment is rendered; the command ran on dev")
        return subprocess.run(command, env=env, timeout=120).returncode
    done = _kubectl(*args)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


TOOLS = {"kind": kind, "docker": docker, "helm": helm, "kubectl": kubectl}


def main(argv: list[str]) -> int:
    try:
        return TOOLS[argv[0]](argv[1:])
    except Refused as refused:
        print(f"README test bed: {argv[0]}: {refused}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
