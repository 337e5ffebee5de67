"""A Feed resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`), mounted where the server
  reads it;
- a Deployment of `hourglass serve feed --name <name> ...` (each replica serves gRPC, runs
  both fan-out lanes, and leases its own Snowflake worker id from etcd), with gRPC probes and
  the restricted security context of the chart's components;
- a Service with the gRPC and metrics ports;
- two ScheduledJobs whose pods call the server's admin RPCs (`hourglass feed trim` and
  `hourglass feed prewarm`): job pods hold no database credentials.

ownerReferences are not set here: the operator adds them to everything it applies.
"""

from __future__ import annotations

from typing import Any

from hourglass import cases
from hourglass.cases import GRPC_PORT, METRICS_PORT, Platform, Resource, manifests
from hourglass.cases.feed import spec

CASE = "feed"
TRIM_EVERY = "1h"
PREWARM_EVERY = "30m"


def names(resource: Resource) -> dict[str, str]:
    base = f"feed-{resource.name}"
    return {
        "server": base,
        "config": f"{CASE}-{resource.name}-spec",  # cases.spec_configmap's name
        "trim": f"{base}-trim",
        "prewarm": f"{base}-prewarm",
    }


def address(resource: Resource) -> str:
    """The server's gRPC address inside the cluster, as the batch jobs dial it."""
    return f"{names(resource)['server']}.{resource.namespace}.svc:{GRPC_PORT}"


def objects(resource: Resource, platform: Platform) -> list[dict[str, Any]]:
    """ValueError "spec.<field>: ..." for a bad spec, before any object exists."""
    parsed = spec.parse(resource.spec)
    n = names(resource)
    meta = {"namespace": resource.namespace}
    selector = manifests.selector(CASE, resource)
    config = cases.spec_configmap(CASE, resource)
    config["metadata"]["labels"].update(manifests.labels(CASE, resource, "config"))
    container = {
        "name": "server",
        "image": platform.image,
        "args": cases.server_args(CASE, resource),
        "env": [
            *cases.server_env(platform, artifacts=True),
            {"name": "HOURGLASS_LOG_FORMAT", "value": "json"},
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "grpc": {"port": GRPC_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "200m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
    }
    deployment = manifests.deployment(
        name=n["server"],
        resource=resource,
        container=container,
        replicas=parsed.replicas,
        pod_labels=manifests.labels(CASE, resource, "server"),
        match=selector,
        config=n["config"],
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**meta, "name": n["server"],
                     "labels": manifests.labels(CASE, resource, "server")},
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }  # fmt: skip
    jobs = [
        manifests.scheduled_job(
            case=CASE, resource=resource, platform=platform, name=n[action], action=action,
            every=every, server=address(resource),
        )
        for action, every in (("trim", TRIM_EVERY), ("prewarm", PREWARM_EVERY))
    ]  # fmt: skip
    return [config, deployment, service, *jobs]
