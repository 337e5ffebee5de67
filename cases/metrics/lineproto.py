"""The InfluxDB line protocol, as Telegraf, the InfluxDB clients and many agents write it:

    cpu,host=a,region=eu usage_user=12.5,usage_system=3i 1700000000000000000
    syslog,host=a,app=web message="GET /ok 200" 1700000000000000000

Each numeric field becomes a series named `<measurement>_<field>` (as Telegraf's Prometheus
output names it) with the tags as labels; booleans count as 1 and 0. A string field is a log
line of the stream `{__name__=<measurement>, field=<field>, tags...}`: logs travel the same
way as metrics. Pure; every refusal names the line (1-based) and what is wrong in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hourglass.cases import Invalid
from hourglass.cases.metrics.validation import LABEL_NAME, METRIC_NAME

PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MAX_BODY = 32 * 1024 * 1024
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}


@dataclass
class Parsed:
    """Points and log lines, grouped by label set (sorted labels), in arrival order."""

    points: dict[tuple[tuple[str, str], ...], tuple[list[int], list[float]]] = field(
        default_factory=dict
    )
    logs: dict[tuple[tuple[str, str], ...], tuple[list[int], list[str]]] = field(
        default_factory=dict
    )

    @property
    def count(self) -> int:
        return sum(len(t) for t, _ in self.points.values()) + sum(
            len(t) for t, _ in self.logs.values()
        )


def _scan(text: str, start: int, stops: str, *, quotes: bool = False) -> tuple[str, int]:
    """Raw text from `start` to the first unescaped character of `stops` (outside double
    quotes when `quotes`); the escapes are kept, for the caller to undo."""
    i = start
    quoted = False
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            i += 2
            continue
        if quotes and char == '"':
            quoted = not quoted
        elif not quoted and char in stops:
            break
        i += 1
    if quoted:
        raise ValueError("a string field value has no closing quote")
    return text[start:i], i


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ' ,="\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs, i = [], 0
    while i < len(text):
        raw, i = _scan(text, i, ",", quotes=what == "field")
        key, eq = _scan(raw, 0, "=")
        if eq >= len(raw) or not key:
            raise ValueError(f"{what} {raw!r} is not key=value")
        pairs.append((_unescape(key), raw[eq + 1 :]))
        i += 1
    return pairs


def _number(raw: str, key: str) -> float:
    if raw in _TRUE:
        return 1.0
    if raw in _FALSE:
        return 0.0
    if raw[-1:] in ("i", "u"):
        try:
            return float(int(raw[:-1]))
        except ValueError:
            raise ValueError(f"field {key!r}: {raw!r} is not an integer") from None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"field {key!r}: {raw!r} is not a number, boolean or string") from None
    if not math.isfinite(value) or raw.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ValueError(f"field {key!r}: {raw!r} is not allowed (NaN and infinities are not)")
    return value


def _line(text: str, *, scale: int, now_ns: int, out: Parsed) -> None:
    head, i = _scan(text, 0, " ", quotes=False)
    fields, i = _scan(text, i + 1, " ", quotes=True)
    stamp = text[i + 1 :].strip()
    measurement_raw, comma = _scan(head, 0, ",")
    measurement = _unescape(measurement_raw)
    if not measurement or not fields:
        raise ValueError("needs a measurement, a space and at least one field")
    if not METRIC_NAME.fullmatch(measurement):
        raise ValueError(
            f"measurement {measurement!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    tags = (
        [(k, _unescape(v)) for k, v in _pairs(head[comma + 1 :], "tag")]
        if comma < len(head)
        else []
    )
    for key, value in tags:
        if not LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"tag {key!r} is not an allowed label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if not value:
            raise ValueError(f"tag {key!r} has an empty value")
    if stamp:
        try:
            at_ns = int(stamp) * scale
        except ValueError:
            raise ValueError(f"timestamp {stamp[:30]!r} is not an integer") from None
    else:
        at_ns = now_ns
    for key, raw in _pairs(fields, "field"):
        if not raw:
            raise ValueError(f"field {key!r} has no value")
        if raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"'):
                raise ValueError(f"field {key!r}: a string value must be quoted")
            labels = tuple(sorted([("__name__", measurement), ("field", key), *tags]))
            stamps, lines = out.logs.setdefault(labels, ([], []))
            stamps.append(at_ns)
            lines.append(_unescape(raw[1:-1]))
            continue
        name = f"{measurement}_{key}"
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"field {key!r}: {name!r} is not a metric name")
        labels = tuple(sorted([("__name__", name), *tags]))
        times, values = out.points.setdefault(labels, ([], []))
        times.append(at_ns // 1_000_000)
        values.append(_number(raw, key))


def parse(body: bytes, *, precision: str = "ns", now_ns: int) -> Parsed:
    """Every line of `body`; Invalid("body", "line N: ...") for the first bad one."""
    if precision not in PRECISIONS:
        raise Invalid("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("body", f"not UTF-8 (byte {exc.start})") from None
    out = Parsed()
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            _line(line, scale=PRECISIONS[precision], now_ns=now_ns, out=out)
        except ValueError as exc:
            raise Invalid("body", f"line {number}: {exc}") from None
    if not out.points and not out.logs:
        raise Invalid("body", "holds no points (line protocol: measurement,tag=v field=1 <ts>)")
    return out
