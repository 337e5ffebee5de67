"""`hourglass lock NAME -- CMD` (run a command while holding a lock) and
`hourglass locks describe NAME`, over the Locks API.

`hourglass lock` takes the lock, runs CMD with the lock's fencing token in its environment
(HOURGLASS_LOCK_TOKEN), keeps the lease alive while CMD runs, and releases it when CMD ends.
If the lease is lost (the server says so, or no keep-alive got through for a whole TTL, as
after a long pause of this process), CMD no longer holds the lock: it is stopped with SIGTERM,
then SIGKILL after a grace. A lock alone cannot stop a write that was already on its way, so
a resource that matters should also check the token (examples/fenced-write/).

Exit codes: CMD's own (128 + N when a signal N ended it); 1 when the lock was not acquired
within --wait; 3 when the lease was lost and CMD was stopped. Before CMD runs, an API failure
or bad input exits as every command does (`hourglass --help`: 2 bad input, 4 unreachable...).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc

from hourglass import durations, mutex
from hourglass.cli import exit_codes, output, tables
from hourglass.cli.channel import open_channel
from hourglass.cli.options import command
from hourglass.v1 import locks_pb2 as pb
from hourglass.v1 import locks_pb2_grpc as pb_grpc

COMMANDS = ("lock", "locks")
LOST = 3
NOT_ACQUIRED = 1
# Codes after which a keep-alive is worth trying again (within the TTL).
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _seconds(check: Callable[[float], str | None]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = durations.parse(text).total_seconds()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        reason = check(value)
        if reason is not None:
            raise argparse.ArgumentTypeError(f"{text!r} {reason}")
        return value

    return parse


def _name(text: str) -> str:
    reason = mutex.check_name(text)
    if reason is not None:
        raise argparse.ArgumentTypeError(f"lock name {text[:64]!r} {reason}")
    return text


def _grace(value: float) -> str | None:
    return None if 0 <= value <= 3600 else "must be from 0s to 1h"


def add_parsers(commands: Any, *, add_client_options: Callable[..., None]) -> None:
    """Adds `lock` and `locks` to the top-level subparsers."""
    lock = command(
        commands,
        "lock",
        help="run a command while holding a lock (its fencing token in HOURGLASS_LOCK_TOKEN)",
        usage="hourglass lock NAME [--ttl 10s] [--wait 30s] -- COMMAND [ARGS...]",
        description=__doc__.split("\n\n", 1)[1],
        examples=[
            "hourglass lock deploy --wait 5m -- ./deploy.sh",
            "hourglass lock nightly --ttl 30s -- sh -c 'migrate --fence $HOURGLASS_LOCK_TOKEN'",
        ],
    )
    add_client_options(lock, shows=False)
    lock.add_argument("name", type=_name, metavar="NAME")
    lock.add_argument(
        "--ttl",
        type=_seconds(mutex.check_ttl),
        default=10.0,
        help="the lease's time to live: the command is stopped this long after the last"
        f" keep-alive got through ({mutex.MIN_TTL}s to {mutex.MAX_TTL // 3600}h, default 10s)",
    )
    lock.add_argument(
        "--wait",
        type=_seconds(mutex.check_wait),
        default=0.0,
        help="how long to wait in line for the lock (default 0: try once)",
    )
    lock.add_argument(
        "--grace",
        type=_seconds(_grace),
        default=10.0,
        help="after a lost lease, seconds between SIGTERM and SIGKILL (default 10s)",
    )
    lock.add_argument(
        "--holder",
        default=f"{socket.gethostname()}:{os.getpid()}",
        help="who holds it, as `hourglass locks describe` shows (default HOST:PID)",
    )
    lock.set_defaults(argv=[])
    locks = command(
        commands,
        "locks",
        help="see who holds a lock and who waits for it",
        examples=["hourglass locks describe deploy"],
    )
    actions = locks.add_subparsers(dest="locks_command", required=True, metavar="ACTION")
    describe = command(
        actions,
        "describe",
        help="the holder and the waiters, in order",
        examples=["hourglass locks describe deploy", "hourglass locks describe deploy -o yaml"],
    )
    add_client_options(describe)
    describe.add_argument("name", type=_name, metavar="NAME")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    with open_channel(parser, args) as channel:
        stub = pb_grpc.LocksStub(channel)  # type: ignore[no-untyped-call]
        try:
            if args.command == "lock":
                if not args.argv:
                    parser.error("give the command to run after --, e.g. -- ./deploy.sh")
                return _lock(stub, args)
            return _describe(stub, args)
        except grpc.RpcError as exc:
            return _failed(exc, args.server)


def _failed(exc: grpc.RpcError, server: str) -> int:
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        print(
            f"hourglass: the API at {server} serves no locks: start it with --etcd",
            file=sys.stderr,
        )
        return exit_codes.FAILURE
    return exit_codes.report(exc, server=server)


def _duration(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    message = Duration()
    message.FromTimedelta(timedelta(seconds=seconds))
    return message


def _lock(stub: pb_grpc.LocksStub, args: argparse.Namespace) -> int:
    ttl, name = args.ttl, args.name
    request = pb.AcquireRequest(
        name=name, ttl=_duration(ttl), wait=_duration(args.wait), holder=args.holder
    )
    reply = stub.Acquire(request, timeout=args.wait + 30)
    if not reply.acquired:
        held = reply.holder
        who = f" by {held.holder or 'lease ' + format(held.lease, 'x')}" if held.lease else ""
        waited = f" after waiting {durations.format(timedelta(seconds=args.wait))}"
        print(
            f"hourglass: lock {name!r} is held{who}; not acquired"
            + (waited if args.wait else " (give --wait to wait in line)"),
            file=sys.stderr,
        )
        return NOT_ACQUIRED
    ttl = reply.ttl.ToTimedelta().total_seconds() or ttl
    held = Held(stub, name=name, lease=reply.lease, ttl=ttl)
    env = dict(
        os.environ,
        HOURGLASS_LOCK_NAME=name,
        HOURGLASS_LOCK_TOKEN=str(reply.token),
        HOURGLASS_LOCK_LEASE=format(reply.lease, "x"),
    )
    try:
        # Its own process group, so that stopping it reaches everything it started.
        process = subprocess.Popen(args.argv, env=env, process_group=0)
    except OSError as exc:
        held.release()
        print(f"hourglass: cannot run {args.argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return held.supervise(process, grace=args.grace)


class Held:
    """A lock held by this process, kept alive while a command runs."""

    def __init__(self, stub: pb_grpc.LocksStub, *, name: str, lease: int, ttl: float) -> None:
        self.stub, self.name, self.lease, self.ttl = stub, name, lease, ttl
        self.last_ok = time.monotonic()
        self.signals: list[int] = []

    def supervise(self, process: subprocess.Popen[bytes], *, grace: float) -> int:
        """Keeps the lease alive until the command exits; returns the exit code."""
        previous = {
            sig: signal.signal(sig, lambda number, _: self.signals.append(number))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            reason = self._keep_alive_until_exit(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if reason is None:
            assert process.returncode is not None
            if not self.release():
                print(
                    f"hourglass: lock {self.name!r}: the lease had already expired when the"
                    " command ended; it may have run its last moments without the lock",
                    file=sys.stderr,
                )
            code = process.returncode
            return 128 - code if code < 0 else code
        print(
            f"hourglass: lost lock {self.name!r} (lease {self.lease:x}): {reason}; stopping"
            f" the command (SIGTERM, then SIGKILL after {grace:g}s)",
            file=sys.stderr,
            flush=True,
        )
        _stop(process, grace)
        return LOST

    def _keep_alive_until_exit(self, process: subprocess.Popen[bytes]) -> str | None:
        """None once the command exited; else why the lease is lost."""
        interval = self.ttl / 3
        next_at = self.last_ok + interval
        forwarded = 0
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, min(next_at - time.monotonic(), 0.25)))
                return None
            while forwarded < len(self.signals):
                number = self.signals[forwarded]
                forwarded += 1
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT if number == signal.SIGINT else number)
            now = time.monotonic()
            # A pause of this process (SIGSTOP, a suspended VM) shows here: past the TTL since
            # the last keep-alive that got through, etcd may have given the lock away.
            if now - self.last_ok >= self.ttl:
                return (
                    f"no keep-alive got through for {now - self.last_ok:.1f}s (ttl {self.ttl:g}s)"
                )
            if now < next_at:
                continue
            try:
                self.stub.KeepAlive(
                    pb.KeepAliveRequest(name=self.name, lease=self.lease),
                    timeout=max(0.2, self.ttl - (now - self.last_ok)),
                )
            except grpc.RpcError as exc:
                if exc.code() not in _TRANSIENT:
                    return f"{exc.details()} ({exc.code().name})"
                print(f"hourglass: keep-alive failed: {exc.details()}", file=sys.stderr)
                next_at = time.monotonic() + min(interval, 1.0)
                continue
            # The lease was renewed at some moment after `now`: counting from `now` errs on
            # the side of giving up early.
            self.last_ok = now
            next_at = now + interval

    def release(self) -> bool:
        """False when the lease was already gone."""
        try:
            self.stub.Release(pb.ReleaseRequest(name=self.name, lease=self.lease), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            # The lease expires by itself within its TTL.
            print(
                f"hourglass: release failed ({exc.details()}); the lease expires in {self.ttl:g}s",
                file=sys.stderr,
            )
        return True


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _when(entry: pb.LockEntry) -> str:
    if not entry.HasField("since"):
        return "-"
    return entry.since.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _describe(stub: pb_grpc.LocksStub, args: argparse.Namespace) -> int:
    reply = stub.Describe(pb.DescribeRequest(name=args.name), timeout=30)
    if args.output in ("json", "yaml"):
        print(output.render(args.output, reply, table=str))
        return 0
    if not reply.HasField("holder"):
        print(f"lock {reply.name!r} is free")
        return 0
    holder = reply.holder
    ttl = reply.holder_ttl.ToTimedelta() if reply.HasField("holder_ttl") else None
    print(
        tables.key_values(
            [
                ("lock", reply.name),
                ("holder", holder.holder or "-"),
                ("lease", format(holder.lease, "x")),
                ("token", holder.token),
                ("since", _when(holder)),
                ("ttl left", durations.format(ttl) if ttl is not None else "-"),
                ("waiting", reply.waiting),
            ]
        )
    )
    if reply.waiters:
        rows = [
            [n, w.holder or "-", format(w.lease, "x"), w.token, _when(w)]
            for n, w in enumerate(reply.waiters, 1)
        ]
        print()
        print(tables.render(["#", "WAITER", "LEASE", "TOKEN", "WAITING SINCE"], rows))
        if reply.waiting > len(reply.waiters):
            print(f"... and {reply.waiting - len(reply.waiters)} more")
    return 0
