"""The parts of the ScheduledJob CRD that must agree with the API: the rules that refuse a bad
spec at `kubectl apply`, the status the operator writes, and the printer columns.

The rules are CEL (`x-kubernetes-validations` with `messageExpression`), built here from the
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

import sys
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from hourglass import durations, limits, schedules
from hourglass.operator import resources

PATH = Path("charts/hourglass/crds/scheduledjobs.hourglass.io.yaml")

# A duration as the CRD writes it (hourglass.durations): number-unit parts, e.g. 1h30m.
_PART = r"[0-9]+(\.[0-9]+)?(ms|s|m|h|d)"
_DURATION = rf"^({_PART})+$"
_HOW_DURATION = "write a number and a unit (ms, s, m, h, d), e.g. 30s or 1h30m"


def seconds(expression: str) -> str:
    """CEL: the length in seconds (a double) of a duration string that matches _DURATION."""
    return (
        f"{expression}.findAll(r'{_PART}')"
        r".map(p, double(p.find(r'^[0-9]+(\.[0-9]+)?'))"
        " * (p.endsWith('ms') ? 0.001 : p.endsWith('s') ? 1.0 : p.endsWith('m') ? 60.0"
        " : p.endsWith('h') ? 3600.0 : 86400.0)).sum()"
    )


def _words(limit: timedelta) -> str:
    return durations.format(limit)


# The smallest positive duration the API keeps (a timedelta has microseconds).
_POSITIVE = 0.000001


def duration_rules(
    words: str, *, minimum: timedelta | None, maximum: timedelta, positive: bool = False
) -> list[dict[str, str]]:
    """The syntax, then the bounds (guarded by the syntax, so a typo gets one message)."""
    low = _POSITIVE if positive else (minimum or timedelta(0)).total_seconds()
    high = maximum.total_seconds()
    if positive:
        range_words = f"must be longer than 0s and at most {_words(maximum)}"
    else:
        range_words = f"must be between {_words(minimum or timedelta(0))} and {_words(maximum)}"
    return [
        {
            "rule": f"self.matches(r'{_DURATION}')",
            "messageExpression": f'"{words} \'" + self + "\' is not a duration: {_HOW_DURATION}"',
        },
        {
            "rule": (
                f"!self.matches(r'{_DURATION}')"
                f" || ({seconds('self')} >= {low!r} && {seconds('self')} <= {high!r})"
            ),
            "messageExpression": f'"{words} {range_words}, not " + self',
        },
    ]


# Each cron field as cronsim reads it (case-insensitive): its name, its values in words, its
# range, the names its values may have (from the range's start), and further forms of a term.
_STEP = r"/0*[1-9][0-9]*"
CRON_FIELDS: list[tuple[str, str, tuple[int, int], list[str], str]] = [
    ("second", "0-59", (0, 59), [], ""),
    ("minute", "0-59", (0, 59), [], ""),
    ("hour", "0-23", (0, 23), [], ""),
    ("day-of-month", "1-31, L or LW", (1, 31), [], rf"|LW?({_STEP})?"),
    (
        "month",
        "1-12 or JAN-DEC",
        (1, 12),
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        "",
    ),
    (
        "day-of-week",
        "0-7 or SUN-SAT, nL or n#k",
        (0, 7),
        ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
        "",
    ),
]
# cron(8)'s nicknames, which the API accepts for a whole expression.
_MACROS = "|".join(schedules.CRON_ALIASES)
_COUNT = r"^\s*\S+(\s+\S+){4,5}\s*$"
_SIX = r"^\s*\S+(\s+\S+){5}\s*$"


def int_range(low: int, high: int) -> str:
    """A regex for the decimal numbers low..high (no leading zeros, at most two digits): the
    first decade's tail, the whole decades between, the last decade's head."""
    parts = []
    if low // 10 == high // 10:
        return _decade(low // 10, low % 10, high % 10)
    parts.append(_decade(low // 10, low % 10, 9))
    first, last = low // 10 + 1, high // 10 - (0 if high % 10 == 9 else 1)
    if first <= last:
        tens = str(first) if first == last else f"[{first}-{last}]"
        parts.append(f"{tens}[0-9]")
    if high % 10 != 9:
        parts.append(_decade(high // 10, 0, high % 10))
    return "|".join(parts)


def _decade(tens: int, low: int, high: int) -> str:
    digits = str(low) if low == high else f"[{low}-{high}]"
    return f"{tens if tens else ''}{digits}"


def _value(low: int, high: int, names: list[str], first: int) -> str:
    """One value of low..high, as a number (leading zeros allowed) or a name."""
    spelled = [name for index, name in enumerate(names, start=first) if low <= index <= high]
    return "|".join([f"0*({int_range(low, high)})", *spelled])


def _field(low: int, high: int, names: list[str], extra: str, *, weekday: bool) -> str:
    """A whole field: comma-separated terms; a range a-b only with a <= b."""
    any_value = _value(low, high, names, low)
    ranges = "|".join(
        f"({_value(a, a, names, low)})-({_value(a, high, names, low)})"
        for a in range(low, high + 1)
    )
    if weekday:
        extra = rf"|0*[0-7]L|({any_value})#0*[1-5]"
    term = rf"(\*|{any_value}|{ranges})({_STEP})?{extra}"
    return f"({term})(,({term}))*"


def _nth(position: int, six: bool) -> str:
    """The regex that finds the expression up to the end of field `position` (0 = second)."""
    before = position if six else position - 1
    return rf"^\s*(\S+\s+){{{before}}}\S+"


def cron_rules() -> list[dict[str, str]]:
    rules = [
        {
            "rule": f"self.matches(r'^\\s*({_MACROS})\\s*$') || self.matches(r'{_COUNT}')",
            "messageExpression": (
                "self.matches(r'^\\s*@') ? \"the cron expression '\" + self + \"' is not a"
                f' macro: use one of {", ".join(schedules.CRON_ALIASES)}"'
                ' : "the cron expression \'" + self + "\' has "'
                " + (self.matches(r'^\\s*\\S+(\\s+\\S+){6}') ? 'more than 6' : 'fewer than 5')"
                ' + " fields: use 5 (minute hour day-of-month month day-of-week),'
                ' 6 (seconds first) or a macro such as @daily"'
            ),
        }
    ]
    for position, (name, values, (low, high), names, extra) in enumerate(CRON_FIELDS):
        field = _field(low, high, names, extra, weekday=name == "day-of-week")
        rest = 5 - position  # fields after this one
        if name == "second":
            check = (
                f"!self.matches(r'{_SIX}') || self.matches(r'(?i)^\\s*{field}(\\s+\\S+){{5}}\\s*$')"
            )
        else:
            before = rf"(\S+\s+){{{position - 1},{position}}}"
            check = (
                f"!self.matches(r'{_COUNT}')"
                f" || self.matches(r'(?i)^\\s*{before}{field}(\\s+\\S+){{{rest}}}\\s*$')"
            )
        found = (
            f"self.find(r'{_nth(position, True)}').find(r'\\S+$')"
            if name == "second"
            else f"(self.matches(r'{_SIX}') ? self.find(r'{_nth(position, True)}')"
            f" : self.find(r'{_nth(position, False)}')).find(r'\\S+$')"
        )
        rules.append(
            {
                "rule": check,
                "messageExpression": (
                    f'"the {name} field \'" + {found} + "\' of the cron expression is not'
                    f" valid: the {name} is {values}; write *, a value, a range a-b (a <= b),"
                    ' a list a,b or a step */n"'
                ),
            }
        )
    return rules


def time_zone_rule(zones: Iterable[str]) -> dict[str, str]:
    names = ", ".join(f"'{zone}'" for zone in sorted(zones))
    return {
        "rule": f"self == '' || self in [{names}]",
        "messageExpression": (
            '"the time zone \'" + self + "\' is not an IANA time zone name: use one such as'
            ' Europe/Berlin, America/New_York or UTC (names are case-sensitive)"'
        ),
    }


# RFC 3339 with an offset, as the operator reads it. Checked in CEL rather than by the
# schema's `format: date-time`, whose failure would block every other rule.
_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _instant_rules(words: str) -> list[dict[str, str]]:
    """An RFC 3339 instant within the API's range."""
    earliest, latest = (
        f"{moment:%Y-%m-%dT%H:%M:%SZ}" for moment in (limits.EARLIEST, limits.LATEST)
    )
    return [
        {
            "rule": f"self.matches(r'{_INSTANT}')",
            "messageExpression": (
                f'"{words} \'" + self + "\' is not an RFC 3339 date-time with an offset,'
                ' e.g. 2031-01-01T02:00:00Z or 2031-01-01T03:00:00+01:00"'
            ),
        },
        {
            "rule": (
                f"!self.matches(r'{_INSTANT}') || (timestamp(self) >= timestamp('{earliest}')"
                f" && timestamp(self) < timestamp('{latest}'))"
            ),
            "message": f"{words} must be from {earliest} up to {latest}",
        },
    ]


