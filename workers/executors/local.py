"""Runs attempts as child processes on this machine: `hourglass dev` and the tests.

Each attempt gets its own process group (a new session), so a timeout or a cancellation can
stop the whole tree the command started, not just its first process. The last bytes of stdout
and stderr are kept for the database; the full output goes to a log file when a log folder is
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from hourglass.domain import Outcome, RunState
from hourglass.workers.executors.base import AttemptContext

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
# Variables of the worker's own environment an attempt inherits; nothing else leaks in (the
# worker's may hold database credentials).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TMPDIR")


class _Tail:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class LocalExecutor:
    def __init__(self, *, log_dir: Path | None = None, kill_grace: float = 2.0) -> None:
        self.log_dir = log_dir
        self.kill_grace = kill_grace

    def log_path(self, attempt: AttemptContext) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / str(attempt.run_id) / f"attempt-{attempt.attempt}.log"

    async def execute(self, attempt: AttemptContext) -> Outcome:
        task = attempt.task
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update(task.env)
        env.update(attempt.environment())
        try:
            process = await asyncio.create_subprocess_exec(
                *task.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=task.working_dir or None,
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(
                state=RunState.FAILED,
                error=f"cannot start {task.argv[0]!r}: {exc.strerror or exc}",
                finished_at=datetime.now(UTC),
            )
        stdout, stderr = _Tail(TAIL_BYTES), _Tail(TAIL_BYTES)
        log_file: list[IO[bytes]] = []
        readers = [
            asyncio.create_task(self._pump(process.stdout, stdout, log_file, attempt)),
            asyncio.create_task(self._pump(process.stderr, stderr, log_file, attempt)),
        ]
        timeout = attempt.timeout.total_seconds() if attempt.timeout else None
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
            await self._kill_group(process)
        except asyncio.CancelledError:
            await self._kill_group(process)
            raise
        finally:
            # Output still open after the process ended belongs to children it left behind;
            # give them a moment, then end the group so the pipes close.
            _, pending = await asyncio.wait(readers, timeout=1.0)
            if pending:
                _signal_group(process.pid, signal.SIGKILL)
                await asyncio.wait(readers)
            for handle in log_file:
                handle.close()
        finished_at = datetime.now(UTC)
        code = process.returncode
        if timed_out:
            return Outcome(
                state=RunState.TIMED_OUT,
                exit_code=code,
                stdout_tail=stdout.text(),
                stderr_tail=stderr.text(),
                error=f"killed after the timeout of {timeout:g}s",
                finished_at=finished_at,
            )
        error = ""
        if code is not None and code < 0:
            error = f"killed by signal {signal.Signals(-code).name}"
        return Outcome(
            state=RunState.SUCCEEDED if code == 0 else RunState.FAILED,
            exit_code=code,
            stdout_tail=stdout.text(),
            stderr_tail=stderr.text(),
            error=error,
            finished_at=finished_at,
        )

    async def _pump(
        self,
        stream: asyncio.StreamReader | None,
        tail: _Tail,
        log_file: list[IO[bytes]],
        attempt: AttemptContext,
    ) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            tail.add(chunk)
            path = self.log_path(attempt)
            if path is not None:
                if not log_file:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    log_file.append(path.open("ab"))
                log_file[0].write(chunk)
                log_file[0].flush()

    async def _kill_group(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the whole group, then SIGKILL if it is still there after the grace."""
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), self.kill_grace)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
