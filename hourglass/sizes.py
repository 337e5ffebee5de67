"""Byte sizes as a person writes them: "1048576", "512KiB", "1.5GiB", "10MB"."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?")


def parse(text: str) -> int:
    """A whole number of bytes; raises ValueError saying what is accepted."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"invalid size {text!r}: use a number of bytes, optionally with a unit"
            " (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 1GiB"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit or ""])


def format(size: int) -> str:
    """The exact size in the largest binary unit that divides it: 1073741824 -> "1GiB"."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"
