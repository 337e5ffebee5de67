"""`hourglass completion bash|zsh|fish`: a shell completion script for every command and
option, written by shtab from the parser itself, so it never lags behind the commands."""

from __future__ import annotations

import argparse
from typing import Any

from hourglass.cli.options import command

SHELLS = ("bash", "zsh", "fish")


def add_parser(commands: Any) -> None:
    completion = command(
        commands,
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script of every command and option for your shell."
        " Load it once, or save it where your shell loads completions.",
        examples=[
            'eval "$(hourglass completion bash)"          # bash, this shell',
            "hourglass completion bash > /etc/bash_completion.d/hourglass",
            'hourglass completion zsh > "${fpath[1]}/_hourglass"',
            "hourglass completion fish > ~/.config/fish/completions/hourglass.fish",
        ],
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab

    text: str = shtab.complete(parser, shell=shell)
    return text
