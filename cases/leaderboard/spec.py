"""A Leaderboard resource's spec, checked once: by the operator's `objects` (so a bad spec
never becomes a Deployment) and by the server at start-up (so a bad ConfigMap never serves).
`SCHEMA` is the same spec for the API server (operator/crds.py makes the CRD from it), with
the same defaults and bounds, so `kubectl apply` refuses early what `parse` would refuse.

    spec:
      retention: 30d                          # how long events count (default 30d)
      buckets: [1m, 10m, 1h, 6h, 1d, 7d]      # bucket sizes, each a multiple of the previous
      replicas: 1                             # server pods
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hourglass import durations
from hourglass.cases.leaderboard import buckets

DEFAULT_RETENTION = "30d"
MAX_REPLICAS = 50
MAX_RETENTION_DAYS = 3660
# What durations.parse accepts, as the CRD's pattern.
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How long events are kept, how they are bucketed, how many servers.",
    "properties": {
        "retention": {
            "type": "string",
            "description": "Keep buckets this long (a duration: 30d, 12h), at least the"
            f" largest bucket, at most {MAX_RETENTION_DAYS}d.",
            "pattern": DURATION,
            "maxLength": 64,
            "default": DEFAULT_RETENTION,
        },
        "buckets": {
            "type": "array",
            "description": "Bucket sizes, finest first, each a whole multiple of the one"
            " before (the finest is the query grain); the coarser ones are rolled up by a"
            " ScheduledJob.",
            "items": {"type": "string", "pattern": DURATION, "maxLength": 64},
            "minItems": 1,
            "maxItems": buckets.MAX_LEVELS,
            "x-kubernetes-list-type": "set",
            "default": list(buckets.DEFAULT_BUCKETS),
        },
        "replicas": {
            "type": "integer",
            "description": "Server replicas.",
            "minimum": 1,
            "maximum": MAX_REPLICAS,
            "default": 1,
        },
    },
}
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Retention", "type": "string", "jsonPath": ".spec.retention"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
)


@dataclass(frozen=True, slots=True)
class Spec:
    retention: int  # seconds
    sizes: buckets.Sizes
    replicas: int

    @property
    def smallest(self) -> int:
        return self.sizes[0]


def parse(spec: Mapping[str, Any]) -> Spec:
    """ValueError "spec.<field>: <reason>" for the first field that is wrong."""
    unknown = sorted(set(spec) - {"retention", "buckets", "replicas"})
    if unknown:
        raise ValueError(f"spec.{unknown[0]}: unknown field (known: buckets, replicas, retention)")
    spelled = spec.get("buckets", list(buckets.DEFAULT_BUCKETS))
    if not isinstance(spelled, list | tuple):
        raise ValueError("spec.buckets: must be a list of durations such as [1m, 1h, 1d]")
    sizes = buckets.parse_sizes(spelled, "spec.buckets")
    text = spec.get("retention", DEFAULT_RETENTION)
    if not isinstance(text, str):
        raise ValueError("spec.retention: must be a duration such as 30d")
    try:
        retention = durations.parse(text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"spec.retention: {exc}") from None
    if retention < sizes[-1]:
        raise ValueError(
            f"spec.retention: {text} is shorter than the largest bucket"
            f" ({buckets.spell(sizes[-1])})"
        )
    if retention > MAX_RETENTION_DAYS * 86400:
        raise ValueError(f"spec.retention: at most {MAX_RETENTION_DAYS}d")
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ValueError("spec.replicas: must be a whole number")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"spec.replicas: must be between 1 and {MAX_REPLICAS}")
    return Spec(retention=int(retention), sizes=sizes, replicas=replicas)
