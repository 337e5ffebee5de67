"""`hourglass worker --processes N`: N worker processes under one command.

One worker's event loop claims, spawns and finishes every attempt, and its claims (PostgreSQL
round trips and an etcd transaction) run one after another. On the loaded bench machine (issue
17, docs/benchmarks.md) two processes of 4 slots drained `/bin/true` 2 to 4.5 times as fast as
one of 8 in three runs of four (0.8 times in the fourth), for a little more CPU per run: a
second loop overlaps the claims' waits. Each child is a whole worker of its
own: its own etcd lease, worker id (`ID-i`), slots (the total `--concurrency` split between
them) and metrics port (`--metrics-listen HOST:PORT+i`), so the contract is that of N workers.

The parent only supervises: SIGTERM or SIGINT goes to every child, and it waits for them all
(each hands its attempts back within its own grace). If any child ends, the parent stops the
others and exits with that child's status, so that whoever runs the command (Kubernetes, a
service manager) restarts them together rather than running fewer workers unnoticed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

# Flags the parent sets per child; dropped from what it passes on.
_OWN = ("--processes", "--concurrency", "--worker-id", "--metrics-listen")


def child_argv(
    words: Sequence[str], *, index: int, slots: int, worker_id: str, metrics: str | None
) -> list[str]:
    """The command line of child `index`: the parent's, with its own slots, id and port."""
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in _OWN:
            skip = "=" not in word
            continue
        kept.append(word)
    kept += ["--concurrency", str(slots), "--worker-id", f"{worker_id}-{index}"]
    if metrics:
        host, _, port = metrics.rpartition(":")
        kept += ["--metrics-listen", f"{host}:{int(port) + index}"]
    return kept


def split_slots(concurrency: int, processes: int) -> list[int]:
    """`concurrency` slots over `processes` children, as evenly as whole numbers allow."""
    if processes < 1 or concurrency < processes:
        raise ValueError(
            f"--processes {processes} needs at least one slot each (--concurrency {concurrency})"
        )
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def supervise(
    words: Sequence[str], *, processes: int, concurrency: int, worker_id: str, metrics: str | None
) -> int:
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hourglass.cli.main",
                *child_argv(words, index=i, slots=slots, worker_id=worker_id, metrics=metrics),
            ]
        )
        for i, slots in enumerate(split_slots(concurrency, processes))
    ]
    stopping = False  # told to stop from outside
    failed: int | None = None  # the status of the first child that ended on its own

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        forward(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(child.poll() is None for child in children):
        if failed is None and not stopping:
            ended = [child.returncode for child in children if child.returncode is not None]
            if ended:
                failed = ended[0] or 1  # a worker never ends on its own when all is well
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    if failed is not None:
        return failed
    return max(child.returncode or 0 for child in children)
