"""Between a case's custom resource and the objects it owns: plain functions, no cluster.

- `prepare` stamps what a case's pure `objects` function returned with what makes the
  objects the resource's: its namespace, a controller `ownerReference`, and the labels by
  which the operator finds them again (`OWNER_LABEL` carries the resource's uid, which is
  unique where a name is not, and fits a label value where `<kind>/<name>` may not).
- `stale` picks, among the objects found under that label, those the case no longer returns.
- `conditions` turns the owned Deployments' status into the resource's Ready, Progressing
  and Degraded conditions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GROUP = "hourglass.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "hourglass-operator"
OWNER_LABEL = f"{GROUP}/owner-uid"
CASE_LABEL = f"{GROUP}/case"
# On the pods of a case's Deployments: the chart's NetworkPolicies admit these pods (in the
# release's namespace, never a job pod) to PostgreSQL, etcd and Redis.
SERVER_LABEL = f"{GROUP}/case-server"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}


@dataclass(frozen=True)
class Kind:
    """A kind of object a case may own: where its REST collection lives."""

    api_version: str
    kind: str
    plural: str

    @property
    def prefix(self) -> str:
        """`api/v1` for the core group, `apis/<group>/<version>` for the others."""
        return (
            f"api/{self.api_version}" if "/" not in self.api_version else f"apis/{self.api_version}"
        )

    def collection(self, namespace: str) -> str:
        return f"/{self.prefix}/namespaces/{namespace}/{self.plural}"


# What a case may own, and nothing else: the operator's RBAC grants exactly these (the
# chart's `hourglass.operatorRules`). Deleted in this order, pods' owners first.
KINDS: tuple[Kind, ...] = (
    Kind("hourglass.io/v1", "ScheduledJob", "scheduledjobs"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ConfigMap", "configmaps"),
    # A case's own fences (the shortener's cache shards admit only its servers).
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
)
_BY_KIND = {(kind.api_version, kind.kind): kind for kind in KINDS}


class CaseError(ValueError):
    """A case returned an object the operator will not apply; says which and why."""


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the objects."""

    kind: str
    name: str
    namespace: str
    uid: str
    case: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def selector(self) -> str:
        return f"{OWNER_LABEL}={self.uid}"


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    key = (str(manifest.get("apiVersion", "")), str(manifest.get("kind", "")))
    found = _BY_KIND.get(key)
    if found is None:
        allowed = ", ".join(f"{k.api_version} {k.kind}" for k in KINDS)
        raise CaseError(f"{key[0]} {key[1]}: a case may own only {allowed}")
    return found


def key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name): what identifies an owned object inside the resource's namespace."""
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


def prepare(manifests: Iterable[Mapping[str, Any]], owner: Owner) -> list[dict[str, Any]]:
    """Copies of `manifests` in the owner's namespace, owned by it and labelled for it."""
    prepared: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for manifest in manifests:
        kind = kind_of(manifest)
        body = copy.deepcopy(dict(manifest))
        metadata = body.setdefault("metadata", {})
        name = metadata.get("name")
        if not name or not isinstance(name, str):
            raise CaseError(f"a {kind.kind} without metadata.name")
        namespace = metadata.get("namespace") or owner.namespace
        if namespace != owner.namespace:
            raise CaseError(
                f"{kind.kind} {name}: namespace {namespace!r} is not the resource's "
                f"{owner.namespace!r} (an owner must share its objects' namespace)"
            )
        if (kind.kind, name) in seen:
            raise CaseError(f"{kind.kind} {name} returned twice")
        seen.add((kind.kind, name))
        metadata["namespace"] = owner.namespace
        metadata["labels"] = {
            **(metadata.get("labels") or {}),
            **MANAGED_BY,
            OWNER_LABEL: owner.uid,
            CASE_LABEL: owner.case,
        }
        metadata["ownerReferences"] = [owner.reference()]
        if kind.kind == "Deployment":
            template = body.setdefault("spec", {}).setdefault("template", {})
            pod = template.setdefault("metadata", {})
            pod["labels"] = {**(pod.get("labels") or {}), SERVER_LABEL: owner.case}
        prepared.append(body)
    return prepared


