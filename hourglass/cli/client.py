"""The client commands, over gRPC: schedule, update, status, jobs, runs, pause, resume,
trigger, cancel, delete, backfill, cancel-run, watch, logs, upload.

A JOB argument is a job's id, a unique id prefix, NAME or NAMESPACE/NAME; a RUN argument a
run's id or a unique prefix (cli/addressing.py)."""

from __future__ import annotations

import argparse
import functools
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from hourglass.cli import addressing, exit_codes, output, spec_options, views
from hourglass.cli.channel import open_channel
from hourglass.cli.exit_codes import Failure
from hourglass.cli.options import add_client_options, command, timestamp
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

JOB_HELP = "the job: its id, a unique id prefix (4+ hex digits), NAME or NAMESPACE/NAME"
RUN_HELP = "the run: its id or a unique id prefix (4+ hex digits)"
Stub = pb_grpc.JobSchedulerStub
Handler = Callable[[argparse.ArgumentParser, argparse.Namespace, Stub], None]

# name: (help, examples) of the commands that take one JOB and change it.
_JOB_ACTIONS = {
    "pause": ("stop a job's fires until it is resumed", ["hourglass pause nightly-report"]),
    "resume": (
        "fire a paused job again, from its next fire time after now",
        ["hourglass resume nightly-report"],
    ),
    "trigger": (
        "run a job now, outside its schedule; prints the run id",
        [
            "hourglass trigger team-a/backup",
            "run=$(hourglass trigger backup) && hourglass logs -f $run",
        ],
    ),
    "delete": (
        "delete a job and its history (a running run is terminated)",
        ["hourglass delete 3f2a9c"],
    ),
    "cancel": (
        "stop a job's future fires; its history stays",
        ["hourglass cancel nightly-report"],
    ),
}


# The changes the API refuses on a job that a manager (the operator) keeps, unless forced.
_MANAGED_ACTIONS = ("pause", "resume", "cancel", "delete")


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="change a job the operator manages anyway (refused without it, exit 6); the"
        " operator puts back what its ScheduledJob declares, so prefer kubectl",
    )


