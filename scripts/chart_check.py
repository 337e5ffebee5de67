"""`make chart-check`: the chart's manifests validated offline with kubeconform -strict.

    scripts/chart-check                      render and validate the defaults and every
                                             charts/hourglass/ci/*-values.yaml
    helm template ... | scripts/chart-check --manifests -
                                             validate a YAML stream of your own

It FAILS (exit 1) when kubeconform finds an invalid object, skips one for want of a schema,
or validates none at all (an empty render, a `helm template` that failed into the pipe).

The schemas, without the network at check time:
- Kubernetes' own kinds come from the OpenAPI v2 document of the kube-apiserver that
  scripts/k8s-tools built (the test bed's): started once on an embedded etcd, read, stopped,
  and converted into kubeconform's layout (`v<version>-standalone-strict/<kind>-<group>-
  <version>.json`, what the `openapi2jsonschema` script does for kubeconform's published
  schemas). The result is cached beside the tools (`kubeconform-schemas/`).
- "Strict" is true to its name: every object schema that lists properties gets
  `additionalProperties: false`; int-or-string and Quantity accept both.
- The chart's CRDs (charts/hourglass/crds/) are converted from their openAPIV3Schema on every
  run, since they change with the checkout.
- ServiceMonitor and PodMonitor come from the Prometheus Operator's own CRDs, in its Go module
  (pinned below, checksum-verified by `go mod download` through the module proxy once, then
  read from the module cache).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "hourglass"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("servicemonitors", "podmonitors")

INT_OR_STRING: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class CheckFailed(Exception):
    """What is wrong, for the user; exit 1."""


# --- conversion of OpenAPI and CRD schemas into kubeconform's strict JSON schemas ----------


def _keywords(node: dict[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """A schema node's keywords, converted, without the `x-` extensions. The names in
    `properties` are data, not keywords (JSONSchemaProps has properties named x-...)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-"):
            continue
        if key in ("enum", "default", "example"):
            out[key] = value
        elif key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {name: convert(schema) for name, schema in value.items()}
        else:
            out[key] = convert(value)
    return out


