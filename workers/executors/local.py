"""Runs attempts as child processes on this machine: `hourglass worker`, `hourglass dev` and
the tests.

With a sandbox (the default of `hourglass worker` and `hourglass dev`), each attempt runs as
its own uid in its own namespaces and cgroup (`sandbox.py`, `host.py`): a timeout or a
cancellation signals every process of its cgroup, and the end of its PID namespace's init ends
anything left, `setsid` ones included. Without one (in-process tests, `hourglass dev
--unsandboxed`), each attempt gets its own process group and runs as the worker's user.

The last bytes of stdout and stderr are kept for the database; the output also goes to a log
file, up to `log_limit` bytes, when a log folder is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from hourglass.artifacts import ArtifactError, ArtifactStore, Digest, parse_digest
from hourglass.domain import Outcome, RunState
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.host import Host, Slot
from hourglass.workers.executors.process import AttemptProcess
from hourglass.workers.executors.sandbox import (
    SandboxError,
    attempt_environment,
    launch,
    memory_bytes,
    signal_of,
)

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
# Variables of the worker's own environment an attempt inherits; nothing else leaks in (the
# worker's may hold database credentials).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TMPDIR")
# The most output of one attempt kept in its file under the log folder.
DEFAULT_LOG_LIMIT = 64 * 1024 * 1024


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
        sandbox: Host | None = None,
        log_limit: int = DEFAULT_LOG_LIMIT,
    ) -> None:
        self.log_dir = log_dir
        self.kill_grace = kill_grace
        self.binaries = binaries
        # Started by the caller (Host.start); None runs attempts as the worker's own user.
        self.sandbox = sandbox
        self.log_limit = log_limit

    async def terminate(self, attempt: AttemptContext) -> None:
        """Nothing beyond cancellation: a cancelled execute() ends the process group."""

    def log_path(self, attempt: AttemptContext) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / str(attempt.run_id) / f"attempt-{attempt.attempt}.log"

    async def execute(self, attempt: AttemptContext) -> Outcome:
        task = attempt.task
        if task.kubernetes is not None and task.kubernetes.job_template:
            return _failed(
                "the task is a Kubernetes job template: only a worker with the kubernetes "
                "executor runs it"
            )
        argv = task.argv
        binary: Path | None = None
        if task.binary:
            if self.binaries is None:
                return _failed("this worker has no artifact store to fetch binaries from")
            try:
                binary = await self.binaries.get(parse_digest(task.binary))
            except (ArtifactError, ValueError) as exc:
                return _failed(f"binary {task.binary} not run: {exc}")
            argv = [str(binary), *task.args]
        if self.sandbox is None:
            env = {name: os.environ[name] for name in INHERITED if name in os.environ}
            env.update(task.env)
            env.update(task.secret_env)
            env.update(attempt.environment())
            return await self._run(attempt, argv, env=env, cwd=task.working_dir or None)
        env = attempt_environment(
            os.environ,
            task_env=task.env,
            secret_env=task.secret_env,
            attempt_env=attempt.environment(),
        )
        if binary is None and not _findable(argv[0], env["PATH"]):
            return _failed(f"cannot start {argv[0]!r}: no such program")
        try:
            memory = memory_bytes(task.resources.memory_limit)
            slot = self.sandbox.acquire(
                f"r-{attempt.run_id}-{attempt.attempt}", memory=memory, namespace=attempt.namespace
            )
        except (SandboxError, ValueError) as exc:
            return _failed(f"not run: {exc}")
        try:
            sandboxed = launch(
                self.sandbox.config,
                uid=slot.uid,
                worker_pid=os.getpid(),
                cgroup_procs=slot.cgroup.procs_files(),
                command=argv,
                working_dir=task.working_dir,
                binary=binary,
            )
            outcome = await self._run(attempt, sandboxed, env=env, cwd="/", slot=slot)
            if outcome.state == RunState.FAILED and slot.cgroup.oom_killed():
                limit = task.resources.memory_limit
                error = f"out of memory: killed at its limit of {limit}"
                outcome = dataclasses.replace(outcome, error=error)
        finally:
            await asyncio.to_thread(slot.close)
        return outcome

    async def _run(
        self,
        attempt: AttemptContext,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        slot: Slot | None = None,
    ) -> Outcome:
        stdout, stderr = _Tail(TAIL_BYTES), _Tail(TAIL_BYTES)
        log_file = _LogFile(self.log_path(attempt), self.log_limit)
        tails = {1: stdout, 2: stderr}

        def output(number: int, chunk: bytes) -> None:
            tails[number].add(chunk)
            attempt.on_output(number, chunk)
            log_file.write(chunk)

        try:
            transport, process = await asyncio.get_running_loop().subprocess_exec(
                lambda: AttemptProcess(output),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return _failed(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        process.pid = transport.get_pid()
        timeout = attempt.timeout.total_seconds() if attempt.timeout else None
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
            await self._stop(process, slot)
        except asyncio.CancelledError:
            await self._stop(process, slot)
            raise
        finally:
            # Output still open after the process ended belongs to children it left behind
            # (unsandboxed: a sandbox's end takes them along); give them a moment, then end the
            # group so the pipes close.
            try:
                if process.open_pipes:  # most have closed by now: no wait, no timer
                    await asyncio.wait_for(process.drained(), 1.0)
            except TimeoutError:
                if slot is not None:
                    slot.cgroup.kill()
                _signal_group(process.pid, signal.SIGKILL)
                await process.drained()
            finally:
                transport.close()
                log_file.close()
        finished_at = datetime.now(UTC)
        code = transport.get_returncode()
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
        elif slot is not None and code is not None and (number := signal_of(code)):
            error = f"killed by signal {_signal_name(number)} (exit status {code})"
        return Outcome(
            state=RunState.SUCCEEDED if code == 0 else RunState.FAILED,
            exit_code=code,
            stdout_tail=stdout.text(),
            stderr_tail=stderr.text(),
            error=error,
            finished_at=finished_at,
        )

    async def _stop(self, process: AttemptProcess, slot: Slot | None) -> None:
        """SIGTERM to the whole tree, then SIGKILL if it is still there after the grace."""
        if slot is None:
            await self._kill_group(process)
            return
        # The sandbox's own processes (the first, and the namespace's init) stay out of the
        # SIGTERM: the init exits with the job, and the namespace goes with it.
        wrappers = {process.pid, *_children(process.pid)}
        _signal_all(slot, signal.SIGTERM, wrappers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), self.kill_grace)
            return
        _signal_all(slot, signal.SIGKILL, wrappers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 1.0)
            return
        slot.cgroup.kill()
        await process.wait()

    async def _kill_group(self, process: AttemptProcess) -> None:
        """SIGTERM to the whole group, then SIGKILL if it is still there after the grace."""
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), self.kill_grace)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


class _LogFile:
    """An attempt's output file under the log folder, cut at `limit` bytes with a note line
    that says so. Readable by the worker's user only: another attempt must not read it."""

    def __init__(self, path: Path | None, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self.cut = False
        self._handle: IO[bytes] | None = None

    def write(self, chunk: bytes) -> None:
        if self.path is None or self.cut:
            return
        if self._handle is None:
            self.path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._handle = os.fdopen(fd, "ab")
        room = self.limit - self.written
        if len(chunk) > room:
            self.cut = True
            chunk = chunk[:room]
        self._handle.write(chunk)
        self.written += len(chunk)
        if self.cut:
            note = f"\n[hourglass: output cut here, at {self.limit} bytes (--log-max-bytes)]\n"
            self._handle.write(note.encode())
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


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


def _findable(program: str, path: str) -> bool:
    """Whether a command can be found before the sandbox starts, so that a missing program
    fails with that reason (a relative path depends on the working directory: not checked)."""
    if "/" in program and not program.startswith("/"):
        return True
    return shutil.which(program, path=path) is not None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _signal_all(slot: Slot, sig: signal.Signals, spare: set[int]) -> None:
    for pid in slot.cgroup.pids():
        if pid not in spare:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