def add_parsers(commands: Any) -> None:
    """Adds the client commands to the top-level subparsers."""
    schedule = command(
        commands,
        "schedule",
        help="schedule a command (or an uploaded --binary); prints the job id",
        usage="hourglass schedule (--at TIME | --after D | --cron EXPR [--tz ZONE] | --every D)"
        " [options] -- COMMAND [ARGS...]",
        examples=[
            "hourglass schedule --every 5m --name ping -- curl -fsS https://example.com",
            "hourglass schedule --cron '0 3 * * *' --tz Europe/Paris --name backup --max-attempts"
            " 3 -- ./backup.sh",
            "hourglass schedule --after 10m --binary ./report -- --since yesterday",
        ],
    )
    add_client_options(schedule)
    spec_options.add(schedule)
    schedule.add_argument("--request-id", default="", help="idempotency key (default: random)")

    update = command(
        commands,
        "update",
        help="replace a job's spec (schedule, command, policies); history is kept",
        usage="hourglass update JOB (--at | --after | --cron | --every) [options] -- COMMAND ...",
        examples=["hourglass update ping --every 1m --name ping -- curl -fsS https://example.com"],
    )
    add_client_options(update)
    update.add_argument("job", metavar="JOB", help=JOB_HELP)
    _add_force(update)
    spec_options.add(update)

    for name, (text, examples) in _JOB_ACTIONS.items():
        action = command(commands, name, help=text, examples=examples)
        add_client_options(action)
        action.add_argument("job", metavar="JOB", help=JOB_HELP)
        if name in _MANAGED_ACTIONS:
            _add_force(action)

    watch = command(
        commands,
        "watch",
        help="stream a job's changes and its runs' state changes as they happen",
        description="Stream a job's changes and every state change of its runs, in order, as"
        " they happen, until Ctrl-C. With -o json, one JSON object per line; with -o yaml,"
        " one document each; -o wide ends each line with its cursor, from which"
        " --since-cursor resumes without missing or repeating a change.",
        examples=[
            "hourglass watch ping",
            "hourglass watch ping -o json | jq .run.state",
            "hourglass watch ping --since-cursor 7301:7305:7302",
        ],
    )
    add_client_options(watch)
    watch.add_argument("job", metavar="JOB", help=JOB_HELP)
    watch.add_argument(
        "--since-cursor",
        default="",
        metavar="CURSOR",
        help="resume after this cursor (from -o wide or .cursor in -o json): the job as it is"
        " now, then every run change after it",
    )

    backfill = command(
        commands,
        "backfill",
        help="run the fires of a past time range",
        examples=[
            "hourglass backfill backup --from 2026-01-01T00:00:00+00:00"
            " --to 2026-01-02T00:00:00+00:00"
        ],
    )
    add_client_options(backfill)
    backfill.add_argument("job", metavar="JOB", help=JOB_HELP)
    backfill.add_argument("--from", dest="start", required=True, type=timestamp, metavar="TIME")
    backfill.add_argument("--to", dest="end", required=True, type=timestamp, metavar="TIME")

    cancel_run = command(
        commands,
        "cancel-run",
        help="cancel one run (terminates it if running)",
        examples=["hourglass cancel-run 7be1"],
    )
    add_client_options(cancel_run)
    cancel_run.add_argument("run", metavar="RUN", help=RUN_HELP)

    logs = command(
        commands,
        "logs",
        help="print a run's output (stdout to stdout, stderr to stderr)",
        examples=["hourglass logs 7be1", "hourglass logs -f $(hourglass trigger backup)"],
    )
    add_client_options(logs, shows=False)
    logs.add_argument("run", metavar="RUN", help=RUN_HELP)
    logs.add_argument("--follow", "-f", action="store_true", help="keep following a live run")

    upload = command(
        commands,
        "upload",
        help="upload a binary; prints its digest",
        examples=["hourglass upload ./report"],
    )
    add_client_options(upload)
    upload.add_argument("path", type=Path, metavar="FILE")

    status = command(
        commands,
        "status",
        help="a job and its recent runs",
        description="Show a job's spec and state, and its recent runs (one row per attempt).",
        examples=[
            "hourglass status nightly-report",
            "hourglass status team-a/nightly-report -o wide",
            "hourglass status 3f2a9c -o json | jq .job.state",
        ],
    )
    add_client_options(status)
    status.add_argument("job", metavar="JOB", help=JOB_HELP)
    status.add_argument("--runs", type=int, default=10, help="recent runs to show")

    jobs = command(
        commands,
        "jobs",
        help="list jobs, newest first",
        examples=["hourglass jobs", "hourglass jobs -o wide", "hourglass jobs -o yaml"],
    )
    add_client_options(jobs)
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (up to 500)")

    runs = command(
        commands,
        "runs",
        help="list a job's runs and attempts, newest first",
        examples=["hourglass runs nightly-report", "hourglass runs 3f2a9c -o wide --limit 5"],
    )
    add_client_options(runs)
    runs.add_argument("job", metavar="JOB", help=JOB_HELP)
    runs.add_argument("--limit", type=int, default=50, help="at most this many (up to 500)")


def _show(
    args: argparse.Namespace,
    message: Message,
    table: Callable[[], str],
    wide: Callable[[], str] | None = None,
) -> None:
    print(output.render(args.output, message, table=table, wide=wide))