def strict_openapi(node: Any) -> Any:
    """An OpenAPI v2 schema node as strict JSON schema (draft 4, kubeconform's default)."""
    if isinstance(node, list):
        return [strict_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {**INT_OR_STRING, "description": node.get("description", "")}
    out = _keywords(node, strict_openapi)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def strict_crd(node: Any) -> Any:
    """A CRD's openAPIV3Schema node as strict JSON schema."""
    if isinstance(node, list):
        return [strict_crd(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        rest = {k: v for k, v in node.items() if k not in ("type", "x-kubernetes-int-or-string")}
        return {**INT_OR_STRING, **strict_crd(rest)}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-embedded-resource"
    )
    out = _keywords(node, strict_crd)
    out.pop("nullable", None)
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _reachable(definitions: dict[str, Any], root: Any) -> dict[str, Any]:
    """The definitions that `root` reaches through `$ref`, transitively."""
    found: dict[str, Any] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                name = ref.removeprefix("#/definitions/")
                if name not in found:
                    found[name] = definitions[name]
                    stack.append(definitions[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def schema_file(kind: str, api_version: str) -> str:
    """kubeconform's file name: {{ .ResourceKind }}{{ .KindSuffix }}.json."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _write_schema(folder: Path, name: str, root: Any, definitions: dict[str, Any]) -> None:
    document = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        **root,
        "definitions": _reachable(definitions, root),
    }
    (folder / name).write_text(json.dumps(document))


def _definitions(openapi: dict[str, Any]) -> dict[str, Any]:
    definitions = {name: strict_openapi(d) for name, d in openapi["definitions"].items()}
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = INT_OR_STRING
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = QUANTITY
    return definitions


def write_cluster_schemas(openapi: dict[str, Any], folder: Path) -> int:
    """A schema per kind of the server's OpenAPI v2 document into `folder`; returns how many."""
    definitions = _definitions(openapi)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, definition in openapi["definitions"].items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            ref = {"$ref": f"#/definitions/{name}"}
            _write_schema(folder, schema_file(gvk["kind"], api_version), ref, definitions)
            written += 1
    if written < 50:
        raise CheckFailed(f"the server's OpenAPI document names only {written} kinds")
    (folder / "openapi-definitions.json").write_text(json.dumps(openapi["definitions"]))
    return written


def write_crd_schemas(crds: Iterable[dict[str, Any]], folder: Path) -> list[str]:
    """Each served version of each CRD as a schema in `folder` (metadata: the server's
    ObjectMeta, from the cluster schemas already there); returns the file names."""
    openapi = {"definitions": json.loads((folder / "openapi-definitions.json").read_text())}
    definitions = _definitions(openapi)
    names = []
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = copy.deepcopy(version.get("schema", {}).get("openAPIV3Schema", {}))
            schema = strict_crd(schema) or {"type": "object"}
            api_version = f"{spec['group']}/{version['name']}"
            properties = schema.setdefault("properties", {})
            properties["apiVersion"] = {"type": "string", "enum": [api_version]}
            properties["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
            properties["metadata"] = {"$ref": f"#/definitions/{OBJECT_META}"}
            schema.setdefault("type", "object")
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            name = schema_file(spec["names"]["kind"], api_version)
            _write_schema(folder, name, schema, definitions)
            names.append(name)
    return names


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def chart_crds() -> list[dict[str, Any]]:
    folder = CHART / "crds"
    found: list[dict[str, Any]] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")]):
        found.extend(
            d for d in documents(path.read_text()) if d.get("kind") == "CustomResourceDefinition"
        )
    return found


# --- tools -----------------------------------------------------------------------------------


def tools_dir() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "k8s-tools"), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(out)


def tool(name: str) -> Path:
    for folder in (os.environ.get("KUBEBUILDER_ASSETS"), tools_dir()):
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    raise CheckFailed(f"no {name}: run scripts/k8s-tools (needs Go) or set KUBEBUILDER_ASSETS")


def kube_version(apiserver: Path) -> str:
    """`Kubernetes v1.36.3` -> 1.36.3."""
    out = subprocess.run([apiserver, "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split()[-1].removeprefix("v").split("+")[0]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch_openapi(apiserver: Path) -> dict[str, Any]:
    """Starts the kube-apiserver on an etcd of its own, reads /openapi/v2, stops both."""
    from hourglass.embedded import EmbeddedEtcd

    with tempfile.TemporaryDirectory(prefix="hourglass-chart-check-") as scratch:
        folder = Path(scratch)
        etcd = EmbeddedEtcd(folder / "etcd").start()
        process: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run(
                ["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"],
                check=True,
                capture_output=True,
            )
            token = secrets.token_hex(16)
            (folder / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
            port = _free_port()
            log = folder / "kube-apiserver.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        str(apiserver),
                        f"--etcd-servers=http://{etcd.endpoint}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={port}",
                        f"--cert-dir={folder / 'certs'}",
                        f"--token-auth-file={folder / 'tokens.csv'}",
                        "--authorization-mode=RBAC",
                        "--service-account-issuer=https://kubernetes.default.svc",
                        f"--service-account-key-file={folder / 'sa.key'}",
                        f"--service-account-signing-key-file={folder / 'sa.key'}",
                        "--service-cluster-ip-range=10.96.0.0/24",
                        "--profiling=false",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            return _read_openapi(process, port, token, folder / "certs" / "apiserver.crt", log)
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            etcd.stop()


def _read_openapi(
    process: subprocess.Popen[bytes], port: int, token: str, cert: Path, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise CheckFailed(f"kube-apiserver exited ({process.returncode}):\n{tail}")
        if cert.exists():
            # Its own self-signed certificate, on loopback.
            context = ssl.create_default_context(cafile=str(cert))
            request = urllib.request.Request(
                f"https://127.0.0.1:{port}/openapi/v2",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=30) as response:
                    result: dict[str, Any] = json.loads(response.read())
                    return result
            except (OSError, urllib.error.HTTPError, ssl.SSLError) as error:
                last = repr(error)
        time.sleep(0.5)
    raise CheckFailed(f"kube-apiserver served no /openapi/v2 within 90s ({last})")


def cluster_schemas(apiserver: Path, version: str) -> Path:
    """The cached schema folder of the server's own kinds, built on first use."""
    root = tools_dir() / "kubeconform-schemas"
    folder = root / f"v{version}-standalone-strict"
    stamp = folder / ".complete"
    if not stamp.exists():
        print(f"chart-check: building kubeconform schemas of Kubernetes {version} ...")
        shutil.rmtree(folder, ignore_errors=True)
        count = write_cluster_schemas(fetch_openapi(apiserver), folder)
        stamp.write_text(f"{count}\n")
    return folder


def monitoring_crds() -> list[dict[str, Any]]:
    """ServiceMonitor and PodMonitor CRDs from the Prometheus Operator's Go module."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "GO111MODULE": "on", "GOWORK": "off"},
    )
    if result.returncode != 0:
        raise CheckFailed(f"go mod download {PROMETHEUS_OPERATOR}: {result.stdout}{result.stderr}")
    folder = Path(json.loads(result.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    found = []
    for plural in MONITORING_CRDS:
        found.extend(documents((folder / f"monitoring.coreos.com_{plural}.yaml").read_text()))
    return found


# --- the check -------------------------------------------------------------------------------


def schema_root(scratch: Path) -> tuple[Path, str]:
    """A kubeconform schema location with every kind the chart may render."""
    apiserver = tool("kube-apiserver")
    version = kube_version(apiserver)
    cached = cluster_schemas(apiserver, version)
    folder = scratch / cached.name
    shutil.copytree(cached, folder)
    write_crd_schemas([*chart_crds(), *monitoring_crds()], folder)
    return scratch, version


def validate(manifests: str, *, schemas: Path, version: str, label: str) -> str:
    """kubeconform -strict over the stream; the summary line, or CheckFailed."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(manifests)
        handle.flush()
        result = subprocess.run(
            [
                str(tool("kubeconform")), "-strict", "-summary", "-output", "json",
                "-kubernetes-version", version, "-schema-location", str(schemas), handle.name,
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CheckFailed(f"{label}: kubeconform said {result.stdout}{result.stderr}") from None
    summary = report["summary"]
    problems = [
        f"  {r['kind']}/{r['name']}: {r['status']} {r.get('msg', '')}"
        for r in report.get("resources", [])
        if r["status"] != "statusValid"
    ]
    if result.returncode != 0 or summary["invalid"] or summary["errors"] or problems:
        raise CheckFailed(f"{label}: {summary}\n" + "\n".join(problems))
    if summary["skipped"]:
        raise CheckFailed(f"{label}: {summary['skipped']} objects skipped (no schema)")
    if summary["valid"] == 0:
        raise CheckFailed(f"{label}: no object validated (an empty render?)")
    return f"{label}: {summary['valid']} objects valid, 0 skipped"


def render(values: Path | None) -> str:
    args = [str(tool("helm")), "template", "hg", str(CHART), "--namespace", "hourglass"]
    args.append("--include-crds")
    if values is not None:
        args += ["--values", str(values)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"helm template ({values or 'defaults'}): {result.stderr}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chart-check", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--manifests", metavar="FILE", help="validate this YAML stream ('-': stdin) instead"
    )
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="hourglass-schemas-") as scratch:
            schemas, version = schema_root(Path(scratch))
            if args.manifests:
                text = (
                    sys.stdin.read() if args.manifests == "-" else Path(args.manifests).read_text()
                )
                print(validate(text, schemas=schemas, version=version, label=args.manifests))
                return 0
            for values in [None, *sorted((CHART / "ci").glob("*-values.yaml"))]:
                label = f"helm template ({values.relative_to(REPO) if values else 'defaults'})"
                print(validate(render(values), schemas=schemas, version=version, label=label))
    except CheckFailed as error:
        print(f"chart-check: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
