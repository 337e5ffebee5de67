"""Runs attempts as child processes on this machine: `hourglass dev` and the tests.

Each attempt gets its own process group (a new session), so a timeout or a cancellation can
stop the whole tree the command started, not just its first process. The last bytes of stdout
and stderr are kept for the database; the full output goes to a log file when a log folder is
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from hourglass.artifacts import ArtifactError, ArtifactStore, Digest, parse_digest
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
    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        kill_grace: float = 2.0,
        binaries: BinaryCache | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.kill_grace = kill_grace
        self.binaries = binaries

    async def terminate(self, attempt: AttemptContext) -> None:
        """Nothing beyond cancellation: a cancelled execute() ends the process group."""

    def log_path(self, attempt: AttemptContext) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / str(attempt.run_id) / f"attempt-{attempt.attempt}.log"

    async def execute(self, attempt: AttemptContext) -> Outcome:
        task = attempt.task
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update(task.env)
        env.update(task.secret_env)
        env.update(attempt.environment())
        argv = task.argv
        if task.binary:
            if self.binaries is None:
                return _failed("this worker has no artifact store to fetch binaries from")
            try:
                path = await self.binaries.get(parse_digest(task.binary))
            except (ArtifactError, ValueError) as exc:
                return _failed(f"binary {task.binary} not run: {exc}")
            argv = [str(path), *task.args]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=task.working_dir or None,
                start_new_session=True,
            )
        except OSError as exc:
            return _failed(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        stdout, stderr = _Tail(TAIL_BYTES), _Tail(TAIL_BYTES)
        log_file: list[IO[bytes]] = []
        readers = [
            asyncio.create_task(self._pump(process.stdout, 1, stdout, log_file, attempt)),
            asyncio.create_task(self._pump(process.stderr, 2, stderr, log_file, attempt)),
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
        number: int,
        tail: _Tail,
        log_file: list[IO[bytes]],
        attempt: AttemptContext,
    ) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            tail.add(chunk)
            attempt.on_output(number, chunk)
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


def _failed(error: str) -> Outcome:
    return Outcome(state=RunState.FAILED, error=error, finished_at=datetime.now(UTC))


class BinaryCache:
    """Uploaded binaries on this machine: fetched once from the artifact store into a cache
    folder, verified against their digest on the way in and again before each run, so a
    binary corrupted in the store or on disk is refused rather than run."""

    def __init__(self, store: ArtifactStore, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self._lock = asyncio.Lock()

    async def get(self, digest: Digest) -> Path:
        path = self.folder / digest.replace(":", "-")
        async with self._lock:
            if path.exists() and not await asyncio.to_thread(_matches, path, digest):
                log.warning("cached binary %s is corrupt; fetching it again", digest)
                path.unlink()
            if not path.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                await self.store.fetch(digest, path)
            path.chmod(0o755)
        return path


def _matches(path: Path, digest: str) -> bool:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return f"sha256:{hasher.hexdigest()}" == digest


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