_BOUNDS = [
    {
        "rule": (
            f"!has(self.start) || !has(self.end) || !self.start.matches(r'{_INSTANT}')"
            f" || !self.end.matches(r'{_INSTANT}') || timestamp(self.end) > timestamp(self.start)"
        ),
        "message": "schedule.end must be after schedule.start",
    },
    {
        "rule": "!(has(self.at) || has(self.after)) || !(has(self.start) || has(self.end))",
        "message": "schedule.start and schedule.end apply to cron and every schedules only",
    },
]


def _one_of(words: str, allowed: Iterable[str]) -> dict[str, str]:
    values = list(allowed)
    listed = ", ".join(f"'{value}'" for value in values)
    return {
        "rule": f"self in [{listed}]",
        "messageExpression": f'"{words} \'" + self + "\' is not one of {", ".join(values)}"',
    }


def _required(names: Sequence[str], hints: Mapping[str, str]) -> list[dict[str, str]]:
    return [
        {"rule": f"has(self.{name})", "message": f"{name} is required{hints.get(name, '')}"}
        for name in names
    ]


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
    _set_rules(spec, [*_required(_required_names(spec), _SPEC_HINTS), *kept])
    spec.pop("required", None)
    schedule = props["schedule"]["properties"]
    kept = [
        rule
        for rule in props["schedule"].get("x-kubernetes-validations", ())
        if rule not in _BOUNDS
    ]
    props["schedule"]["x-kubernetes-validations"] = [*kept, *_BOUNDS]
    for field, words in (
        ("at", "the instant (schedule.at)"),
        ("start", "the start"),
        ("end", "the end"),
    ):
        _set_rules(schedule[field], _instant_rules(words))
        schedule[field]["maxLength"] = 64  # bounds the rules' cost
    _set_rules(
        schedule["after"],
        duration_rules(
            "the delay (schedule.after)", minimum=timedelta(0), maximum=limits.MAX_AFTER
        ),
    )
    cron = props["schedule"]["properties"]["cron"]
    cron.pop("required", None)
    _set_rules(cron, _required(["expression"], {}))
    _set_rules(cron["properties"]["expression"], cron_rules())
    _set_rules(cron["properties"]["timeZone"], [time_zone_rule(zones)])
    every = props["schedule"]["properties"]["every"]
    every.pop("required", None)
    interval = f"{seconds('self.interval')}"
    jitter = f"{seconds('self.jitter')}"
    _set_rules(
        every,
        [
            *_required(["interval"], {}),
            {
                "rule": (
                    f"!has(self.jitter) || !has(self.interval)"
                    f" || !self.jitter.matches(r'{_DURATION}')"
                    f" || !self.interval.matches(r'{_DURATION}') || {jitter} <= {interval}"
                ),
                "message": "the jitter must not be longer than the interval",
            },
        ],
    )
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
        f"Kills an attempt that runs longer (at most {_words(limits.MAX_TIMEOUT)})."
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
    _set_rules(props["overlap"], [_one_of("the overlap policy", resources.OVERLAPS)])
    _set_rules(
        props["catchUp"]["properties"]["policy"],
        [_one_of("the catch-up policy", resources.CATCH_UPS)],
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
        text = rule["rule"]
        if text.startswith("has(self.") and text.endswith(")") and rule.get("message"):
            names.append(text[len("has(self.") : -1])
    return list(dict.fromkeys(names))


def _mine(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    return _required(_required_names(spec), _SPEC_HINTS)


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
