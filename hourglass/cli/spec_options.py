"""The flags of a job's spec (`schedule`, `update`) and the JobSpec they make."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from hourglass import durations
from hourglass.cli.options import duration, timestamp
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

UPLOAD_CHUNK = 1024 * 1024


def add(parser: argparse.ArgumentParser) -> None:
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", type=timestamp, help="once, at an ISO 8601 time with a zone")
    when.add_argument("--after", type=duration, help="once, after a delay (90s, 1h30m)")
    when.add_argument("--cron", help="cron expression, 5 fields or 6 with seconds first")
    when.add_argument("--every", type=duration, help="repeatedly, every interval (2s, 5m)")
    parser.add_argument("--tz", default="", help="IANA time zone of --cron (default UTC)")
    parser.add_argument("--jitter", type=duration, help="with --every: random start delay")
    parser.add_argument("--start", type=timestamp, help="no fire before this time")
    parser.add_argument("--end", type=timestamp, help="no fire after this time")
    parser.add_argument("--name", default="", help="default: the command's name")
    parser.add_argument("--max-attempts", type=int, default=1, help="tries per fire")
    parser.add_argument("--timeout", type=duration, help="kill an attempt after this long")
    parser.add_argument("--retry-backoff", type=duration, help="first retry delay (1s)")
    parser.add_argument(
        "--overlap",
        choices=("allow", "skip", "buffer_one", "replace"),
        default="allow",
        help="when a fire comes while a run is active (default allow)",
    )
    parser.add_argument(
        "--catch-up",
        choices=("all", "latest", "skip"),
        default="all",
        help="fires missed while hourglass was down (default all)",
    )
    parser.add_argument("--catch-up-window", type=duration, help="how late a fire may run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="like --env, but never shown by status, logs or revisions",
    )
    parser.add_argument("--image", default="", help="container image (Kubernetes executor)")
    parser.add_argument("--workdir", default="", help="working directory of the process")
    for name in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
        parser.add_argument(
            f"--{name}",
            default="",
            metavar="QUANTITY",
            help=f"Kubernetes container {name.replace('-', ' ')}",
        )
    parser.add_argument(
        "--binary", type=Path, help="upload this file and run it (ARGS after -- are its args)"
    )
    # The command after `--` is split off before parsing (see main); argparse's REMAINDER
    # would also swallow options that follow a positional JOB.
    parser.set_defaults(argv=[])


def build(parser: argparse.ArgumentParser, args: argparse.Namespace, binary: str) -> pb.JobSpec:
    argv = args.argv
    if not argv and not binary:
        parser.error("give the command to run after --, e.g. -- echo hello (or --binary FILE)")
    env = _pairs(parser, "--env", args.env)
    secret_env = _pairs(parser, "--secret-env", args.secret_env)
    schedule = pb.Schedule()
    if args.at:
        schedule.at.FromDatetime(args.at)
    elif args.after:
        schedule.after.FromTimedelta(durations.parse(args.after))
    elif args.cron:
        schedule.cron.expression = args.cron
        schedule.cron.time_zone = args.tz
    else:
        schedule.every.interval.FromTimedelta(durations.parse(args.every))
        if args.jitter:
            schedule.every.jitter.FromTimedelta(durations.parse(args.jitter))
    if args.tz and not args.cron:
        parser.error("--tz goes with --cron")
    if args.jitter and not args.every:
        parser.error("--jitter goes with --every")
    if args.start:
        schedule.start.FromDatetime(args.start)
    if args.end:
        schedule.end.FromDatetime(args.end)
    task = pb.Task(
        command=[] if binary else argv[:1],
        args=argv if binary else argv[1:],
        env=env,
        secret_env=secret_env,
        binary=binary,
        image=args.image,
        working_dir=args.workdir,
        resources=pb.Resources(
            cpu_request=args.cpu_request,
            cpu_limit=args.cpu_limit,
            memory_request=args.memory_request,
            memory_limit=args.memory_limit,
        ),
    )
    spec = pb.JobSpec(
        name=args.name or (args.binary.name if args.binary else ""),
        task=task,
        schedule=schedule,
        max_attempts=args.max_attempts,
        overlap=f"OVERLAP_POLICY_{args.overlap.upper()}",
        catch_up=pb.CatchUp(policy=f"CATCH_UP_POLICY_{args.catch_up.upper()}"),
    )
    if args.catch_up_window:
        spec.catch_up.window.FromTimedelta(durations.parse(args.catch_up_window))
    if args.timeout:
        spec.timeout.FromTimedelta(durations.parse(args.timeout))
    if args.retry_backoff:
        spec.retry_backoff.FromTimedelta(durations.parse(args.retry_backoff))
    return spec


def _pairs(parser: argparse.ArgumentParser, option: str, items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"{option} {name!r}: use NAME=VALUE")
        pairs[name] = value
    return pairs


def _chunks(path: Path) -> Iterator[pb.UploadBinaryRequest]:
    with path.open("rb") as handle:
        while block := handle.read(UPLOAD_CHUNK):
            yield pb.UploadBinaryRequest(chunk=block)


def upload(
    parser: argparse.ArgumentParser, stub: pb_grpc.JobSchedulerStub, path: Path
) -> pb.UploadBinaryResponse:
    if not path.is_file():
        parser.error(f"--binary {path}: no such file")
    response: pb.UploadBinaryResponse = stub.UploadBinary(_chunks(path), timeout=600)
    return response
