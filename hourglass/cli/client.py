"""The client commands: schedule, status, jobs, runs, cancel, over gRPC."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import uuid
from collections.abc import Callable
from datetime import datetime

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import durations
from hourglass.cli import tables
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)


def _when(ts: Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _state(value: int, enum: str) -> str:
    name = (pb.RunState if enum == "run" else pb.JobState).Name(value)
    return name.split("_STATE_", 1)[1].lower()


def _schedule(schedule: pb.Schedule) -> str:
    kind = schedule.WhichOneof("kind")
    if kind == "at":
        return f"at {_when(schedule.at)}"
    if kind == "after":
        return f"after {durations.format(schedule.after.ToTimedelta())}"
    if kind == "cron":
        zone = f" ({schedule.cron.time_zone})" if schedule.cron.time_zone else ""
        return f"cron {schedule.cron.expression}{zone}"
    if kind == "every":
        return f"every {durations.format(schedule.every.interval.ToTimedelta())}"
    return "-"


def _first_line(text: str, width: int = 48) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if len(lines) > 1 else lines[0]
    more = " …" if len(lines) > 1 else ""
    return (line[: width - 1] + "…" if len(line) > width else line) + more


def _duration(attempt: pb.Attempt) -> str:
    if not attempt.HasField("finished_at"):
        return "-"
    delta = attempt.finished_at.ToDatetime() - attempt.started_at.ToDatetime()
    return f"{delta.total_seconds():.2f}s"


def runs_table(runs: list[pb.Run]) -> str:
    """One row per attempt, so a retried fire shows each try with its exit code."""
    rows: list[list[object]] = []
    for run in runs:
        head = [run.id[:8], _when(run.scheduled_at), _state(run.state, "run")]
        if not run.attempts:
            rows.append([*head, run.attempt, "-", "-", "-", ""])
        for attempt in run.attempts:
            output = attempt.stdout_tail or attempt.stderr_tail or attempt.error
            if attempt.state == pb.RUN_STATE_LOST:
                output = attempt.error
            rows.append(
                [
                    *head,
                    attempt.number,
                    _state(attempt.state, "run"),
                    attempt.exit_code if attempt.HasField("exit_code") else "-",
                    _duration(attempt),
                    _first_line(output),
                ]
            )
    if not rows:
        return "(no runs yet)"
    return tables.render(
        ["RUN", "SCHEDULED", "RUN STATE", "ATTEMPT", "ATTEMPT STATE", "EXIT", "TOOK", "OUTPUT"],
        rows,
    )


def job_details(job: pb.Job) -> str:
    return tables.key_values(
        [
            ("job", job.id),
            ("name", job.name),
            ("command", shlex.join([*job.task.command, *job.task.args])),
            ("schedule", _schedule(job.schedule)),
            ("state", _state(job.state, "job")),
            ("next fire", _when(job.next_fire_at, job.HasField("next_fire_at"))),
            ("max attempts", job.max_attempts),
            (
                "timeout",
                durations.format(job.timeout.ToTimedelta()) if job.HasField("timeout") else "-",
            ),
            ("created", _when(job.created_at)),
        ]
    )


def _print_json(message: Message) -> None:
    print(json.dumps(MessageToDict(message), indent=2))


def _schedule_request(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> pb.ScheduleJobRequest:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        parser.error("give the command to run after --, e.g. -- echo hello")
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: use NAME=VALUE")
        env[name] = value
    schedule = pb.Schedule()
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            parser.error(
                f"--at {args.at!r}: use ISO 8601 with a zone, e.g. 2026-12-01T09:00:00+01:00"
            )
        if at.tzinfo is None:
            parser.error(f"--at {args.at!r}: give a time zone offset, e.g. +00:00")
        schedule.at.FromDatetime(at)
    elif args.after:
        schedule.after.FromTimedelta(durations.parse(args.after))
    elif args.cron:
        schedule.cron.expression = args.cron
        schedule.cron.time_zone = args.tz
    else:
        schedule.every.interval.FromTimedelta(durations.parse(args.every))
    if args.tz and not args.cron:
        parser.error("--tz goes with --cron")
    request = pb.ScheduleJobRequest(
        request_id=args.request_id or str(uuid.uuid4()),
        name=args.name,
        task=pb.Task(command=argv[:1], args=argv[1:], env=env),
        schedule=schedule,
        max_attempts=args.max_attempts,
    )
    if args.timeout:
        request.timeout.FromTimedelta(durations.parse(args.timeout))
    if args.retry_backoff:
        request.retry_backoff.FromTimedelta(durations.parse(args.retry_backoff))
    return request


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command: Callable[[pb_grpc.JobSchedulerStub], None]
    table = args.output == "table"

    def schedule(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.ScheduleJob(_schedule_request(parser, args), timeout=30)
        print(reply.job_id) if table else _print_json(reply)

    def status(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=args.job_id, recent_runs=args.runs))
        if not table:
            return _print_json(reply)
        print(job_details(reply.job))
        print()
        print(runs_table(list(reply.recent_runs)))

    def jobs(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.ListJobs(pb.ListJobsRequest(page_size=args.limit))
        if not table:
            return _print_json(reply)
        rows = [
            [
                job.id,
                job.name,
                _schedule(job.schedule),
                _state(job.state, "job"),
                _when(job.next_fire_at, job.HasField("next_fire_at")),
            ]
            for job in reply.jobs
        ]
        print(
            tables.render(["JOB", "NAME", "SCHEDULE", "STATE", "NEXT FIRE"], rows)
            if rows
            else "(no jobs)"
        )

    def runs(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.ListRuns(pb.ListRunsRequest(job_id=args.job_id, page_size=args.limit))
        print(runs_table(list(reply.runs))) if table else _print_json(reply)

    def cancel(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.CancelJob(pb.CancelJobRequest(job_id=args.job_id))
        print(f"job {reply.job.id} cancelled") if table else _print_json(reply)

    command = {
        "schedule": schedule,
        "status": status,
        "jobs": jobs,
        "runs": runs,
        "cancel": cancel,
    }[args.command]
    with grpc.insecure_channel(args.server) as channel:
        try:
            command(pb_grpc.JobSchedulerStub(channel))
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                print(
                    f"hourglass: cannot reach the API at {args.server}. Start it with "
                    "`hourglass dev`, or point --server (HOURGLASS_SERVER) at it.",
                    file=sys.stderr,
                )
                return 1
            print(f"hourglass: {exc.details()} ({code.name})", file=sys.stderr)
            return 2 if code in _BAD_INPUT else 1
    return 0
