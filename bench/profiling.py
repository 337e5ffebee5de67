"""py-spy on hourglass's processes, and a summary of where their time goes.

Samples are recorded in py-spy's raw (collapsed-stack) format: one line per distinct stack,
`frame;frame;...;leaf count`, small and readable, and speedscope (https://speedscope.app) opens
it as is. Only threads running Python code are sampled (no --idle), so a process's samples
divided by (seconds x rate) is how busy it was.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.env import Process, say

RATE = 100  # samples per second

# Phases of the worker and the producer: the first rule (in this order) whose pattern matches
# any frame of a sample's stack names the sample's phase. py-spy names frames
# "Class.function (package/file.py:line)"; the thread comes first.
PHASES: list[tuple[str, str]] = [
    ("logging (log.info lines)", r"\(logging/"),
    ("metrics (prometheus_client)", r"\(prometheus_client/"),
    ("pool: check_connection (a round trip per borrow)", r"check_connection"),
    ("tenacity retry wrapper (retrying.forever)", r"\(tenacity/"),
    ("spawn: fork/exec (Popen._execute_child)", r"^Popen\._execute_child "),
    ("spawn: child watcher, a thread per child", r"ThreadedChildWatcher|^thread .*asyncio-waitpid"),
    (
        "spawn: other process setup",
        r"create_subprocess_exec|_make_subprocess_transport|"
        r"BaseSubprocessTransport\.__init__|^Popen\.|_get_devnull",
    ),
    (
        "executor: pipes, exit, outcome",
        r"LocalExecutor|_UnixReadPipeTransport|StreamReader|"
        r"BaseSubprocessTransport|_process_exited",
    ),
    ("claim: lock_queued (SELECT ... FOR UPDATE SKIP LOCKED)", r"^lock_queued "),
    ("claim: etcd txn (hold_runs)", r"^Etcd\.hold_runs "),
    ("claim: mark_running (UPDATE runs, INSERT attempts)", r"^mark_running "),
    ("claim: BEGIN/COMMIT, pool", r"^Worker\.claim "),
    (
        "finish: results.finish_and_start (fenced UPDATEs, start marks included)",
        r"^finish_(many|and_start) \(hourglass/store/results",
    ),
    ("release: etcd txn (release_runs)", r"^Etcd\.release_runs "),
    ("log shipper", r"LogShipper"),
    ("finish: pool, retry wrapper, batching", r"^Finisher\.|^Worker\._execute "),
    ("worker: waiting for a slot, attempt bookkeeping", r"^Worker\._(take_slot|attempt) "),
    ("main loop: next_available_at query", r"^Worker\._idle_seconds "),
    ("main loop: cancellation check", r"^Worker\._check_cancellations "),
    ("producer: fire_due", r"^fire_due "),
    ("producer: next_due_at", r"^Producer\.seconds_until_due |^next_due_at "),
    ("producer: BEGIN/COMMIT, pool", r"^Producer\.run_once "),
    ("LISTEN wake-ups", r"^Wakeups\."),
    ("etcd lease heartbeat", r"^Lease\."),
    ("api: jobs.create (store)", r"^create \(hourglass/store/jobs"),
    ("api: validation, conversion", r"\(api/(validation|convert)"),
    ("api: token, metrics, handler", r"\(api/"),
    ("grpc poller thread (C core; etcd client or API server)", r"_poll_wrapper"),
    ("psycopg, not attributed (async stack cut)", r"\(psycopg"),
    ("grpc aio (etcd client), not attributed", r"\(grpc/"),
    ("event loop: select, callbacks, tasks", r"\((asyncio|selectors)"),
]


@dataclass
class Recording:
    process: Process
    output: Path
    spy: subprocess.Popen[bytes]
    started: float
    seconds: float = 0.0


@dataclass
class Profiler:
    folder: Path
    recordings: list[Recording] = field(default_factory=list)

    @staticmethod
    def available() -> str | None:
        """The py-spy executable, or None."""
        beside = Path(sys.executable).parent / "py-spy"
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def attach(self, process: Process) -> None:
        spy = self.available()
        if spy is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        output = self.folder / f"{process.name}.collapsed.txt"
        popen = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
                "--threads",
                "--rate",
                str(RATE),
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / f"{process.name}.py-spy.log").open("wb"),
        )
        self.recordings.append(Recording(process, output, popen, time.monotonic()))

    def detach(self) -> None:
        for recording in self.recordings:
            if recording.seconds:
                continue
            recording.seconds = time.monotonic() - recording.started
            recording.spy.send_signal(signal.SIGINT)
        for recording in self.recordings:
            try:
                recording.spy.wait(60)
            except subprocess.TimeoutExpired:
                recording.spy.kill()
                recording.spy.wait()

    def summaries(self) -> str:
        return "\n\n".join(summarise(r.output, r.process.name, r.seconds) for r in self.recordings)


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


OURS = re.compile(r"\((hourglass|workers|api)/")
ROOTS = re.compile(r"^(main|<module>|_run_component|run) \(hourglass/cli/")
_LINENO = re.compile(r":\d+\)$")


def _name(frame: str) -> str:
    """'claim (hourglass/workers/worker.py:142)' -> 'claim (hourglass/workers/worker.py)'."""
    return _LINENO.sub(")", frame)


def summarise(path: Path, name: str, seconds: float, top: int = 12) -> str:
    if not path.exists():
        return f"{name}: no profile recorded"
    threads: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        thread, stack = frames[0], [_name(f) for f in frames[1:]]
        threads[thread] += count
        total += count
        leaves[stack[-1] if stack else "?"] += count
        for frame in set(stack):
            inclusive[frame] += count
        phase = "other"
        for label, pattern in PHASES:
            if any(re.search(pattern, frame) for frame in (thread, *stack)):
                phase = label
                break
        phases[phase] += count
    if not total:
        return f"{name}: no samples"
    main = sum(c for t, c in threads.items() if "MainThread" in t)
    lines = [
        f"{name}: {total:,} samples over {seconds:.1f}s at {RATE}/s; main thread "
        f"{main / (seconds * RATE):.0%} busy; {len(threads)} threads seen",
        "  phases (share of all samples):",
    ]
    for label, count in phases.most_common():
        lines.append(f"    {count / total:6.1%}  {label}")
    lines.append("  top functions, self time:")
    for frame, count in leaves.most_common(top):
        lines.append(f"    {count / total:6.1%}  {frame}")
    lines.append("  top hourglass functions, inclusive time:")
    ours = [(f, c) for f, c in inclusive.most_common() if OURS.search(f)]
    ours = [(f, c) for f, c in ours if not ROOTS.match(f)]
    for frame, count in ours[:top]:
        lines.append(f"    {count / total:6.1%}  {frame}")
    return "\n".join(lines)


def main() -> int:
    """python -m bench.profiling FILE [SECONDS]: summarise a recorded profile."""
    path = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    say(summarise(path, path.name, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