def _schedule(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    binary = spec_options.upload(parser, stub, args.binary).digest if args.binary else ""
    spec = spec_options.build(parser, args, binary)
    request = pb.ScheduleJobRequest(request_id=args.request_id or str(uuid.uuid4()), spec=spec)
    reply = stub.ScheduleJob(request, timeout=30)
    _show(args, reply, lambda: reply.job_id)


def _update(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    job_id = addressing.resolve_job(stub, args.job)
    binary = spec_options.upload(parser, stub, args.binary).digest if args.binary else ""
    spec = spec_options.build(parser, args, binary)
    request = pb.UpdateJobRequest(job_id=job_id, spec=spec, force=args.force)
    reply = stub.UpdateJob(request, timeout=30)
    _show(args, reply, lambda: f"job {reply.job.id} updated (revision {reply.job.revision})")


def _status(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    job_id = addressing.resolve_job(stub, args.job)
    reply = stub.GetJobStatus(
        pb.GetJobStatusRequest(job_id=job_id, recent_runs=args.runs), timeout=30
    )
    recent = list(reply.recent_runs)
    _show(
        args,
        reply,
        lambda: views.job_details(reply.job) + "\n\n" + views.runs_table(recent),
        lambda: (
            views.job_details(reply.job, wide=True) + "\n\n" + views.runs_table(recent, wide=True)
        ),
    )


def _jobs(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    reply = stub.ListJobs(pb.ListJobsRequest(page_size=args.limit), timeout=30)
    jobs = list(reply.jobs)
    _show(args, reply, lambda: views.jobs_table(jobs), lambda: views.jobs_table(jobs, wide=True))


def _runs(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    job_id = addressing.resolve_job(stub, args.job)
    reply = stub.ListRuns(pb.ListRunsRequest(job_id=job_id, page_size=args.limit), timeout=30)
    runs = list(reply.runs)
    _show(args, reply, lambda: views.runs_table(runs), lambda: views.runs_table(runs, wide=True))


def _job_action(call: str, request: type[Message], done: str) -> Handler:
    def handle(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
        job_id = addressing.resolve_job(stub, args.job)
        fields: dict[str, Any] = {"job_id": job_id}
        if getattr(args, "force", False):
            fields["force"] = True
        reply = getattr(stub, call)(request(**fields), timeout=30)
        _show(args, reply, lambda: done.format(reply=reply, job_id=job_id))

    return handle


def _backfill(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    request = pb.BackfillRequest(job_id=addressing.resolve_job(stub, args.job))
    getattr(request, "from").FromDatetime(args.start)
    request.to.FromDatetime(args.end)
    reply = stub.Backfill(request, timeout=60)
    _show(args, reply, lambda: f"{reply.queued} runs queued")


def _cancel_run(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    run_id = addressing.resolve_run(stub, args.run)
    reply = stub.CancelRun(pb.CancelRunRequest(run_id=run_id), timeout=30)
    _show(args, reply, lambda: f"run {reply.run.id} cancel requested")


def _watch_line(event: pb.WatchJobResponse, *, wide: bool = False) -> str | None:
    """A message as a line; None for a bookmark (only a cursor) unless `wide`."""
    cursor = f"  cursor {event.cursor}" if wide and event.cursor else ""
    if event.HasField("job"):
        job = event.job
        return (
            f"job  {job.id}  {views.state(job.state, 'job')}  next fire "
            f"{views.when(job.next_fire_at, job.HasField('next_fire_at'))}{cursor}"
        )
    if not event.HasField("run"):
        return f"bookmark{cursor}" if cursor else None
    run = event.run
    last = run.attempts[-1] if run.attempts else None
    detail = f"  exit {last.exit_code}" if last is not None and last.HasField("exit_code") else ""
    return (
        f"run  {run.id}  {views.when(run.scheduled_at)}  {views.state(run.state, 'run')}"
        f"  attempt {run.attempt}{detail}{'  ' + run.reason if run.reason else ''}{cursor}"
    )


def _watch(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    job_id = addressing.resolve_job(stub, args.job)
    request = pb.WatchJobRequest(job_id=job_id, cursor=args.since_cursor)
    for event in stub.WatchJob(request):
        text = _watch_line(event, wide=args.output == "wide")
        if text is None and args.output in ("table", "wide"):
            continue
        print(
            output.stream_item(args.output, event, table=functools.partial(str, text or "")),
            flush=True,
        )


def _logs(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    run_id = addressing.resolve_run(stub, args.run)
    for chunk in stub.GetRunLogs(pb.GetRunLogsRequest(run_id=run_id, follow=args.follow)):
        target = sys.stdout if chunk.stream != pb.LOG_STREAM_STDERR else sys.stderr
        target.buffer.write(chunk.data)
        target.flush()


def _upload(parser: argparse.ArgumentParser, args: argparse.Namespace, stub: Stub) -> None:
    reply = spec_options.upload(parser, stub, args.path)
    _show(args, reply, lambda: reply.digest)


HANDLERS: dict[str, Handler] = {
    "schedule": _schedule,
    "update": _update,
    "status": _status,
    "jobs": _jobs,
    "runs": _runs,
    "pause": _job_action("PauseJob", pb.PauseJobRequest, "job {reply.job.id} paused"),
    "resume": _job_action("ResumeJob", pb.ResumeJobRequest, "job {reply.job.id} resumed"),
    "trigger": _job_action("TriggerJob", pb.TriggerJobRequest, "{reply.run.id}"),
    "cancel": _job_action("CancelJob", pb.CancelJobRequest, "job {reply.job.id} cancelled"),
    "delete": _job_action("DeleteJob", pb.DeleteJobRequest, "job {job_id} deleted"),
    "backfill": _backfill,
    "cancel-run": _cancel_run,
    "watch": _watch,
    "logs": _logs,
    "upload": _upload,
}
COMMANDS = tuple(HANDLERS)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    with open_channel(parser, args) as channel:
        try:
            HANDLERS[args.command](parser, args, pb_grpc.JobSchedulerStub(channel))
        except grpc.RpcError as exc:
            return exit_codes.report(exc, server=args.server)
        except Failure as exc:
            print(f"hourglass: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return exit_codes.INTERRUPTED
    return exit_codes.OK
