"""The CustomResourceDefinition of a case's kind, from its spec's schema: every case's CRD
has the same status (what `owned.conditions` writes), the same printer columns for it, and
the group/version the generic reconcile serves.

`python -m hourglass.operator.crds` writes the chart's files (charts/hourglass/crds/) for every
case in the registry (hourglass.cases.NAMES); a unit test checks that the files equal what
this module makes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hourglass import cases
from hourglass.operator import owned

_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}


def status_schema() -> dict[str, Any]:
    """The status every case's resource has (written by the operator only)."""
    return {
        "type": "object",
        "description": "Written by the operator: conditions Ready, Progressing, Degraded.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation whose objects were last applied.",
            },
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": _CONDITION,
            },
            "endpoints": {
                "type": "array",
                "description": "Where clients reach the case:"
                " [PORT_NAME=]SERVICE.NAMESPACE.svc:PORT",
                "items": {"type": "string"},
            },
        },
    }


def definition(
    *,
    kind: str,
    plural: str,
    short_names: Sequence[str],
    description: str,
    spec: Mapping[str, Any],
    columns: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The CRD of `kind` in group hourglass.io, version v1alpha1, with `spec` as the schema of
    its spec (structural: every field typed) and `columns` before the common ones."""
    common_columns = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{owned.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "hourglass",
                "app.kubernetes.io/component": "operator",
            },
        },
        "spec": {
            "group": owned.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
                "categories": ["hourglass"],
            },
            "versions": [
                {
                    "name": owned.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*map(dict, columns), *common_columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": dict(spec),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def for_case(case: cases.Case) -> dict[str, Any]:
    """The CRD of a case's kind: its spec's schema and printer columns are the case's own
    (`Case.spec_schema`, kept beside the code that parses the spec), so the defaults and
    bounds that `kubectl apply` enforces are the case's."""
    return definition(
        kind=case.kind,
        plural=case.plural,
        short_names=case.short_names,
        description=case.description or f"A {case.kind} service (hourglass.cases.{case.name}).",
        spec=case.spec_schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        columns=case.columns,
    )


def chart_crds() -> dict[str, dict[str, Any]]:
    """The chart's CRD file of each case in the registry, by file name."""
    return {f"{case.plural}.{owned.GROUP}.yaml": for_case(case) for case in cases.every()}


HEADER = (
    "# Generated by `python -m hourglass.operator.crds` (operator/crds.py); edit that, not this.\n"
)


def render(document: Mapping[str, Any]) -> str:
    import yaml  # type: ignore[import-untyped]  # the kubernetes client's dependency

    text: str = yaml.safe_dump(dict(document), sort_keys=False, width=100)
    return HEADER + text


def main(argv: Sequence[str] | None = None) -> int:
    folder = Path(argv[0] if argv else "charts/hourglass/crds")
    for filename, document in chart_crds().items():
        (folder / filename).write_text(render(document))
        print(f"wrote {folder / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