def owned_by(manifest: Mapping[str, Any], uid: str) -> bool:
    """True when `uid` is the object's controller: the label alone can be copied by anyone."""
    references = (manifest.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid and ref.get("controller") for ref in references)


def stale(
    found: Iterable[Mapping[str, Any]], desired: Iterable[Mapping[str, Any]], uid: str
) -> list[dict[str, Any]]:
    """The objects found under the owner's label that the case no longer returns and that the
    owner controls."""
    keep = {key(manifest) for manifest in desired}
    return [
        dict(manifest)
        for manifest in found
        if key(manifest) not in keep and owned_by(manifest, uid)
    ]


# -- status ------------------------------------------------------------------------------------


def deployment_state(deployment: Mapping[str, Any]) -> tuple[str, str]:
    """("available" | "progressing" | "failed", why) for one Deployment, as the Deployment
    controller reports it: its pods pass their readiness probe (the case's health check)."""
    name = deployment.get("metadata", {}).get("name", "?")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            return (
                "failed",
                f"Deployment {name}: {condition.get('message') or condition.get('reason')}",
            )
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return (
                "failed",
                f"Deployment {name}: {condition.get('message') or condition.get('reason')}",
            )
    if int(status.get("observedGeneration") or 0) < generation:
        return "progressing", f"Deployment {name}: rollout of generation {generation} not seen yet"
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted or available < wanted:
        return (
            "progressing",
            f"Deployment {name}: {available}/{wanted} available, {updated} updated",
        )
    return "available", f"Deployment {name}: {available}/{wanted} available"


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _condition(
    previous: Mapping[str, Mapping[str, Any]],
    kind: str,
    *,
    true: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> dict[str, Any]:
    status = "True" if true else "False"
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def conditions(
    previous: Iterable[Mapping[str, Any]] | None,
    *,
    generation: int,
    deployments: Sequence[Mapping[str, Any]],
    error: tuple[str, str] | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Ready, Progressing and Degraded for a resource whose objects of `generation` were
    applied (or not: `error` is (reason, message) of why not).

    Ready: every owned Deployment is available. Progressing: some are still rolling out.
    Degraded: the objects could not be applied, or a Deployment failed to progress.
    lastTransitionTime changes only when a condition's status does, so a refresh that
    changes nothing writes nothing."""
    at = now or _now()
    before = {str(c.get("type")): c for c in previous or () if c.get("type")}
    states = [deployment_state(deployment) for deployment in deployments]
    failed = [why for state, why in states if state == "failed"]
    rolling = [why for state, why in states if state == "progressing"]

    def make(kind: str, true: bool, reason: str, message: str) -> dict[str, Any]:
        return _condition(
            before, kind, true=true, reason=reason, message=message, generation=generation, now=at
        )

    if error is not None:
        reason, message = error
        return [
            make("Ready", False, reason, message),
            make("Progressing", False, reason, message),
            make("Degraded", True, reason, message),
        ]
    if failed:
        text = "; ".join(failed)
        ready = make("Ready", False, "DeploymentFailed", text)
        progressing = make("Progressing", False, "DeploymentFailed", text)
        degraded = make("Degraded", True, "DeploymentFailed", text)
        return [ready, progressing, degraded]
    degraded = make("Degraded", False, "Applied", f"generation {generation} applied")
    if rolling:
        text = "; ".join(rolling)
        ready = make("Ready", False, "RollingOut", text)
        progressing = make("Progressing", True, "RollingOut", text)
    else:
        count = len(deployments)
        ready = make("Ready", True, "Available", f"{count} Deployment(s) available")
        progressing = make("Progressing", False, "Complete", f"generation {generation} rolled out")
    return [ready, progressing, degraded]


def endpoints(services: Iterable[Mapping[str, Any]]) -> list[str]:
    """`<service>.<namespace>.svc:<port>` for every port of every owned Service, for the
    status: where a user's clients reach the case."""
    found = []
    for service in services:
        metadata = service.get("metadata") or {}
        for port in (service.get("spec") or {}).get("ports") or ():
            address = f"{metadata.get('name')}.{metadata.get('namespace')}.svc:{port.get('port')}"
            label = port.get("name")
            found.append(f"{label}={address}" if label else address)
    return sorted(found)
