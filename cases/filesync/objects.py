"""A FileSync resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`);
- a Deployment `fs-<name>` of `hourglass serve filesync ...` (gRPC, the HTTP face for
  downloads and share links), with the object store's URL from the platform Secret's
  optional `artifacts-url`, and its Service (gRPC, HTTP and metrics ports);
- three ScheduledJobs whose pods call the server's admin RPCs (`hourglass filesync
  gc|retention|expire --server ...`): job pods hold no credentials.

ownerReferences are added by the operator to everything it applies.
"""

from __future__ import annotations

from typing import Any

from hourglass import cases
from hourglass.cases import GRPC_PORT, METRICS_PORT, Platform, Resource, manifests
from hourglass.cases.filesync import spec

CASE = "filesync"
HTTP_PORT = 8080
# The admin actions and how often their ScheduledJobs run them.
JOBS = (("gc", "1h"), ("retention", "1h"), ("expire", "15m"))


def names(resource: Resource) -> dict[str, str]:
    base = f"fs-{resource.name}"
    return {
        "server": base,
        "config": f"{CASE}-{resource.name}-spec",  # cases.spec_configmap's name
        **{action: f"{base}-{action}" for action, _ in JOBS},
    }


def address(resource: Resource) -> str:
    """The server's gRPC address inside the cluster, as the batch jobs dial it."""
    return f"{names(resource)['server']}.{resource.namespace}.svc:{GRPC_PORT}"


def labels(resource: Resource, component: str) -> dict[str, str]:
    return manifests.labels(CASE, resource, component)


def objects(resource: Resource, platform: Platform) -> list[dict[str, Any]]:
    """ValueError "spec.<field>: ..." for a bad spec, before any object exists."""
    parsed = spec.parse(resource.spec)
    n = names(resource)
    selector = manifests.selector(CASE, resource)
    config = cases.spec_configmap(CASE, resource)
    config["metadata"]["labels"].update(labels(resource, "config"))
    container = {
        "name": "server",
        "image": platform.image,
        "args": cases.server_args(CASE, resource, http_port=HTTP_PORT),
        "env": [
            *cases.server_env(platform, artifacts=True),
            {"name": "HOURGLASS_LOG_FORMAT", "value": "json"},
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
            "limits": {"memory": "1Gi"},
        },
    }
    out: list[dict[str, Any]] = [
        config,
        manifests.deployment(
            name=n["server"],
            resource=resource,
            container=container,
            replicas=parsed.replicas,
            pod_labels=labels(resource, "server"),
            match=selector,
            config=n["config"],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "namespace": resource.namespace,
                "name": n["server"],
                "labels": labels(resource, "server"),
            },
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
    ]
    for action, every in JOBS:
        out.append(
            manifests.scheduled_job(
                case=CASE,
                resource=resource,
                platform=platform,
                name=n[action],
                action=action,
                every=every,
                server=address(resource),
            )
        )
    return out
