"""The other systems of the design notes, one package each: `hourglass.cases.<case>`.

Each case is a real service that `hourglass serve <case> --name <resource>` runs, that the
operator deploys from its custom resource, and whose batch work runs as hourglass
ScheduledJobs. Every case has the same shape, so a reader who knows one knows all:

    cases/<case>/__init__.py   CASE, the record below: what the CLI and the operator need
    cases/<case>/server.py     the server: gRPC (with health and reflection), HTTP if its users
                               expect it, Prometheus metrics
    cases/<case>/store.py      its SQL, and nothing else; schema.sql and migrations/ beside it
    cases/<case>/objects.py    pure: the custom resource -> the objects the operator applies
    cases/<case>/...           its own logic in plain modules with unit tests

Layers (held by import-linter): a case uses the core (`hourglass.store.db`, `locks`,
`artifacts`, `metrics`, `logs`, `embedded`) and never imports another case, `api`,
`workers`, `operator` or `cli`. The operator and the CLI find a case here, by name.

A case's batch jobs reach its data through its own server (an admin RPC), never with
database credentials: they run as ScheduledJobs, in job pods that hold no credentials and
cannot reach PostgreSQL, etcd or the scheduler's API (docs/architecture.md, "Threat model").
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every case, by package name. A case is listed here once it works end to end.
NAMES: tuple[str, ...] = ("leaderboard", "shortener", "filesync", "metrics", "feed")


@dataclass(frozen=True, slots=True)
class Settings:
    """What a case's server is given: its resource's name and the platform's parts."""

    name: str
    database_url: str
    redis_url: str
    etcd_endpoints: str
    # gRPC HOST:PORT; HTTP HOST:PORT for cases with an HTTP face; metrics HOST:PORT.
    listen: str
    http_listen: str | None = None
    metrics_listen: str | None = None
    # The resource's spec as the operator saw it (a ConfigMap in a cluster), or {} locally.
    spec: Mapping[str, Any] = field(default_factory=dict)
    # The resource's namespace ("" locally), and the PostgreSQL schema of this resource
    # (`schema_name`): `database_url` already sets search_path to it, and the migrations in
    # `Case.migrations` were applied into it before `serve` was called.
    namespace: str = ""
    schema: str = "public"
    # Which of the case's servers this process runs, for a case with several Deployments
    # (the shortener's "read" and "write"); "" runs all of them, as `hourglass dev` does.
    role: str = ""
    # The object store (hourglass.artifacts.open_store's URL) for cases that keep blobs;
    # `hourglass dev` gives its own artifact folder.
    artifacts: str = ""


@dataclass(frozen=True, slots=True)
class Resource:
    """A case's custom resource, as its `objects` function sees it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Platform:
    """What the operator knows about the installation that a case's objects refer to."""

    image: str
    # A Secret with the keys `database-url` and `redis-url` for the case's server pods.
    secret: str
    etcd_endpoints: str


@dataclass(frozen=True, slots=True)
class Case:
    """One case: what `hourglass serve`, `hourglass dev --case` and the operator need."""

    name: str  # the package and the CLI's name: "leaderboard"
    kind: str  # the custom resource's kind: "Leaderboard"
    plural: str  # "leaderboards"
    short_names: tuple[str, ...]  # ("lb",)
    # Runs the server until `stop` (an asyncio.Event) is set. The process already serves
    # Prometheus metrics on `Settings.metrics_listen` (the CLI starts that, as for every
    # command): a case registers its collectors on prometheus_client's default registry.
    serve: Callable[[Settings, Any], Awaitable[None]]
    # Pure: the resource -> the manifests the operator applies (Deployments, Services,
    # ConfigMaps, ScheduledJobs), without ownerReferences (the operator adds them).
    objects: Callable[[Resource, Platform], list[dict[str, Any]]]
    # The folder with the case's schema.sql and numbered migrations.
    migrations: Path
    # Whether the server has an HTTP face: `hourglass dev` then gives it Settings.http_listen
    # and prints that address.
    http: bool = False
    # The OpenAPI schema of the resource's spec, kept beside the code that parses the spec
    # (the case's spec.py), and the printer columns `kubectl get` shows before the common
    # ones: operator/crds.py makes the case's CRD from them, so the defaults and bounds the
    # API server applies are the ones the case's parser applies.
    spec_schema: Mapping[str, Any] = field(default_factory=dict)
    columns: tuple[Mapping[str, Any], ...] = ()
    # One line for the CRD's description (`kubectl explain`).
    description: str = ""


