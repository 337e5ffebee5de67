"""A MetricsPipeline resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`);
- the server: a Deployment `mp-<name>` of `hourglass serve metrics --role server` (gRPC
  ingest and query, HTTP line-protocol push and Prometheus-compatible query API) and its
  Service (gRPC, HTTP, metrics);
- the consumers: a Deployment `mp-<name>-consumer` of `... --role consumer` (broker ->
  column files), spec.consumers replicas, ready when its metrics port answers;
- three ScheduledJobs whose pods call the server's admin RPCs (`hourglass metrics
  compact|downsample|retention --server ...`): job pods hold no credentials.

Both Deployments get the platform Secret's database, Redis and object-store URLs. The
operator adds ownerReferences to everything it applies.
"""

from __future__ import annotations

from typing import Any

from hourglass import cases
from hourglass.cases import GRPC_PORT, METRICS_PORT, Platform, Resource, manifests
from hourglass.cases.metrics import spec

CASE = "metrics"
HTTP_PORT = 8080
JOBS = {"compact": "5m", "downsample": "15m", "retention": "1h"}


def names(resource: Resource) -> dict[str, str]:
    base = f"mp-{resource.name}"
    return {
        "server": base,
        "consumer": f"{base}-consumer",
        "config": f"{CASE}-{resource.name}-spec",  # cases.spec_configmap's name
        **{job: f"{base}-{job}" for job in JOBS},
    }


def address(resource: Resource) -> str:
    """The server's gRPC address inside the cluster, as the batch jobs dial it."""
    return f"{names(resource)['server']}.{resource.namespace}.svc:{GRPC_PORT}"


def labels(resource: Resource, component: str) -> dict[str, str]:
    return manifests.labels(CASE, resource, component)


def _container(resource: Resource, platform: Platform, role: str) -> dict[str, Any]:
    server = role == "server"
    ports = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    if server:
        ports[:0] = [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        ]
    ready: dict[str, Any] = (
        {"httpGet": {"path": "/healthz", "port": "http"}}
        if server
        else {"tcpSocket": {"port": "metrics"}}
    )
    alive: dict[str, Any] = (
        {"grpc": {"port": GRPC_PORT}} if server else {"tcpSocket": {"port": "metrics"}}
    )
    return {
        "name": role,
        "image": platform.image,
        "args": cases.server_args(
            CASE, resource, http_port=HTTP_PORT if server else None, role=role
        ),
        "env": [
            *cases.server_env(platform, artifacts=True),
            {"name": "HOURGLASS_LOG_FORMAT", "value": "json"},
        ],
        "ports": ports,
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            **alive,
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "200m" if server else "500m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
    }


def objects(resource: Resource, platform: Platform) -> list[dict[str, Any]]:
    """ValueError "spec.<field>: ..." for a bad spec, before any object exists."""
    parsed = spec.parse(resource.spec)
    n = names(resource)
    meta = {"namespace": resource.namespace}
    config = cases.spec_configmap(CASE, resource)
    config["metadata"]["labels"].update(labels(resource, "config"))
    made: list[dict[str, Any]] = [config]
    for role, replicas in (("server", parsed.replicas), ("consumer", parsed.consumers)):
        made.append(
            manifests.deployment(
                name=n[role],
                resource=resource,
                container=_container(resource, platform, role),
                replicas=replicas,
                pod_labels=labels(resource, role),
                match=manifests.selector(CASE, resource, role),
                config=n["config"],
            )
        )
    made.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "name": n["server"], "labels": labels(resource, "server")},
            "spec": {
                "selector": manifests.selector(CASE, resource, "server"),
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
        }
    )
    for job, every in JOBS.items():
        made.append(
            manifests.scheduled_job(
                case=CASE,
                resource=resource,
                platform=platform,
                name=n[job],
                action=job,
                every=every,
                server=address(resource),
            )
        )
    return made
