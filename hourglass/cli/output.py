"""`-o table|wide|json|yaml`: how every command that shows something prints it.

table is for people; wide adds the columns that do not fit a terminal; json and yaml are the
API's own messages (proto3 JSON mapping: camelCase keys, enums by name), for scripts, and
the same in both so a script may pick either."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no stubs: as operator/crds.py)
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

FORMATS = ("table", "wide", "json", "yaml")


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=FORMATS,
        default="table",
        help="table (default), wide (more columns), json or yaml (the API's fields)",
    )


def data(value: Message | Any) -> Any:
    """Plain data (dicts, lists, strings, numbers) for json and yaml."""
    if isinstance(value, Message):
        return MessageToDict(value)
    return value


def _yaml(value: Message | Any) -> str:
    text: str = yaml.safe_dump(data(value), sort_keys=False, allow_unicode=True)
    return text.rstrip("\n")


def render(
    fmt: str,
    value: Message | Any,
    *,
    table: Callable[[], str],
    wide: Callable[[], str] | None = None,
) -> str:
    """`value` as `fmt` asks. `table` and `wide` are called only when chosen; a command
    with nothing more to show in wide shows its table."""
    if fmt == "json":
        return json.dumps(data(value), indent=2)
    if fmt == "yaml":
        return _yaml(value)
    if fmt == "wide" and wide is not None:
        return wide()
    return table()


def stream_item(fmt: str, value: Message | Any, *, table: Callable[[], str]) -> str:
    """One item of a stream (watch): a JSON object per line, or a YAML document each."""
    if fmt == "json":
        return json.dumps(data(value))
    if fmt == "yaml":
        return "---\n" + _yaml(value)
    return table()
