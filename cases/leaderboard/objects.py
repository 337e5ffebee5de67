"""A Leaderboard resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`), mounted at the file the
  server reads (`hourglass.cases.SPEC_FILE`);
- a Deployment of the hourglass image running `hourglass serve leaderboard --name <name> ...`
  as every case's server runs (`hourglass.cases.server_args` and `server_env`: the platform
  Secret's `database-url` and `redis-url`, the etcd endpoints), with probes, and the same
  restricted security context as the chart's components;
- a Service with the gRPC, HTTP and metrics ports;
- two ScheduledJobs whose pods call the server's admin RPCs (`hourglass leaderboard rollup`
  and `... retention`): job pods hold no database credentials, so the batch work goes through
  the server.

ownerReferences are not set here: the operator adds them to everything it applies.
"""

from __future__ import annotations

from typing import Any

from hourglass import cases
from hourglass.cases import GRPC_PORT, METRICS_PORT, Platform, Resource, manifests
from hourglass.cases.leaderboard import buckets, spec

CASE = "leaderboard"
HTTP_PORT = 8080
SCHEDULED_JOB_API = manifests.SCHEDULED_JOB_API
SECURITY_CONTEXT = manifests.SECURITY_CONTEXT
POD_SECURITY_CONTEXT = manifests.POD_SECURITY_CONTEXT


def names(resource: Resource) -> dict[str, str]:
    base = f"lb-{resource.name}"
    return {
        "server": base,
        "config": f"{CASE}-{resource.name}-spec",  # cases.spec_configmap's name
        "rollup": f"{base}-rollup",
        "retention": f"{base}-retention",
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
    meta = {"namespace": resource.namespace}
    selector = manifests.selector(CASE, resource)
    config = cases.spec_configmap(CASE, resource)
    config["metadata"]["labels"].update(labels(resource, "config"))
    return [
        config,
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
    container = {
        "name": "server",
        "image": platform.image,
        # `hourglass serve leaderboard --name <name> --namespace <ns> --spec SPEC_FILE ...`
        "args": cases.server_args(CASE, resource, http_port=HTTP_PORT),
        "env": [
            *cases.server_env(platform),
            # A global option of the CLI: set here, it needs no place in the args.
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
            "limits": {"memory": "512Mi"},
        },
    }
    return manifests.deployment(
        name=n["server"],
        resource=resource,
        container=container,
        replicas=parsed.replicas,
        pod_labels=labels(resource, "server"),
        match=selector,
        config=n["config"],
    )


def _scheduled_job(
    resource: Resource,
    platform: Platform,
    name: str,
    what: str,
    every: str,
    meta: dict[str, str],
) -> dict[str, Any]:
    return manifests.scheduled_job(
        case=CASE, resource=resource, platform=platform, name=name, action=what, every=every,
        server=address(resource),
    )  # fmt: skip
