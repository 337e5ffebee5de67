"""Human durations such as "90s", "1h30m" or "250ms", as the CLI and the CRD write them."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# The whole string must be a sequence of number-unit parts, like Go's time.ParseDuration.
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse(text: str) -> timedelta:
    """Parses "1h30m" and friends; raises ValueError saying what is accepted."""
    text = text.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d),"
            " e.g. 30s or 1h30m"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format(delta: timedelta) -> str:
    """The shortest exact spelling of a duration: 90 seconds -> "1m30s"."""
    total_ms = round(delta.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign, total_ms = ("-", -total_ms) if total_ms < 0 else ("", total_ms)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return sign + "".join(parts)
