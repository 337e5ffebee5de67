"""The exit codes of every `hourglass` command, in one table: what scripts may rely on.

A script tells "no such job" (3) from "the API is down" (4) and from "you may not" (5) without
reading the message. `hourglass lock NAME -- CMD` is the exception: once CMD has run, the exit
code is CMD's own (see cli/locks.py)."""

from __future__ import annotations

import sys
import textwrap

import grpc

OK = 0
FAILURE = 1
USAGE = 2
NOT_FOUND = 3
UNREACHABLE = 4
DENIED = 5
CONFLICT = 6
INTERRUPTED = 130

TABLE: tuple[tuple[int, str], ...] = (
    (OK, "success"),
    (FAILURE, "any other failure"),
    (
        USAGE,
        "bad usage or input: a wrong option, an invalid spec (INVALID_ARGUMENT), an"
        " ambiguous job or run name",
    ),
    (NOT_FOUND, "no such job, run or token (NOT_FOUND)"),
    (
        UNREACHABLE,
        "the API cannot be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED)",
    ),
    (DENIED, "no valid token, or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)"),
    (
        CONFLICT,
        "refused by the current state: the job is managed elsewhere (e.g. by the"
        " operator; use kubectl), already exists, or a quota is used up (FAILED_PRECONDITION,"
        " ALREADY_EXISTS, ABORTED, RESOURCE_EXHAUSTED)",
    ),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)

_BY_STATUS = {
    grpc.StatusCode.OK: OK,
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.OUT_OF_RANGE: USAGE,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNREACHABLE,
    grpc.StatusCode.UNAUTHENTICATED: DENIED,
    grpc.StatusCode.PERMISSION_DENIED: DENIED,
    grpc.StatusCode.FAILED_PRECONDITION: CONFLICT,
    grpc.StatusCode.ALREADY_EXISTS: CONFLICT,
    grpc.StatusCode.ABORTED: CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: CONFLICT,
}


def for_status(code: grpc.StatusCode) -> int:
    """The exit code for an API call that ended with `code`."""
    return _BY_STATUS.get(code, FAILURE)


def help_text() -> str:
    """The table as `hourglass --help` ends with it."""
    lines = ["exit codes:"]
    for code, meaning in TABLE:
        lines += textwrap.wrap(
            meaning, width=88, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7
        )
    return "\n".join(lines)


class Failure(Exception):
    """A command that cannot go on: printed as `hourglass: <message>`, exits with `code`."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def report(exc: grpc.RpcError, *, server: str) -> int:
    """Prints why an API call failed, the server's own words first (a refusal such as "managed
    by the operator: use kubectl" is shown as the API wrote it), and returns the exit code."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        details = exc.details() or ""
        # The API answers UNAVAILABLE itself when one of its own backends (etcd) is down.
        if "etcd" not in details:
            print(
                f"hourglass: cannot reach the API at {server}. Start it with `hourglass dev`,"
                " or point --server (HOURGLASS_SERVER) at it.",
                file=sys.stderr,
            )
            return UNREACHABLE
    print(f"hourglass: {exc.details()} ({code.name})", file=sys.stderr)
    return for_status(code)
