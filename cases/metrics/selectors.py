"""Series selectors, as Prometheus spells them: `cpu_seconds{host!="a", path=~"/v1/.*"}`.

Pure: the parse, and the meaning of each matcher against a label set (so the SQL of the label
index, store.select_series, can be checked against it). As in Prometheus, a label that a
series lacks has the value "", regular expressions are anchored at both ends, and a selector
must hold one matcher that the empty value does not satisfy (otherwise it would pick every
series there is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hourglass.cases import Invalid
from hourglass.cases.metrics.validation import LABEL_NAME, METRIC_NAME

OPS = ("=", "!=", "=~", "!~")
MAX_SELECTOR = 4096
_TOKEN = re.compile(
    r'\s*(?:(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"'
    r"|'(?:[^'\\]|\\.)*')\s*(?P<sep>,|(?=}))|(?P<end>}))"
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str

    @property
    def pattern(self) -> str:
        """The regular expression anchored as Prometheus anchors it (=~ and !~ only)."""
        return f"^(?:{self.value})$"

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit

    def matches_empty(self) -> bool:
        return self.matches({})


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


def parse(selector: str, field: str = "selector") -> tuple[Matcher, ...]:
    """The matchers of `selector`; Invalid(field, reason) for anything else."""
    text = selector.strip()
    if not text:
        raise Invalid(field, 'must not be empty (a series selector such as up{job="api"})')
    if len(text) > MAX_SELECTOR:
        raise Invalid(field, f"at most {MAX_SELECTOR} characters")
    matchers: list[Matcher] = []
    head = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    rest = text
    if head:
        matchers.append(Matcher("__name__", "=", head.group(0)))
        rest = text[head.end() :].strip()
    if rest:
        if not rest.startswith("{"):
            raise Invalid(field, f"expected {{ after the metric name, found {rest[:20]!r}")
        position = 1
        while True:
            found = _TOKEN.match(rest, position)
            if not found:
                raise Invalid(
                    field,
                    f"cannot read a matcher at {rest[position : position + 20]!r}"
                    ' (name="value", name!="value", name=~"regex", name!~"regex")',
                )
            position = found.end()
            if found.group("end"):
                break
            matcher = Matcher(
                found.group("name"), found.group("op"), _unquote(found.group("value"))
            )
            if matcher.op in ("=~", "!~"):
                try:
                    re.compile(matcher.value)
                except re.error as exc:
                    raise Invalid(
                        field, f"{matcher.name}: bad regular expression ({exc})"
                    ) from None
            if (
                matcher.name == "__name__"
                and matcher.op == "="
                and not METRIC_NAME.fullmatch(matcher.value)
            ):
                raise Invalid(field, f"{matcher.value!r} is not a metric name")
            matchers.append(matcher)
        if rest[position:].strip():
            raise Invalid(field, f"unexpected {rest[position : position + 20]!r} after the }}")
    if not matchers:
        raise Invalid(field, "needs at least one matcher")
    for matcher in matchers:
        if not LABEL_NAME.fullmatch(matcher.name):  # pragma: no cover - the token regex
            raise Invalid(field, f"{matcher.name!r} is not a label name")
    if all(matcher.matches_empty() for matcher in matchers):
        raise Invalid(
            field,
            "needs at least one matcher that does not match the empty value"
            " (it would pick every series)",
        )
    return tuple(matchers)


def select(matchers: tuple[Matcher, ...], labels: dict[str, str]) -> bool:
    """Whether a series with `labels` is picked: the meaning store.select_series implements."""
    return all(matcher.matches(labels) for matcher in matchers)