class Invalid(ValueError):
    """A request field a case refuses: its gRPC face answers INVALID_ARGUMENT
    "<field>: <reason>", its HTTP face 400 with {"error": ..., "field": ...}."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def get(name: str) -> Case:
    """The case called `name`; ValueError naming the known cases otherwise."""
    if name not in NAMES:
        known = ", ".join(NAMES) or "none yet"
        raise ValueError(f"unknown case {name!r} (known: {known})")
    case: Case = importlib.import_module(f"hourglass.cases.{name}").CASE
    return case


def every() -> list[Case]:
    return [get(name) for name in NAMES]


# Where the operator's pods find the resource's spec (a ConfigMap mounted as a file), and the
# environment that `hourglass serve` reads; `server_args` and `server_env` spell them so that
# every case's Deployment starts its server the same way.
SPEC_FILE = "/etc/hourglass/spec/spec.json"
GRPC_PORT = 50051
METRICS_PORT = 9090
_IDENTIFIER = re.compile(r"[a-z0-9_]+")
_MAX_SCHEMA = 63


def schema_name(case: str, name: str, namespace: str = "") -> str:
    """The PostgreSQL schema of one resource: `<case>_<namespace>_<name>` (or `<case>_<name>`
    without a namespace), lower case, with every other character as `_`.

    Two resources never share a schema: when that spelling loses information (a `.` or `-`
    became `_`, or it is longer than PostgreSQL's 63 bytes) it is cut short and ends in a hash
    of the exact (case, namespace, name)."""
    parts = [case, namespace, name] if namespace else [case, name]
    plain = "_".join(parts)
    spelled = re.sub(r"[^a-z0-9_]", "_", plain.lower())
    if spelled[0].isdigit():
        spelled = f"c{spelled}"
    lossy = spelled != plain or any("_" in part for part in parts[1:])
    if not lossy and len(spelled) <= _MAX_SCHEMA and _IDENTIFIER.fullmatch(spelled):
        return spelled
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    return f"{spelled[: _MAX_SCHEMA - 11]}_{digest}"


def server_args(
    case: str,
    resource: Resource,
    *,
    grpc_port: int = GRPC_PORT,
    http_port: int | None = None,
    metrics_port: int = METRICS_PORT,
    role: str = "",
) -> list[str]:
    """The container args of a case's server for `resource`: `hourglass serve ...` on all
    interfaces of the pod, reading the spec from SPEC_FILE (mount the resource's spec
    ConfigMap, key `spec.json`, at its folder)."""
    args = [
        "serve", case,
        "--name", resource.name,
        "--resource-namespace", resource.namespace,
        "--spec", SPEC_FILE,
        "--listen", f"0.0.0.0:{grpc_port}",
        "--metrics-listen", f"0.0.0.0:{metrics_port}",
    ]  # fmt: skip
    if http_port is not None:
        args += ["--http-listen", f"0.0.0.0:{http_port}"]
    if role:
        args += ["--role", role]
    return args


def server_env(platform: Platform, *, artifacts: bool = False) -> list[dict[str, Any]]:
    """The environment of a case's server container: the database and Redis URLs from the
    platform's Secret, and the etcd endpoints; with `artifacts`, also the object store's URL
    from the Secret's optional key `artifacts-url` (the server runs without one, and says so
    when asked to store a blob)."""

    def secret(variable: str, key: str, optional: bool = False) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": platform.secret, "key": key}
        if optional:
            ref["optional"] = True
        return {"name": variable, "valueFrom": {"secretKeyRef": ref}}

    env = [
        secret("HOURGLASS_DATABASE_URL", "database-url"),
        secret("HOURGLASS_REDIS_URL", "redis-url"),
        {"name": "HOURGLASS_ETCD_ENDPOINTS", "value": platform.etcd_endpoints},
    ]
    if artifacts:
        env.append(secret("HOURGLASS_ARTIFACTS", "artifacts-url", optional=True))
    return env


def spec_configmap(case: str, resource: Resource) -> dict[str, Any]:
    """The ConfigMap `<case>-<name>-spec` that carries the resource's spec to its server as
    SPEC_FILE. A changed spec changes this object, and the `spec-hash` in its labels lets a
    Deployment's pod template roll when it changes."""
    text = json.dumps(dict(resource.spec), sort_keys=True, separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{case}-{resource.name}-spec",
            "namespace": resource.namespace,
            "labels": {"hourglass.io/spec-hash": spec_hash(resource)},
        },
        "data": {"spec.json": text},
    }


def spec_hash(resource: Resource) -> str:
    """A short digest of the spec: put it in a pod template's annotations so that a changed
    spec rolls the case's pods (a mounted ConfigMap alone would change under them)."""
    text = json.dumps(dict(resource.spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
