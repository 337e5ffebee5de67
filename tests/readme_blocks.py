"""The README's fenced code blocks, as data: found, classified, split into commands, with
their placeholders filled and their claimed output turned into patterns.

Pure: no server, no shell. tests/acceptance/test_readme.py runs what this module finds, so a
block the README gains or changes is run without anyone editing the test.

Every block carries a marker, an HTML comment on the line before its opening fence (blank
lines may come between):

    <!-- readme-test: dev -->           run in order against a real `hourglass dev`
    <!-- readme-test: k8s -->           run against the Kubernetes test bed
    <!-- readme-test: cluster -->       run as written, as one bash script, on the real
                                          cluster of tests/cluster (as root)
    <!-- readme-test: output COMMAND --> a sample of what COMMAND (as written in an earlier
                                          dev block) prints; its shape must match
    <!-- readme-test: skip REASON -->   not run, for the reason given

A block without one fails the test, saying how to mark it (see `UNMARKED`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

CLASSES = ("dev", "k8s", "cluster", "output", "skip")
UNMARKED = (
    "README.md:{line} (under '{heading}'): a code block without a marker. Put one of\n"
    "  <!-- readme-test: dev -->            (run against `hourglass dev`)\n"
    "  <!-- readme-test: k8s -->            (run against the Kubernetes test bed)\n"
    "  <!-- readme-test: cluster -->        (run as one script on tests/cluster's cluster)\n"
    "  <!-- readme-test: output COMMAND --> (a sample of what COMMAND prints)\n"
    "  <!-- readme-test: skip REASON -->    (never run; say why)\n"
    "on the line before its opening ``` (see tests/readme_blocks.py)."
)
_MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<kind>[\w-]+)\s*(?P<argument>.*?)\s*-->")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[\w-]*)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
_PLACEHOLDER = re.compile(r"<(?P<name>[a-z][a-z ]*)>")
# `[-f]`: an optional flag of a usage line. The test runs the command with it.
_OPTIONAL_FLAG = re.compile(r"\[(?P<flag>-[-\w]+)\]")


@dataclass(frozen=True)
class Block:
    """One fenced block: `line` is the 1-based line of its opening fence."""

    line: int
    heading: str
    info: str
    text: str
    kind: str | None
    argument: str

    def where(self) -> str:
        return f"README.md:{self.line} (under '{self.heading}')"


@dataclass(frozen=True)
class Command:
    """One command of a block (continuation lines joined), without its trailing comment."""

    line: int
    text: str
    comment: str


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of `markdown`, in order, with the marker found right before it."""
    found: list[Block] = []
    heading = "(top)"
    marker: tuple[str, str] | None = None
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence is None:
            if (title := _HEADING.match(line)) is not None:
                heading = title["title"]
            if (mark := _MARKER.search(line)) is not None:
                marker = (mark["kind"], mark["argument"])
            elif line.strip():
                marker = None
            index += 1
            continue
        closing = fence["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].startswith(closing):
            body.append(lines[end])
            end += 1
        kind, argument = marker if marker is not None else (None, "")
        found.append(
            Block(
                line=index + 1,
                heading=heading,
                info=fence["info"],
                text="\n".join(body),
                kind=kind,
                argument=argument,
            )
        )
        marker = None
        index = end + 1
    return found


def problems(found: list[Block]) -> list[str]:
    """What is wrong with the markers: unmarked blocks, unknown classes, missing arguments."""
    wrong = []
    for block in found:
        if block.kind is None:
            wrong.append(UNMARKED.format(line=block.line, heading=block.heading))
        elif block.kind not in CLASSES:
            wrong.append(f"{block.where()}: unknown class {block.kind!r}; use one of {CLASSES}")
        elif block.kind in ("output", "skip") and not block.argument:
            what = "the command it shows" if block.kind == "output" else "the reason"
            wrong.append(f"{block.where()}: `readme-test: {block.kind}` needs {what}")
    return wrong


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at the first `#` outside quotes that begins a
    word, as in the shell."""
    quote = ""
    for position, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1].isspace()):
            return line[:position].rstrip(), line[position + 1 :].strip()
    return line.rstrip(), ""


def commands(block: Block) -> list[Command]:
    """The block's commands: continuation lines (ending in `\\`) joined, comment-only and
    blank lines left out."""
    found: list[Command] = []
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending:
            start = offset
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1].rstrip())
            continue
        text, comment = split_comment(" ".join([*pending, raw.strip()]).strip())
        pending = []
        if text:
            found.append(Command(line=start, text=text, comment=comment))
    return found


def substitute(text: str, *, literals: Mapping[str, str], values: Mapping[str, str]) -> str:
    """`text` with each literal (an address such as 127.0.0.1:50051) replaced, `[-f]` made
    `-f`, and each `<placeholder>` filled from `values`. KeyError names a placeholder that
    has no value yet."""
    for old in sorted(literals, key=len, reverse=True):
        text = text.replace(old, literals[old])
    text = _OPTIONAL_FLAG.sub(lambda match: match["flag"], text)

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in values:
            raise KeyError(
                f"no value for <{name}> in {text!r}: known so far {sorted(values)}; "
                "add it to the substitution table in tests/acceptance/test_readme.py"
            )
        return values[name]

    return _PLACEHOLDER.sub(fill, text)


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SHAPES = [
    (re.compile(_UUID), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"\b\d+\.\d+s\b"), "<seconds>"),
]


def shape(line: str) -> str:
    """A line with ids, times and durations replaced by their kind, and runs of spaces made
    one, so that a sample and a real output of the same form compare equal."""
    for pattern, kind in _SHAPES:
        line = pattern.sub(kind, line)
    return " ".join(line.split())


def unmatched(sample: str, output: str) -> list[str]:
    """The sample's lines (other than `...`) that do not appear, in order and by shape, among
    the output's lines; [] when the output has the sample's shape."""
    wanted = [shape(line) for line in sample.splitlines() if line.strip() not in ("", "...")]
    have = [shape(line) for line in output.splitlines()]
    missing = []
    position = 0
    for line in wanted:
        try:
            position = have.index(line, position) + 1
        except ValueError:
            missing.append(line)
    return missing


@dataclass(frozen=True)
class Claim:
    """What a comment says a command prints: `pattern` must match (re.search, multiline)."""

    says: str
    pattern: re.Pattern[str]


def _quoted(sample: str) -> re.Pattern[str]:
    """A quoted sample as a pattern: numbers may differ (ports), the rest is literal."""
    parts = re.split(r"\d+", sample)
    return re.compile(r"\d+".join(re.escape(part) for part in parts))


# Comment phrasings that claim an output, and the pattern each claim means. A comment that
# says "prints" must match one of these, so that a new claim cannot go unchecked.
CLAIMS: list[tuple[re.Pattern[str], re.Pattern[str] | None]] = [
    (re.compile(r"prints the job id"), re.compile(rf"\A{_UUID}\n\Z")),
    (re.compile(r"prints sha256:"), re.compile(r"\Asha256:[0-9a-f]{64}\n\Z")),
    (re.compile(r"prints the token once"), re.compile(r"\A\S{20,}\n\Z")),
    (re.compile(r'prints "(?P<quoted>[^"]+)"'), None),
]
# `NAME, SCHEDULE, NEXT FIRE`: the columns of a table's header, in order.
_COLUMNS = re.compile(r"^[A-Z][A-Z ]*(, [A-Z][A-Z ]*)+$")


def claim(comment: str) -> Claim | None:
    """The output that `comment` claims, or None when it claims none. ValueError for a
    comment that says "prints" in a way no entry of CLAIMS understands."""
    if _COLUMNS.match(comment):
        columns = [name.strip() for name in comment.split(",")]
        header = r"\s{2,}".join(re.escape(name) for name in columns)
        return Claim(comment, re.compile(rf"\A{header}\s*$", re.MULTILINE))
    for phrasing, pattern in CLAIMS:
        if (match := phrasing.search(comment)) is not None:
            if pattern is None:
                pattern = _quoted(match["quoted"])
            return Claim(comment, pattern)
    if re.search(r"\bprints\b", comment):
        raise ValueError(
            f"the comment {comment!r} claims an output that no entry of CLAIMS in "
            "tests/readme_blocks.py checks; add one"
        )
    return None
