"""Short ids: a job or run named by the first characters of its UUID, as git names commits.

Ids are random (uuid4), so a handful of hex digits already tells thousands of jobs apart. The
API filters by prefix and the CLI decides whether a word is one; both read it here, so that
they agree on what a prefix is."""

from __future__ import annotations

import uuid

MIN_PREFIX_DIGITS = 4
# Where the canonical text of a UUID (8-4-4-4-12) has its dashes.
_DASHES = frozenset({8, 13, 18, 23})
_HEX = frozenset("0123456789abcdef")


def prefix_problem(text: str) -> str | None:
    """Why `text` is not an id prefix, or None when it is one."""
    if len(text) > 36:
        return "is longer than an id"
    for position, char in enumerate(text):
        if position in _DASHES:
            if char != "-":
                return f"needs a dash at position {position + 1}, as in an id"
        elif char not in _HEX:
            return f"has {char!r}: an id prefix holds only lowercase hex digits and dashes"
    digits = len(text.replace("-", ""))
    if digits < MIN_PREFIX_DIGITS:
        return f"has {digits} hex digits: give at least {MIN_PREFIX_DIGITS}"
    return None


def is_prefix(text: str) -> bool:
    return prefix_problem(text) is None


def prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The lowest and highest ids that start with `text`, so that a store finds them with a
    range over its index (PostgreSQL orders uuids by their bytes, as their hex text sorts).
    Raises ValueError naming the problem."""
    problem = prefix_problem(text)
    if problem is not None:
        raise ValueError(f"{text[:64]!r} {problem}")
    digits = text.replace("-", "")
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
