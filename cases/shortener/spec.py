"""A UrlShortener resource's spec, checked once: by the operator's `objects` (so a bad spec
never becomes a Deployment) and by the servers at start-up. `SCHEMA` is the same spec for
the API server (operator/crds.py makes the CRD from it), with the same defaults and bounds.

    spec:
      baseUrl: https://sho.rt           # what short links start with (also refused as a target)
      hosts: [sho.rt]                   # more host names of this service, refused as targets
      redirect: 302                     # 301 (browsers cache it) or 302 (every visit counted)
      schemes: [http, https]            # URL schemes a link may point to
      maxUrlLength: 2048
      maxPasteBytes: 1048576
      cacheTtl: 1h                      # Redis read-through TTL; negativeTtl for unknown keys
      negativeTtl: 1m
      cacheShards: 1                    # Redis cache Deployments (no persistence), hash ring
      purgeAfter: 1d                    # expired/deleted keys answer 410 this long, then 404
      readReplicas: 2                   # the HTTP read service
      writeReplicas: 1                  # the gRPC write service (and the visit drainer)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hourglass import durations

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
MAX_REPLICAS = 50
MAX_SHARDS = 16
SCHEMES = ("http", "https")
ALLOWED_SCHEMES = ("http", "https", "ftp", "mailto", "magnet", "tel", "sms", "geo")
_HOST = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$"


def _duration(default: str, what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": what,
        "pattern": DURATION,
        "maxLength": 64,
        "default": default,
    }


def _integer(default: int, low: int, high: int, what: str) -> dict[str, Any]:
    return {
        "type": "integer",
        "description": what,
        "minimum": low,
        "maximum": high,
        "default": default,
    }


SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where short links point from, what they may point to, caching, replicas.",
    "properties": {
        "baseUrl": {
            "type": "string",
            "description": "The public address short links start with (https://sho.rt).",
            "maxLength": 256,
            "pattern": r"^https?://[^/?#\s]+/?$",
        },
        "hosts": {
            "type": "array",
            "description": "More host names of this service: links to them are refused.",
            "items": {"type": "string", "maxLength": 253, "pattern": _HOST},
            "maxItems": 32,
            "x-kubernetes-list-type": "set",
        },
        "redirect": {
            "type": "integer",
            "description": "301 (permanent, browsers cache it) or 302.",
            "enum": [301, 302],
            "default": 302,
        },
        "schemes": {
            "type": "array",
            "description": f"URL schemes a link may point to, of: {', '.join(ALLOWED_SCHEMES)}.",
            "items": {"type": "string", "enum": list(ALLOWED_SCHEMES)},
            "minItems": 1,
            "x-kubernetes-list-type": "set",
            "default": list(SCHEMES),
        },
        "maxUrlLength": _integer(2048, 16, 8192, "Longest URL accepted, in characters."),
        "maxPasteBytes": _integer(1 << 20, 1, 3 << 20, "Largest paste body, in bytes."),
        "cacheTtl": _duration("1h", "How long Redis keeps a resolved key."),
        "negativeTtl": _duration("1m", "How long Redis remembers that a key is unknown."),
        "cacheShards": _integer(
            1,
            1,
            MAX_SHARDS,
            "Redis cache shards (a Deployment each, no persistence),"
            " on a consistent-hash ring of the key.",
        ),
        "purgeAfter": _duration(
            "1d",
            "How long an expired or deleted key answers 410 before"
            " the purge removes it (then 404).",
        ),
        "readReplicas": _integer(2, 1, MAX_REPLICAS, "Replicas of the HTTP read service."),
        "writeReplicas": _integer(1, 1, MAX_REPLICAS, "Replicas of the gRPC write service."),
    },
}
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Base", "type": "string", "jsonPath": ".spec.baseUrl"},
    {"name": "Readers", "type": "integer", "jsonPath": ".spec.readReplicas"},
    {"name": "Shards", "type": "integer", "jsonPath": ".spec.cacheShards"},
)


@dataclass(frozen=True, slots=True)
class Spec:
    base_url: str
    hosts: tuple[str, ...]  # lower case, with and without their port
    redirect: int
    schemes: tuple[str, ...]
    max_url_length: int
    max_paste_bytes: int
    cache_ttl: float
    negative_ttl: float
    cache_shards: int
    purge_after: float
    read_replicas: int
    write_replicas: int


def _seconds(spec: Mapping[str, Any], name: str, *, low: float = 0) -> float:
    text = spec.get(name, SCHEMA["properties"][name]["default"])
    if not isinstance(text, str):
        raise ValueError(f"spec.{name}: must be a duration such as 1h")
    try:
        value = durations.parse(text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"spec.{name}: {exc}") from None
    if value < low:
        raise ValueError(f"spec.{name}: at least {low:g}s")
    return value


def _int(spec: Mapping[str, Any], name: str) -> int:
    field = SCHEMA["properties"][name]
    value = spec.get(name, field["default"])
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"spec.{name}: must be a whole number")
    if not field["minimum"] <= value <= field["maximum"]:
        raise ValueError(f"spec.{name}: must be between {field['minimum']} and {field['maximum']}")
    return value


def parse(spec: Mapping[str, Any]) -> Spec:
    """ValueError "spec.<field>: <reason>" for the first field that is wrong."""
    known = set(SCHEMA["properties"])
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"spec.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    base = spec.get("baseUrl", "")
    hosts: list[str] = []
    if base:
        parts = urlsplit(base) if isinstance(base, str) else None
        if parts is None or parts.scheme not in SCHEMES or not parts.hostname or parts.query:
            raise ValueError("spec.baseUrl: must be http(s)://HOST[:PORT] such as https://sho.rt")
        hosts.append(parts.netloc.lower())
        base = base.rstrip("/")
    extra = spec.get("hosts", [])
    if not isinstance(extra, list) or not all(isinstance(h, str) and h for h in extra):
        raise ValueError("spec.hosts: must be a list of host names")
    hosts += [h.lower().rstrip(".") for h in extra]
    redirect = spec.get("redirect", 302)
    if redirect not in (301, 302) or isinstance(redirect, bool):
        raise ValueError("spec.redirect: must be 301 or 302")
    schemes = spec.get("schemes", list(SCHEMES))
    if not isinstance(schemes, list) or not schemes:
        raise ValueError("spec.schemes: must be a non-empty list such as [http, https]")
    for index, scheme in enumerate(schemes):
        if scheme not in ALLOWED_SCHEMES:
            raise ValueError(
                f"spec.schemes[{index}]: {scheme!r} is not one of {', '.join(ALLOWED_SCHEMES)}"
            )
    return Spec(
        base_url=base,
        hosts=tuple(dict.fromkeys(hosts)),
        redirect=int(redirect),
        schemes=tuple(dict.fromkeys(schemes)),
        max_url_length=_int(spec, "maxUrlLength"),
        max_paste_bytes=_int(spec, "maxPasteBytes"),
        cache_ttl=_seconds(spec, "cacheTtl", low=1),
        negative_ttl=_seconds(spec, "negativeTtl", low=1),
        cache_shards=_int(spec, "cacheShards"),
        purge_after=_seconds(spec, "purgeAfter"),
        read_replicas=_int(spec, "readReplicas"),
        write_replicas=_int(spec, "writeReplicas"),
    )
