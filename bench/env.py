"""The bench's world: its own PostgreSQL and etcd, a database per scenario, hourglass's real
processes, helper processes, and progress lines on stderr."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from hourglass.embedded import EmbeddedEtcd, EmbeddedPostgres, free_port

HOURGLASS = [sys.executable, "-m", "hourglass.cli.main"]
BENCH = [sys.executable, "-m", "bench.baselines"]
REPO = Path(__file__).resolve().parent.parent
_START = time.monotonic()
# Progress lines are also appended here once the bench knows its results folder.
PROGRESS_LOG: list[Path] = []


def say(message: str) -> None:
    """A progress line: seconds since the bench started, then the message."""
    line = f"[{time.monotonic() - _START:7.1f}s] {message}"
    print(line, file=sys.stderr, flush=True)
    for path in PROGRESS_LOG:
        with path.open("a") as handle:
            handle.write(line + "\n")


def load() -> str:
    """The 1-minute load average and the core count, for the notes of a figure."""
    return f"load {os.getloadavg()[0]:.1f}/{os.cpu_count()} cores"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never logged {needle!r}:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self, timeout: float = 40) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Bench:
    """Servers and files of one bench run. Everything lives in one temporary folder outside
    any pytest tree (the PostgreSQL server runs as another user)."""

    root: Path
    results: Path
    postgres: EmbeddedPostgres | None = None
    etcd: EmbeddedEtcd | None = None
    processes: list[Process] = field(default_factory=list)
    keep: bool = False
    # Details behind the table's figures, saved in results.json.
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def open(cls, results: Path | None, keep: bool) -> Iterator[Bench]:
        root = Path(tempfile.mkdtemp(prefix="hourglass-bench-"))
        os.chmod(root, 0o755)
        results = results or root / "results"
        results.mkdir(parents=True, exist_ok=True)
        PROGRESS_LOG.append(results / "progress.log")
        bench = cls(root=root, results=results, keep=keep)
        try:
            say(f"starting PostgreSQL and etcd under {root}")
            bench.postgres = EmbeddedPostgres(root / "pg" / "data").start()
            bench.etcd = EmbeddedEtcd(root / "etcd").start()
            say(
                f"PostgreSQL {bench.server_setting('server_version')} (fsync "
                f"{bench.server_setting('fsync')}, synchronous_commit "
                f"{bench.server_setting('synchronous_commit')}), etcd on {bench.etcd.endpoint}"
            )
            yield bench
        finally:
            for process in reversed(bench.processes):
                process.stop(timeout=10)
            if bench.etcd is not None:
                bench.etcd.stop()
            if bench.postgres is not None:
                bench.postgres.stop()
            if keep:
                say(f"kept {root}")
            else:
                shutil.rmtree(root / "pg", ignore_errors=True)
                shutil.rmtree(root / "etcd", ignore_errors=True)
                shutil.rmtree(root / "work", ignore_errors=True)
                with contextlib.suppress(OSError):  # empty unless the results are in it
                    root.rmdir()

    # -- PostgreSQL -------------------------------------------------------------------------

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        assert self.postgres is not None
        return psycopg.connect(self.postgres.dsn("postgres"), autocommit=True)

    def server_setting(self, name: str) -> str:
        with self.admin() as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        return str(row[0]) if row else "?"

    def database(self, name: str) -> str:
        """A fresh database migrated by `hourglass migrate`; returns its DSN."""
        assert self.postgres is not None
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        dsn = self.postgres.dsn(name)
        result = subprocess.run(
            [*HOURGLASS, "migrate", "--database-url", dsn],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.work,
        )
        if result.returncode != 0:
            raise RuntimeError(f"hourglass migrate failed:\n{result.stderr}")
        return dsn

    # -- processes --------------------------------------------------------------------------

    @property
    def work(self) -> Path:
        folder = self.root / "work"
        folder.mkdir(exist_ok=True)
        return folder

    def env(self, dsn: str, prefix: str = "") -> dict[str, str]:
        assert self.etcd is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        env.update(
            HOURGLASS_DATABASE_URL=dsn,
            HOURGLASS_ETCD_ENDPOINTS=self.etcd.endpoint,
            HOURGLASS_ETCD_PREFIX=prefix or f"/bench-{uuid.uuid4().hex[:8]}/",
        )
        return env

    def helper_env(self) -> dict[str, str]:
        """The environment of our own helper processes (`python -m bench.baselines`), which
        must find the bench package. hourglass's processes do not get this: they import
        hourglass as installed, as a user's would."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        log = self.results / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def hourglass(
        self,
        name: str,
        command: str,
        env: dict[str, str],
        *args: str,
        launcher: list[str] | None = None,
    ) -> Process:
        """`hourglass COMMAND` as its own process; returns once it is ready. `launcher`
        replaces `python -m hourglass.cli.main` (bench/whatif.py runs patched variants)."""
        process = self.start(name, [*(launcher or HOURGLASS), command, *args], env)
        if command == "worker":
            process.wait_for("hourglass worker running")
            try:  # logged at INFO, once the worker has its etcd lease
                process.wait_for("holds lease", timeout=3)
            except RuntimeError:
                if process.popen.poll() is not None:
                    raise
        elif command == "api":
            process.wait_for("hourglass api serving on")
        else:
            process.wait_for(f"hourglass {command} running")
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        self.processes.remove(process)

    def baseline(
        self,
        mode: str,
        args: dict[str, Any],
        env: dict[str, str] | None = None,
        module: str = "bench.baselines",
    ) -> dict[str, Any]:
        """Runs one baseline in its own Python process (its own event loop, like a hourglass
        component); its progress lines go to our stderr; returns its JSON result."""
        result = subprocess.run(
            [*BENCH[:-1], module, mode, json.dumps(args)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            check=False,
            cwd=self.work,
            env=env or self.helper_env(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"baseline {mode} failed with {result.returncode}")
        return json.loads(result.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def port() -> int:
    return free_port()


# -- CPU accounting ---------------------------------------------------------------------------
# On a shared two-core machine wall-clock rates are noisy; CPU time spent per run is much less
# so, and it says which process a run's cost lands in.

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of a process (all its threads); with children, of its reaped children."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    first = 13 if children else 11  # cutime, cstime / utime, stime
    return (int(fields[first]) + int(fields[first + 1])) / _TICK


def tree_cpu(pid: int) -> float:
    """A server's CPU seconds: itself, its reaped children, and its live children (PostgreSQL
    backends)."""
    total = process_cpu(pid) + process_cpu(pid, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                total += process_cpu(int(entry.name))
    return total


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, sum(values[:8]) / _TICK


@dataclass
class CpuMeter:
    """CPU seconds spent between start() and stop() by named processes and by the servers."""

    bench: Bench
    pids: dict[str, int] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        assert self.bench.postgres is not None and self.bench.etcd is not None
        assert self.bench.etcd.process is not None
        sample = {
            "postgres": tree_cpu(int(self.bench.postgres.server.get_pid())),
            "etcd": process_cpu(self.bench.etcd.process.pid),
        }
        for name, pid in self.pids.items():
            sample[name] = process_cpu(pid)
            sample[f"{name} children"] = process_cpu(pid, children=True)
        busy, total = machine_busy()
        sample["machine busy"], sample["machine total"] = busy, total
        return sample

    def start(self, **pids: int) -> CpuMeter:
        self.pids = pids
        self.before = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.spent = {k: after[k] - self.before.get(k, 0.0) for k in after}
        return self.spent
