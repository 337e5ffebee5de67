"""Pieces of the objects every case's `objects` returns, spelled once: the labels, the
restricted security contexts of the chart's components, a server Deployment (the hourglass
image running `hourglass serve <case> ...` with the spec ConfigMap mounted), and the
ScheduledJobs whose pods call the server's admin RPCs through `hourglass <case> <action>`
(job pods hold no database credentials). Pure, like the `objects` functions that use it."""

from __future__ import annotations

import posixpath
from typing import Any

from hourglass import cases
from hourglass.cases import Platform, Resource

# The ScheduledJob CRD's group/version (charts/hourglass/crds/scheduledjobs.hourglass.io.yaml),
# which is also what the operator lets a case own (operator/owned.py, KINDS).
SCHEDULED_JOB_API = "hourglass.io/v1"

SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def labels(case: str, resource: Resource, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": case,
        "app.kubernetes.io/instance": resource.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "hourglass",
        "app.kubernetes.io/managed-by": "hourglass-operator",
    }


def selector(case: str, resource: Resource, component: str | None = None) -> dict[str, str]:
    """The labels that pick a Deployment's pods (and its Service's endpoints)."""
    chosen = {"app.kubernetes.io/name": case, "app.kubernetes.io/instance": resource.name}
    if component is not None:
        chosen["app.kubernetes.io/component"] = component
    return chosen


def deployment(
    *,
    name: str,
    resource: Resource,
    container: dict[str, Any],
    replicas: int,
    pod_labels: dict[str, str],
    match: dict[str, str],
    config: str | None,
) -> dict[str, Any]:
    """A Deployment of one container with the restricted contexts, a /tmp emptyDir, and
    (with `config`) the spec ConfigMap mounted where `hourglass serve --spec` reads it; a
    changed spec rolls the pods (the spec-hash annotation)."""
    container = {**container, "securityContext": SECURITY_CONTEXT}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if config is not None:
        folder = posixpath.dirname(cases.SPEC_FILE)
        mounts.insert(0, {"name": "spec", "mountPath": folder, "readOnly": True})
        volumes.insert(0, {"name": "spec", "configMap": {"name": config}})
    container["volumeMounts"] = mounts
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": resource.namespace, "name": name, "labels": pod_labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"hourglass.io/spec-hash": cases.spec_hash(resource)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def scheduled_job(
    *,
    case: str,
    resource: Resource,
    platform: Platform,
    name: str,
    action: str,
    every: str,
    server: str,
) -> dict[str, Any]:
    """A ScheduledJob that runs `hourglass <case> <action> --server <server>` every `every`."""
    return {
        "apiVersion": SCHEDULED_JOB_API,
        "kind": "ScheduledJob",
        "metadata": {
            "namespace": resource.namespace,
            "name": name,
            "labels": labels(case, resource, action),
        },
        "spec": {
            "schedule": {"every": {"interval": every}},
            "task": {
                "image": platform.image,
                "command": ["hourglass"],
                "args": [case, action, "--server", server],
            },
            "maxAttempts": 3,
            "timeout": "10m",
            "overlap": "skip",
        },
    }
