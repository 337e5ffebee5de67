"""A MetricsPipeline resource's spec, checked once: by the operator's `objects` (so a bad
spec never becomes a Deployment) and by the server at start-up. `SCHEMA` is the same spec for
the API server (operator/crds.py makes the CRD from it), with the same defaults and bounds.

    spec:
      retention: 30d            # raw points, log lines and 1-minute rollups
      rollupRetention: 365d     # the 5-minute and 1-hour rollups (at least `retention`)
      shards: 4                 # series partitions per hour of files
      replicas: 1               # ingest/query server pods
      consumers: 1              # consumer pods (stream -> files)
      claimAfter: 30s           # a consumer's unacknowledged entries are claimed after this
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hourglass import durations

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
MAX_REPLICAS = 50
MAX_SHARDS = 64
MAX_RETENTION_DAYS = 3660
_DEFAULTS: dict[str, Any] = {
    "retention": "30d",
    "rollupRetention": "365d",
    "shards": 4,
    "replicas": 1,
    "consumers": 1,
    "claimAfter": "30s",
}


def _duration(text: str) -> dict[str, Any]:
    return {"type": "string", "description": text, "pattern": DURATION, "maxLength": 64}


def _count(text: str, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "description": text, "minimum": 1, "maximum": maximum}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How long data is kept, how files are partitioned, how many pods.",
    "properties": {
        "retention": _duration(
            "Keep raw points, log lines and 1-minute rollups this long (at least 1h, at most"
            f" {MAX_RETENTION_DAYS}d)."
        ),
        "rollupRetention": _duration(
            "Keep the 5-minute and 1-hour rollups this long (at least the retention)."
        ),
        "shards": _count(
            "Series partitions: each hour of data is split into this many files by series.",
            MAX_SHARDS,
        ),
        "replicas": _count("Ingest and query server replicas.", MAX_REPLICAS),
        "consumers": _count("Consumer replicas (broker -> columnar files).", MAX_REPLICAS),
        "claimAfter": _duration(
            "A consumer's unacknowledged broker entries are taken over after this idle time"
            " (at least 1s, at most 1h)."
        ),
    },
}
for _name, _default in _DEFAULTS.items():
    SCHEMA["properties"][_name]["default"] = _default
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Retention", "type": "string", "jsonPath": ".spec.retention"},
    {"name": "Shards", "type": "integer", "jsonPath": ".spec.shards"},
    {"name": "Consumers", "type": "integer", "jsonPath": ".spec.consumers"},
)


@dataclass(frozen=True, slots=True)
class Spec:
    retention: int  # seconds
    rollup_retention: int
    shards: int
    replicas: int
    consumers: int
    claim_after: float


def _seconds(spec: Mapping[str, Any], name: str) -> float:
    text = spec.get(name, _DEFAULTS[name])
    if not isinstance(text, str):
        raise ValueError(f"spec.{name}: must be a duration such as 30d")
    try:
        return durations.parse(text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"spec.{name}: {exc}") from None


def _whole(spec: Mapping[str, Any], name: str, maximum: int) -> int:
    value = spec.get(name, _DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"spec.{name}: must be a whole number")
    if not 1 <= value <= maximum:
        raise ValueError(f"spec.{name}: must be between 1 and {maximum}")
    return value


def parse(spec: Mapping[str, Any]) -> Spec:
    """ValueError "spec.<field>: <reason>" for the first field that is wrong."""
    unknown = sorted(set(spec) - set(_DEFAULTS))
    if unknown:
        known = ", ".join(sorted(_DEFAULTS))
        raise ValueError(f"spec.{unknown[0]}: unknown field (known: {known})")
    retention = _seconds(spec, "retention")
    if not 3600 <= retention <= MAX_RETENTION_DAYS * 86400:
        raise ValueError(f"spec.retention: must be between 1h and {MAX_RETENTION_DAYS}d")
    rollups = _seconds(spec, "rollupRetention")
    if not retention <= rollups <= MAX_RETENTION_DAYS * 86400:
        raise ValueError(
            f"spec.rollupRetention: must be between the retention and {MAX_RETENTION_DAYS}d"
        )
    claim_after = _seconds(spec, "claimAfter")
    if not 1 <= claim_after <= 3600:
        raise ValueError("spec.claimAfter: must be between 1s and 1h")
    return Spec(
        retention=int(retention),
        rollup_retention=int(rollups),
        shards=_whole(spec, "shards", MAX_SHARDS),
        replicas=_whole(spec, "replicas", MAX_REPLICAS),
        consumers=_whole(spec, "consumers", MAX_REPLICAS),
        claim_after=claim_after,
    )
