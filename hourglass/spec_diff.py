"""What changed between two specs of a job, in a few words: the CLI's `hourglass revisions`
table and the console's Revisions section show each revision with what it changed from the
one before, so that a reader sees "schedule, env" rather than two specs to compare.

Plain functions of API messages, no I/O. A secret shows only by name: the history has no
values, so a changed secret value is no change here, while an added or removed secret is.
Env shows as a word, never a value.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Callable
from datetime import timedelta

from hourglass.v1 import scheduler_pb2 as pb

# What the API takes for an unset field, so that "unset" and its default compare equal.
_DEFAULT_BACKOFF = timedelta(seconds=1)


def _timeout(spec: pb.JobSpec) -> timedelta | None:
    return spec.timeout.ToTimedelta() if spec.HasField("timeout") else None


def _backoff(spec: pb.JobSpec) -> timedelta:
    return spec.retry_backoff.ToTimedelta() if spec.HasField("retry_backoff") else _DEFAULT_BACKOFF


def _catch_up(spec: pb.JobSpec) -> tuple[int, timedelta | None]:
    window = spec.catch_up.window.ToTimedelta() if spec.catch_up.HasField("window") else None
    return spec.catch_up.policy or pb.CATCH_UP_POLICY_ALL, window


# (word, what of a spec it names), in the order the words are shown.
_PARTS: tuple[tuple[str, Callable[[pb.JobSpec], object]], ...] = (
    ("name", lambda spec: spec.name),
    ("schedule", lambda spec: spec.schedule),
    ("command", lambda spec: list(spec.task.command)),
    ("args", lambda spec: list(spec.task.args)),
    ("binary", lambda spec: spec.task.binary),
    ("image", lambda spec: spec.task.image),
    ("working dir", lambda spec: spec.task.working_dir),
    ("env", lambda spec: dict(spec.task.env)),
    ("secrets", lambda spec: sorted(spec.task.secret_env)),
    ("resources", lambda spec: spec.task.resources),
    ("kubernetes", lambda spec: spec.task.kubernetes),
    ("attempts", lambda spec: spec.max_attempts or 1),
    ("timeout", _timeout),
    ("backoff", _backoff),
    ("overlap", lambda spec: spec.overlap or pb.OVERLAP_POLICY_ALLOW),
    ("catch-up", _catch_up),
)

# What a job's first revision says: there is nothing before it to differ from.
CREATED = "created"
# What an update that kept every part of the spec says.
UNCHANGED = "no change"


def changes(before: pb.JobSpec, after: pb.JobSpec) -> list[str]:
    """The parts of the spec that differ, as words, in a fixed order; [] when none does."""
    return [word for word, part in _PARTS if part(before) != part(after)]


def summary(before: pb.JobSpec | None, after: pb.JobSpec) -> str:
    """One short line: "created" for a first revision, else the words of `changes`."""
    if before is None:
        return CREATED
    return ", ".join(changes(before, after)) or UNCHANGED


def summaries(specs: list[pb.JobSpec], *, oldest_complete: bool) -> list[str]:
    """The summary of each spec of a page of revisions, newest first: each against the next
    (older) one. The oldest has nothing to differ from on the page; it reads "created" when
    it is the job's first revision (`oldest_complete`), else "" (its predecessor is on the
    next page)."""
    lines = [summary(older, newer) for newer, older in itertools.pairwise(specs)]
    if specs:
        lines.append(CREATED if oldest_complete else "")
    return lines


def task_line(task: pb.Task) -> str:
    """What runs, in one line: the command (or uploaded binary) and its args, the image
    after it when there is one."""
    argv = [task.binary, *task.args] if task.binary else [*task.command, *task.args]
    line = shlex.join(argv)
    if task.image:
        line = f"{line} ({task.image})" if line else task.image
    return line or "-"
