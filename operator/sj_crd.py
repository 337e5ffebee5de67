"""The parts of the ScheduledJob CRD that must agree with the API: the rules that refuse a bad
spec at `kubectl apply`, the status the operator writes, and the printer columns.

The rules are CEL (`x-kubernetes-validations` with `messageExpression`), built by sj_rules from the
API's own bounds (hourglass.limits, hourglass.schedules), so the two cannot drift. Each message
says in words which field is wrong and why; no bare regex reaches the user.

The schema keeps no `enum`, no `required` and no `pattern` on the fields these rules cover. The
API server skips every CEL rule of an object when a blocking schema check (enum, required,
maxLength, type) fails, and then adds "some validation rules were not checked"; a rule never
blocks another, so each wrong field gets its own message.

Time zones: CEL cannot read tzdata, so the rule holds the IANA zone list itself, taken from
Python's `zoneinfo.available_timezones()` when the file is generated (`--zones`). A
ValidatingAdmissionPolicy would run the same CEL with the same limits, and a webhook would
need a served TLS endpoint; a rule in the CRD works on any API server, the test bed's bare
kube-apiserver included.

`python -m hourglass.operator.sj_crd [--zones]` rewrites charts/hourglass/crds/
scheduledjobs.hourglass.io.yaml in place: what this module owns is replaced, the rest of the
file (the task or job template) is kept. A unit test checks that the file is up to date.
"""

from __future__ import annotations

import re
import sys
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from hourglass import limits
from hourglass.operator import resources
from hourglass.operator.sj_rules import (
    BOUNDS,
    JITTER,
    cron_rules,
    duration_rules,
    instant_rules,
    one_of,
    required,
    spelled,
    time_zone_rule,
)

PATH = Path("charts/hourglass/crds/scheduledjobs.hourglass.io.yaml")

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".status.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Active", "type": "integer", "jsonPath": ".status.active"},
    {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
    {"name": "Last Result", "type": "string", "jsonPath": ".status.lastResult"},
    {"name": "Next Fire", "type": "string", "jsonPath": ".status.nextFireAt"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobId", "priority": 1},
    {"name": "Missed", "type": "integer", "jsonPath": ".status.missedFires", "priority": 1},
]

_STRING: dict[str, Any] = {"type": "string"}
_RUN = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "state": _STRING,
        "scheduledAt": _STRING,
        "finishedAt": _STRING,
        "attempt": {"type": "integer", "format": "int32"},
        "exitCode": {"type": "integer", "format": "int32"},
    },
}
_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": _STRING,
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": _STRING,
        "message": _STRING,
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}
STATUS: dict[str, Any] = {
    "type": "object",
    "description": (
        "What a user reads at a glance, written by the operator. Its own bookkeeping (which"
        " runs were reported, the revision it wrote, the triggers it handled) is kept in"
        " hourglass.io/ annotations."
    ),
    "properties": {
        "jobId": {"type": "string", "description": "The hourglass job (`hourglass status <id>`)."},
        "state": {"type": "string", "description": "active, completed, cancelled or paused."},
        "schedule": {"type": "string", "description": 'The schedule in words, e.g. "every 30s".'},
        "nextFireAt": {
            "type": "string",
            "description": "The next fire; empty while suspended, done, or unknown (Ready=False).",
        },
        "missedFires": {"type": "integer", "format": "int64"},
        "active": {"type": "integer", "format": "int32", "description": "Runs queued or running."},
        "lastScheduleTime": {
            "type": "string",
            "format": "date-time",
            "description": "The scheduled time of the latest run.",
        },
        "lastResult": {
            "type": "string",
            "description": "How the latest finished run ended: succeeded, failed, timed_out"
            " or cancelled. A run that waits for a retry has not finished.",
        },
        "lastSuccessfulTime": {"type": "string", "format": "date-time"},
        "lastRun": _RUN,
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": _CONDITION,
        },
    },
}


def _set_rules(field: dict[str, Any], rules: list[dict[str, str]]) -> None:
    for key in ("pattern", "enum", "format"):
        field.pop(key, None)
    field["x-kubernetes-validations"] = rules


def zones_in(document: Mapping[str, Any]) -> list[str]:
    """The time zones that the file's rule lists now."""
    zone = _spec(document)["properties"]["schedule"]["properties"]["cron"]["properties"]
    rules = zone["timeZone"].get("x-kubernetes-validations") or [{"rule": ""}]
    listed = rules[0]["rule"].partition("[")[2].rpartition("]")[0]
    return [name.strip().strip("'") for name in listed.split(",") if name.strip()]


