"""The CEL rules of the ScheduledJob CRD (`x-kubernetes-validations`), built from the API's
own bounds: durations, cron fields, time zones, instants, enums and required fields. Each
message says in words which value is wrong and why; sj_crd puts them into the CRD.

Every rule stays within the API server's cost budget: the strings they read have a maxLength,
and cron fields are checked by one regex each over the whole expression (splitting into lists
cost too much), with ranges a-b generated in order so that a > b never matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

from hourglass import durations, limits, schedules

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


def spelled(limit: timedelta) -> str:
    return durations.format(limit)


# An interval's jitter must not be longer than the interval.
JITTER = {
    "rule": (
        f"!has(self.jitter) || !has(self.interval) || !self.jitter.matches(r'{_DURATION}')"
        f" || !self.interval.matches(r'{_DURATION}')"
        f" || {seconds('self.jitter')} <= {seconds('self.interval')}"
    ),
    "message": "the jitter must not be longer than the interval",
}

# The smallest positive duration the API keeps (a timedelta has microseconds).
_POSITIVE = 0.000001


def duration_rules(
    words: str, *, minimum: timedelta | None, maximum: timedelta, positive: bool = False
) -> list[dict[str, str]]:
    """The syntax, then the bounds (guarded by the syntax, so a typo gets one message)."""
    low = _POSITIVE if positive else (minimum or timedelta(0)).total_seconds()
    high = maximum.total_seconds()
    if positive:
        range_words = f"must be longer than 0s and at most {spelled(maximum)}"
    else:
        range_words = f"must be between {spelled(minimum or timedelta(0))} and {spelled(maximum)}"
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


def instant_rules(words: str) -> list[dict[str, str]]:
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


BOUNDS = [
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


def one_of(words: str, allowed: Iterable[str]) -> dict[str, str]:
    values = list(allowed)
    listed = ", ".join(f"'{value}'" for value in values)
    return {
        "rule": f"self in [{listed}]",
        "messageExpression": f'"{words} \'" + self + "\' is not one of {", ".join(values)}"',
    }


def required(names: Sequence[str], hints: Mapping[str, str]) -> list[dict[str, str]]:
    return [
        {"rule": f"has(self.{name})", "message": f"{name} is required{hints.get(name, '')}"}
        for name in names
    ]
