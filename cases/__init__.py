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

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every case, by package name. A case is listed here once it works end to end.
NAMES: tuple[str, ...] = ()


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
    # Runs the server until `stop` is set.
    serve: Callable[[Settings, Any], Awaitable[None]]
    # Pure: the resource -> the manifests the operator applies (Deployments, Services,
    # ConfigMaps, ScheduledJobs), without ownerReferences (the operator adds them).
    objects: Callable[[Resource, Platform], list[dict[str, Any]]]
    # The folder with the case's schema.sql and numbered migrations.
    migrations: Path


def get(name: str) -> Case:
    """The case called `name`; ValueError naming the known cases otherwise."""
    if name not in NAMES:
        known = ", ".join(NAMES) or "none yet"
        raise ValueError(f"unknown case {name!r} (known: {known})")
    case: Case = importlib.import_module(f"hourglass.cases.{name}").CASE
    return case


def every() -> list[Case]:
    return [get(name) for name in NAMES]
