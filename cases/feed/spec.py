"""A Feed resource's spec, checked once: by the operator's `objects` (so a bad spec never
becomes a Deployment) and by the server at start-up. `SCHEMA` is the same spec for the API
server (operator/crds.py makes the CRD from it), with the same defaults and bounds.

    spec:
      replicas: 2               # server pods (each leases its own Snowflake worker id)
      hotThreshold: 100000      # authors with more followers are merged at read time
      timelineSize: 800         # the newest post ids kept per home timeline in Redis
      fanoutChunk: 1000         # followers per fan-out chunk (the unit of fairness)
      maxMediaBytes: 67108864   # the largest image or video upload
      uploadExpiry: 1d          # an unfinished upload is dropped after this long
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hourglass import durations

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
MAX_REPLICAS = 50


def _integer(default: int, low: int, high: int, what: str) -> dict[str, Any]:
    return {"type": "integer", "description": what, "minimum": low, "maximum": high,
            "default": default}  # fmt: skip


INTEGERS: dict[str, tuple[int, int, int]] = {
    # field: (default, minimum, maximum)
    "replicas": (1, 1, MAX_REPLICAS),
    "hotThreshold": (100_000, 1, 1_000_000_000),
    "timelineSize": (800, 10, 10_000),
    "fanoutChunk": (1000, 1, 50_000),
    "maxMediaBytes": (64 << 20, 1024, 1 << 30),
}
_WHAT = {
    "replicas": "Server replicas; each leases its own Snowflake worker id from etcd.",
    "hotThreshold": "Authors with more followers than this are not fanned out: their posts"
    " are merged into timelines when they are read.",
    "timelineSize": "Post ids kept per home timeline in Redis (older pages come from PostgreSQL).",
    "fanoutChunk": "Followers written per fan-out step; a big author's post is fanned out one"
    " chunk at a time, taking turns with other authors.",
    "maxMediaBytes": "The largest media upload, in bytes.",
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Replicas, the hot-author threshold, timeline and fan-out sizes, media.",
    "properties": {
        **{name: _integer(*bounds, _WHAT[name]) for name, bounds in INTEGERS.items()},
        "uploadExpiry": {
            "type": "string",
            "description": "An unfinished media upload is dropped after this long (a duration:"
            " 1d, 12h), at least 1m.",
            "pattern": DURATION,
            "maxLength": 64,
            "default": "1d",
        },
    },
}
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Hot", "type": "integer", "jsonPath": ".spec.hotThreshold"},
)


@dataclass(frozen=True, slots=True)
class Spec:
    replicas: int = 1
    hot_threshold: int = 100_000
    timeline_size: int = 800
    fanout_chunk: int = 1000
    max_media_bytes: int = 64 << 20
    upload_expiry: int = 86400  # seconds


def parse(spec: Mapping[str, Any]) -> Spec:
    """ValueError "spec.<field>: <reason>" for the first field that is wrong."""
    known = sorted([*INTEGERS, "uploadExpiry"])
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise ValueError(f"spec.{unknown[0]}: unknown field (known: {', '.join(known)})")
    values: dict[str, int] = {}
    for name, (default, low, high) in INTEGERS.items():
        value = spec.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"spec.{name}: must be a whole number")
        if not low <= value <= high:
            raise ValueError(f"spec.{name}: must be between {low} and {high}")
        values[name] = value
    text = spec.get("uploadExpiry", "1d")
    if not isinstance(text, str):
        raise ValueError("spec.uploadExpiry: must be a duration such as 1d")
    try:
        expiry = durations.parse(text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"spec.uploadExpiry: {exc}") from None
    if expiry < 60:
        raise ValueError("spec.uploadExpiry: at least 1m")
    return Spec(
        replicas=values["replicas"],
        hot_threshold=values["hotThreshold"],
        timeline_size=values["timelineSize"],
        fanout_chunk=values["fanoutChunk"],
        max_media_bytes=values["maxMediaBytes"],
        upload_expiry=int(expiry),
    )
