"""A Leaderboard resource -> the objects the operator applies for it (pure; unit-tested).

- a ConfigMap with the spec, which the server reads (`HOURGLASS_CASE_SPEC`);
- a Deployment of the hourglass image running `hourglass serve leaderboard --name <name>`,
  with the platform Secret's `database-url` and `redis-url`, probes, and the same restricted
  security context as the chart's components;
- a Service with the gRPC, HTTP and metrics ports;
- two ScheduledJobs whose pods call the server's admin RPCs (`hourglass leaderboard rollup`
  and `... retention`): job pods hold no database credentials, so the batch work goes through
  the server.

ownerReferences are not set here: the operator adds them to everything it applies.
"""

from __future__ import annotations

import json
from typing import Any

from hourglass.cases import Platform, Resource
from hourglass.cases.leaderboard import buckets, spec

GRPC_PORT = 50051
HTTP_PORT = 8080
METRICS_PORT = 9090
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


def names(resource: Resource) -> dict[str, str]:
    base = f"lb-{resource.name}"
    return {
        "server": base,
        "config": f"{base}-spec",
        "rollup": f"{base}-rollup",
        "retention": f"{base}-retention",
    }


def address(resource: Resource) -> str:
    """The server's gRPC address inside the cluster, as the batch jobs dial it."""
    return f"{names(resource)['server']}.{resource.namespace}.svc:{GRPC_PORT}"


def labels(resource: Resource, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "leaderboard",
        "app.kubernetes.io/instance": resource.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "hourglass",
        "app.kubernetes.io/managed-by": "hourglass-operator",
    }


def objects(resource: Resource, platform: Platform) -> list[dict[str, Any]]:
    """ValueError "spec.<field>: ..." for a bad spec, before any object exists."""
    parsed = spec.parse(resource.spec)
    n = names(resource)
    meta = {"namespace": resource.namespace}
    selector = {
        "app.kubernetes.io/name": "leaderboard",
        "app.kubernetes.io/instance": resource.name,
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {**meta, "name": n["config"], "labels": labels(resource, "config")},
            "data": {"spec.json": json.dumps(dict(resource.spec), sort_keys=True)},
        },
        _deployment(resource, platform, parsed, n, meta, selector),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "name": n["server"], "labels": labels(resource, "server")},
            "spec": {
                "selector": selector,
                "ports": [
                    {
                        "name": "grpc",
                        "port": GRPC_PORT,
                        "targetPort": "grpc",
                        "appProtocol": "grpc",
                    },
                    {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
                ],
            },
        },
        _scheduled_job(resource, platform, n["rollup"], "rollup", _rollup_every(parsed), meta),
        _scheduled_job(resource, platform, n["retention"], "retention", "1h", meta),
    ]


def _rollup_every(parsed: spec.Spec) -> str:
    """Often enough that the next-coarser buckets appear soon after they end: every 10
    smallest buckets, at least a minute and at most the next size."""
    nxt = parsed.sizes[1] if len(parsed.sizes) > 1 else parsed.sizes[0]
    return buckets.spell(max(60, min(parsed.smallest * 10, nxt)))


def _deployment(
    resource: Resource,
    platform: Platform,
    parsed: spec.Spec,
    n: dict[str, str],
    meta: dict[str, str],
    selector: dict[str, str],
) -> dict[str, Any]:
    def secret(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": platform.secret, "key": key}}

    container = {
        "name": "server",
        "image": platform.image,
        "args": ["serve", "leaderboard", "--name", resource.name, "--log-format", "json"],
        "env": [
            {"name": "HOURGLASS_DATABASE_URL", "valueFrom": secret("database-url")},
            {"name": "HOURGLASS_REDIS_URL", "valueFrom": secret("redis-url")},
            {"name": "HOURGLASS_ETCD_ENDPOINTS", "value": platform.etcd_endpoints},
            {"name": "HOURGLASS_LISTEN", "value": f"0.0.0.0:{GRPC_PORT}"},
            {"name": "HOURGLASS_HTTP_LISTEN", "value": f"0.0.0.0:{HTTP_PORT}"},
            {"name": "HOURGLASS_METRICS_LISTEN", "value": f"0.0.0.0:{METRICS_PORT}"},
            {"name": "HOURGLASS_CASE_SPEC", "value": "/etc/hourglass/spec/spec.json"},
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "grpc": {"port": GRPC_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": SECURITY_CONTEXT,
        "volumeMounts": [
            {"name": "spec", "mountPath": "/etc/hourglass/spec", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "name": n["server"], "labels": labels(resource, "server")},
        "spec": {
            "replicas": parsed.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels(resource, "server"),
                    # A changed spec rolls the pods, so they read the new ConfigMap.
                    "annotations": {"hourglass.io/generation": str(resource.generation)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    "containers": [container],
                    "volumes": [
                        {"name": "spec", "configMap": {"name": n["config"]}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _scheduled_job(
    resource: Resource,
    platform: Platform,
    name: str,
    what: str,
    every: str,
    meta: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": SCHEDULED_JOB_API,
        "kind": "ScheduledJob",
        "metadata": {**meta, "name": name, "labels": labels(resource, what)},
        "spec": {
            "schedule": {"every": {"interval": every}},
            "task": {
                "image": platform.image,
                "command": ["hourglass"],
                "args": ["leaderboard", what, "--server", address(resource)],
            },
            "maxAttempts": 3,
            "timeout": "10m",
            "overlap": "skip",
        },
    }
