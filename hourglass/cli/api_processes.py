"""`hourglass api --processes N`: the API served by N processes on one port.

One Python process serves gRPC on one core at most; the API's cost per call is Python, so a
machine with more cores serves more calls with more processes. Process 0 is the one started:
once it serves, it starts processes 1..N-1 with the same arguments on the port it got, each
binding it with SO_REUSEPORT (the kernel spreads new connections over them). Each process has
its own connection pool, its own LISTEN connection for watches, and its own metrics: process i
serves /metrics, /healthz and /readyz on the metrics port + i (process 0 on the port given,
which the chart's probes call).

Process 0 says it serves only once every process does. A process that ends on its own ends
them all with exit code 1, so that whatever supervises process 0 (Kubernetes) restarts the
whole; a SIGTERM to process 0 stops the others too. A process whose process 0 is gone stops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time

# Set in processes 1..N-1: their number, and the pid of process 0.
INDEX_VARIABLE = "HOURGLASS_API_PROCESS"
PARENT_VARIABLE = "HOURGLASS_API_PARENT"
# Set in processes 1..N-1: the file descriptor on which they say they serve.
READY_VARIABLE = "HOURGLASS_API_READY_FD"
START_TIMEOUT = 120.0


def add_option(api: argparse.ArgumentParser) -> None:
    api.add_argument(
        "--processes",
        type=_count,
        default=_count(os.environ.get("HOURGLASS_API_PROCESSES") or "1"),
        help="serve from this many processes on one port, e.g. one per core; process i serves"
        " metrics on the metrics port + i (env HOURGLASS_API_PROCESSES, default 1)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def index() -> int:
    """This process's number: 0 unless process 0 started it."""
    return int(os.environ.get(INDEX_VARIABLE, "0"))


def metrics_listen(listen: str, number: int) -> str:
    """Process `number`'s metrics address: the port + number ("" stays "", port 0 stays 0)."""
    if not listen or number == 0:
        return listen
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + number}" if int(port) else listen


def say_ready() -> None:
    """In processes 1..N-1: tells process 0 that this one serves."""
    fd = os.environ.get(READY_VARIABLE)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"ready\n")
            os.close(int(fd))


def watch_parent() -> None:
    """In processes 1..N-1: stop (SIGTERM to itself) once process 0 is gone."""
    parent = int(os.environ.get(PARENT_VARIABLE, "0"))
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch process 0", daemon=True).start()


class Others:
    """Processes 1..N-1, as process 0 sees them."""

    def __init__(self, count: int, *, words: list[str], metrics: str) -> None:
        self.count = count
        self.words = words
        self.metrics = metrics
        self.popens: list[subprocess.Popen[bytes]] = []
        self.failed = False
        self._stopping = False

    def start(self, host: str, port: int) -> None:
        """Starts them on HOST:PORT and returns once each serves; raises RuntimeError if one
        ends or takes longer than START_TIMEOUT."""
        readers = []
        for number in range(1, self.count):
            read, write = os.pipe()
            env = {
                **os.environ,
                INDEX_VARIABLE: str(number),
                PARENT_VARIABLE: str(os.getpid()),
                READY_VARIABLE: str(write),
            }
            argv = [
                sys.executable,
                "-m",
                "hourglass.cli.main",
                *self.words,
                # Later flags win: the same arguments, one process, on process 0's port.
                "--processes",
                "1",
                "--listen",
                f"{host}:{port}",
                "--metrics-listen",
                metrics_listen(self.metrics, number),
            ]
            self.popens.append(
                subprocess.Popen(argv, env=env, pass_fds=(write,), stdin=subprocess.DEVNULL)
            )
            os.close(write)
            readers.append(read)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            waiting = set(readers)
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"API processes not serving after {START_TIMEOUT:.0f}s")
                ready, _, _ = select.select(list(waiting), [], [], min(left, 1.0))
                for fd in ready:
                    if not os.read(fd, 64):
                        raise RuntimeError("an API process ended before it served")
                    waiting.discard(fd)
        finally:
            for fd in readers:
                os.close(fd)

    def watch(self) -> None:
        """Ends process 0 (SIGTERM to itself, failed set) when another process ends first."""

        def wait(popen: subprocess.Popen[bytes]) -> None:
            popen.wait()
            if not self._stopping:
                self.failed = True
                os.kill(os.getpid(), signal.SIGTERM)

        for popen in self.popens:
            threading.Thread(target=wait, args=(popen,), daemon=True).start()

    def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        for popen in self.popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for popen in self.popens:
            try:
                popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def others(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Others | None:
    """Processes 1..N-1 of `hourglass api --processes N`, not started yet (api_processes)."""
    if args.command != "api":
        return None
    if index():
        watch_parent()
        return None
    if args.processes == 1:
        return None
    words = sys.argv[1:]
    if "api" not in words:
        parser.error("--processes above 1 needs `hourglass api` started as a command")
    return Others(args.processes, words=words, metrics=args.metrics_listen)


def start_in_background(others: Others, *, host: str, port: int) -> None:
    """In process 0, once it serves: starts the others in a thread (the event loop goes on
    serving), then says it serves; ends process 0 if they cannot start."""
    threading.Thread(
        target=_start, args=(others, host, port), name="start API processes", daemon=True
    ).start()


def _start(others: Others, host: str, port: int) -> None:
    try:
        others.start(host, port)
    except RuntimeError as exc:
        print(f"hourglass api: {exc}", file=sys.stderr, flush=True)
        others.failed = True
        os.kill(os.getpid(), signal.SIGTERM)
        return
    others.watch()
    print(f"hourglass api serving on {host}:{port} from {others.count} processes", flush=True)
