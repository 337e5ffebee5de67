"""A FileSync resource's spec, checked once: by the operator's `objects` (so a bad spec never
becomes a Deployment) and by the server at start-up. `SCHEMA` is the same spec for the API
server (operator/crds.py makes the CRD from it), with the same defaults and bounds.

    spec:
      baseUrl: https://files.example.com   # what share links start with (optional)
      replicas: 1                          # the sync service (gRPC + HTTP)
      maxChunkBytes: 1048576               # largest chunk accepted (the client cuts <= 1 MiB)
      keepVersions: 100                    # versions kept per file besides the head...
      keepFor: 30d                         # ...and for how long
      gcGrace: 1h                          # an unreferenced chunk is kept this long
      shareMaxTtl: 30d                     # longest life of a share link
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hourglass import durations
from hourglass.cases.filesync import chunking

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
MAX_CHUNK = 3 * 1024 * 1024


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
    "description": "The sync service's size, chunk limit, version retention and share links.",
    "properties": {
        "baseUrl": {
            "type": "string",
            "description": "The public address share links start with (https://files.example).",
            "maxLength": 256,
            "pattern": r"^https?://[^/?#\s]+/?$",
        },
        "replicas": _integer(1, 1, 20, "Replicas of the sync service (gRPC and HTTP)."),
        "maxChunkBytes": _integer(
            chunking.LARGEST,
            chunking.LARGEST,
            MAX_CHUNK,
            "Largest chunk accepted, in bytes (clients cut at most 1 MiB).",
        ),
        "keepVersions": _integer(
            100, 1, 100_000, "Old versions kept per file besides the head (the newest ones)."
        ),
        "keepFor": _duration("30d", "Old versions older than this are deleted (not the head)."),
        "gcGrace": _duration(
            "1h", "Chunks no version refers to are deleted once untouched this long."
        ),
        "shareMaxTtl": _duration("30d", "The longest a share link may live."),
    },
}
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Keep", "type": "integer", "jsonPath": ".spec.keepVersions"},
)


@dataclass(frozen=True, slots=True)
class Spec:
    base_url: str
    replicas: int
    max_chunk_bytes: int
    keep_versions: int
    keep_for: float
    gc_grace: float
    share_max_ttl: float


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
    if base:
        parts = urlsplit(base) if isinstance(base, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("spec.baseUrl: must be http(s)://HOST[:PORT]")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("spec.baseUrl: must be http(s)://HOST[:PORT] with no path")
        base = base.rstrip("/")
    return Spec(
        base_url=base,
        replicas=_int(spec, "replicas"),
        max_chunk_bytes=_int(spec, "maxChunkBytes"),
        keep_versions=_int(spec, "keepVersions"),
        keep_for=_seconds(spec, "keepFor"),
        gc_grace=_seconds(spec, "gcGrace"),
        share_max_ttl=_seconds(spec, "shareMaxTtl", low=1),
    )