def _version(document: Mapping[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = document["spec"]["versions"]
    return next(v for v in versions if v["name"] == resources.VERSION)


def _spec(document: Mapping[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = _version(document)["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = schema["properties"]["spec"]
    return spec


def apply(document: dict[str, Any], zones: Iterable[str]) -> dict[str, Any]:
    """Sets what this module owns in the loaded CRD (in place) and returns it."""
    version = _version(document)
    version["additionalPrinterColumns"] = PRINTER_COLUMNS
    version["schema"]["openAPIV3Schema"]["properties"]["status"] = STATUS
    spec = _spec(document)
    props = spec["properties"]
    # The spec's required fields become rules; a rerun finds them as rules already.
    kept = [rule for rule in spec.get("x-kubernetes-validations", ()) if rule not in _mine(spec)]
    _set_rules(spec, [*required(_required_names(spec), _SPEC_HINTS), *kept])
    spec.pop("required", None)
    schedule = props["schedule"]["properties"]
    kept = [
        rule for rule in props["schedule"].get("x-kubernetes-validations", ()) if rule not in BOUNDS
    ]
    props["schedule"]["x-kubernetes-validations"] = [*kept, *BOUNDS]
    for field, words in (
        ("at", "the instant (schedule.at)"),
        ("start", "the start"),
        ("end", "the end"),
    ):
        _set_rules(schedule[field], instant_rules(words))
        schedule[field]["maxLength"] = 64  # bounds the rules' cost
    _set_rules(
        schedule["after"],
        duration_rules(
            "the delay (schedule.after)", minimum=timedelta(0), maximum=limits.MAX_AFTER
        ),
    )
    cron = props["schedule"]["properties"]["cron"]
    cron.pop("required", None)
    _set_rules(cron, required(["expression"], {}))
    _set_rules(cron["properties"]["expression"], cron_rules())
    _set_rules(cron["properties"]["timeZone"], [time_zone_rule(zones)])
    every = props["schedule"]["properties"]["every"]
    every.pop("required", None)
    _set_rules(every, [*required(["interval"], {}), JITTER])
    _set_rules(
        every["properties"]["interval"],
        duration_rules("the interval", minimum=limits.MIN_INTERVAL, maximum=limits.MAX_INTERVAL),
    )
    _set_rules(
        every["properties"]["jitter"],
        duration_rules(
            "the jitter",
            minimum=timedelta(0),
            maximum=timedelta(seconds=limits.MAX_DURATION_SECONDS),
        ),
    )
    _set_rules(
        props["timeout"],
        duration_rules("the timeout", minimum=None, maximum=limits.MAX_TIMEOUT, positive=True),
    )
    props["timeout"]["description"] = (
        f"Kills an attempt that runs longer (at most {spelled(limits.MAX_TIMEOUT)})."
    )
    _set_rules(
        props["retryBackoff"],
        duration_rules("the retry backoff", minimum=timedelta(0), maximum=limits.MAX_BACKOFF),
    )
    window = props["catchUp"]["properties"]["window"]
    _set_rules(
        window,
        duration_rules(
            "the catch-up window",
            minimum=None,
            maximum=timedelta(seconds=limits.MAX_DURATION_SECONDS),
            positive=True,
        ),
    )
    _set_rules(props["overlap"], [one_of("the overlap policy", resources.OVERLAPS)])
    _set_rules(
        props["catchUp"]["properties"]["policy"],
        [one_of("the catch-up policy", resources.CATCH_UPS)],
    )
    props["maxAttempts"].update(minimum=1, maximum=limits.MAX_ATTEMPTS)
    props["suspend"] = {
        "type": "boolean",
        "default": False,
        "description": (
            "Pauses the job: no fires while true, runs already going finish; false resumes it"
            " from its next fire after now (fires due meanwhile are not made up)."
        ),
    }
    return document


def _required_names(spec: Mapping[str, Any]) -> list[str]:
    names = list(spec.get("required", ()))
    for rule in spec.get("x-kubernetes-validations", ()):
        # Only this module's own `has(self.<field>)` rules; a hand-written rule that merely
        # starts with has() (the jobTemplate-or-task rule) is kept as it is.
        found = re.fullmatch(r"has\(self\.([A-Za-z_][A-Za-z0-9_]*)\)", rule["rule"])
        if found and rule.get("message"):
            names.append(found.group(1))
    return list(dict.fromkeys(names))


def _mine(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    return required(_required_names(spec), _SPEC_HINTS)


# Files of a host's tzdata folder that are no zone of their own: they differ per host.
HOST_FILES = {"localtime", "posixrules"}

_SPEC_HINTS = {
    "schedule": ": set one of at, after, cron or every",
    "task": ": give at least task.command",
}

HEADER = """\
# A ScheduledJob is an hourglass job declared as a Kubernetes resource: the operator
# (hourglass.operator) schedules, updates and deletes the job through the gRPC API and mirrors
# the job's state in .status.
#
# The rules, the status schema and the printer columns are generated from the API's bounds by
# `python -m hourglass.operator.sj_crd` (operator/sj_crd.py): edit that, then run it. Other
# parts of this file may be edited by hand; the command keeps them.
"""


def render(document: Mapping[str, Any]) -> str:
    import yaml  # type: ignore[import-untyped]  # the kubernetes client's dependency

    text: str = yaml.safe_dump(dict(document), sort_keys=False, width=100)
    return HEADER + text


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    args = list(argv or ())
    path = PATH
    refresh = "--zones" in args
    document = yaml.safe_load(path.read_text())
    zones = zones_in(document)
    if refresh or not zones:
        zones = sorted(set(zoneinfo.available_timezones()) - HOST_FILES)
    path.write_text(render(apply(document, zones)))
    print(f"wrote {path} ({len(zones)} time zones)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
