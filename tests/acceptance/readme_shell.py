"""A real bash for the README's commands, one command at a time, keeping what a user's
terminal keeps between them: the environment (`source .venv/bin/activate`, `export ...`)
and the working folder.

Each command runs in its own `bash -c`, in a process group of its own (so a stream or a
server and everything it started can be stopped together), started with the environment and
folder the previous command left; afterwards the script writes both out for the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# After the command: its status, then the environment and folder it leaves behind.
_SCRIPT = """{{
{command}
}}
__readme_status=$?
env -0 > {state}/env
pwd > {state}/pwd
exit $__readme_status
"""


@dataclass(frozen=True)
class Result:
    command: str
    status: int | None  # None: still running when it was stopped (a stream, a server)
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {self.command}\n[exit {self.status}]\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


class Shell:
    """The user's terminal: `run` a command to its end, `start_until` a stream or a server
    until its output shows a condition."""

    def __init__(self, *, folder: Path, env: dict[str, str], state: Path) -> None:
        self.cwd = folder
        self.env = env
        self.state = state
        self.state.mkdir(exist_ok=True)
        self.count = 0

    def _spawn(self, command: str, *, keep_state: bool) -> tuple[subprocess.Popen[bytes], Path]:
        self.count += 1
        output = self.state / f"{self.count}"
        script = (
            _SCRIPT.format(command=command, state=self.state) if keep_state else f"exec {command}\n"
        )
        (self.state / "env").unlink(missing_ok=True)
        with (
            output.with_suffix(".out").open("wb") as stdout,
            output.with_suffix(".err").open("wb") as stderr,
        ):
            process = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-c", script],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return process, output

    @staticmethod
    def _read(output: Path) -> tuple[str, str]:
        return (
            output.with_suffix(".out").read_text(errors="replace"),
            output.with_suffix(".err").read_text(errors="replace"),
        )

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> int:
        """SIGTERM to the command's process group, SIGKILL after 30 s; its exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def run(self, command: str, *, timeout: float = 90) -> Result:
        """Runs `command` to its end; the environment and folder it leaves are kept. A
        command still running after `timeout` is stopped and reported as such."""
        process, output = self._spawn(command, keep_state=True)
        try:
            status: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._stop(process)
            status = None
        stdout, stderr = self._read(output)
        if status is not None and (self.state / "env").exists():
            pairs = (self.state / "env").read_bytes().split(b"\0")
            self.env = dict(
                pair.decode(errors="replace").split("=", 1) for pair in pairs if b"=" in pair
            )
            self.cwd = Path((self.state / "pwd").read_text().strip())
        return Result(command, status, stdout, stderr)

    def start_until(
        self, command: str, ready: Callable[[str], bool], *, timeout: float = 90
    ) -> tuple[Result, int | None]:
        """Starts `command` (exec'd: a server or a stream), waits until `ready(stdout)` or it
        ends or `timeout` passes, then stops it with SIGTERM. Returns what it printed (status
        None if it was still running when `ready` held) and its status once stopped."""
        process, output = self._spawn(command, keep_state=False)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if ready(self._read(output)[0]):
                break
            time.sleep(0.1)
        running = process.poll() is None
        stopped = self._stop(process) if running else process.returncode
        stdout, stderr = self._read(output)
        return Result(command, None if running else stopped, stdout, stderr), stopped


READY = re.compile(r"^hourglass [\w-]+:? (serving|running)\b", re.MULTILINE)
