"""The client commands, over gRPC: schedule, update, status, jobs, runs, pause, resume,
trigger, cancel, delete, backfill, cancel-run, watch, logs, upload."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import describe, durations
from hourglass.cli import tables
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

COMMANDS = (
    "schedule",
    "update",
    "status",
    "jobs",
    "runs",
    "pause",
    "resume",
    "trigger",
    "cancel",
    "delete",
    "backfill",
    "cancel-run",
    "watch",
    "logs",
    "upload",
)
_BAD_INPUT = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
UPLOAD_CHUNK = 1024 * 1024


def _when(ts: Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _state(value: int, enum: str) -> str:
    return describe.state(value, enum)


def _schedule(schedule: pb.Schedule) -> str:
    return describe.schedule(schedule, _when)


def _first_line(text: str, width: int = 48) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if len(lines) > 1 else lines[0]
    more = " …" if len(lines) > 1 else ""
    return (line[: width - 1] + "…" if len(line) > width else line) + more


def _took(attempt: pb.Attempt) -> str:
    if not attempt.HasField("finished_at"):
        return "-"
    delta = attempt.finished_at.ToDatetime() - attempt.started_at.ToDatetime()
    return f"{delta.total_seconds():.2f}s"


def runs_table(runs: list[pb.Run]) -> str:
    """One row per attempt, so a retried fire shows each try with its exit code."""
    rows: list[list[object]] = []
    for run in runs:
        head = [run.id, _when(run.scheduled_at), _state(run.state, "run")]
        if not run.attempts:
            rows.append([*head, "-", "-", "-", "-", run.reason])
        for attempt in run.attempts:
            output = attempt.stdout_tail or attempt.stderr_tail or attempt.error
            if attempt.state in (pb.RUN_STATE_LOST, pb.RUN_STATE_CANCELLED):
                output = attempt.error
            rows.append(
                [
                    *head,
                    attempt.number,
                    _state(attempt.state, "run"),
                    attempt.exit_code if attempt.HasField("exit_code") else "-",
                    _took(attempt),
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
    spec = job.spec
    task = spec.task
    command = shlex.join([*task.command, *task.args])
    if task.binary:
        command = shlex.join([task.binary, *task.args])
    catch_up = pb.CatchUpPolicy.Name(spec.catch_up.policy or pb.CATCH_UP_POLICY_ALL)
    window = spec.catch_up.window.ToTimedelta() if spec.catch_up.HasField("window") else None
    return tables.key_values(
        [
            ("job", job.id),
            ("name", spec.name),
            ("command", command),
            ("schedule", _schedule(spec.schedule)),
            ("state", _state(job.state, "job")),
            ("next fire", _when(job.next_fire_at, job.HasField("next_fire_at"))),
            ("max attempts", spec.max_attempts),
            (
                "timeout",
                durations.format(spec.timeout.ToTimedelta()) if spec.HasField("timeout") else "-",
            ),
            (
                "overlap",
                pb.OverlapPolicy.Name(spec.overlap or 1).removeprefix("OVERLAP_POLICY_").lower(),
            ),
            (
                "catch-up",
                catch_up.removeprefix("CATCH_UP_POLICY_").lower()
                + (f" within {durations.format(window)}" if window else ""),
            ),
            ("missed fires", job.missed_fires),
            ("revision", job.revision),
            ("created", _when(job.created_at)),
        ]
    )


def _print_json(message: Message) -> None:
    print(json.dumps(MessageToDict(message), indent=2))


def _spec(parser: argparse.ArgumentParser, args: argparse.Namespace, binary: str) -> pb.JobSpec:
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


def _upload(
    parser: argparse.ArgumentParser, stub: pb_grpc.JobSchedulerStub, path: Path
) -> pb.UploadBinaryResponse:
    if not path.is_file():
        parser.error(f"--binary {path}: no such file")
    response: pb.UploadBinaryResponse = stub.UploadBinary(_chunks(path), timeout=600)
    return response


def _channel(parser: argparse.ArgumentParser, args: argparse.Namespace) -> grpc.Channel:
    """A channel to --server: TLS with --tls-ca (and a client certificate for mutual TLS),
    the token sent with every call."""
    token_credentials = None
    if args.token:
        token_credentials = grpc.access_token_call_credentials(args.token)
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key:
            parser.error("--tls-cert and --tls-key need --tls-ca")
        if token_credentials is None:
            return grpc.insecure_channel(args.server)
        # Tokens over plain TCP: allowed only to a local server (gRPC refuses otherwise).
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(), token_credentials
        )
        return grpc.secure_channel(args.server, credentials)
    try:
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes(),
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
    except OSError as exc:
        parser.error(f"cannot read a TLS file: {exc}")
    if token_credentials is not None:
        channel_credentials = grpc.composite_channel_credentials(
            channel_credentials, token_credentials
        )
    return grpc.secure_channel(args.server, channel_credentials)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    table = args.output == "table"

    def show(message: Message, text: Callable[[], str]) -> None:
        print(text()) if table else _print_json(message)

    def schedule(stub: pb_grpc.JobSchedulerStub) -> None:
        binary = _upload(parser, stub, args.binary).digest if args.binary else ""
        spec = _spec(parser, args, binary)
        request = pb.ScheduleJobRequest(request_id=args.request_id or str(uuid.uuid4()), spec=spec)
        reply = stub.ScheduleJob(request, timeout=30)
        show(reply, lambda: reply.job_id)

    def update(stub: pb_grpc.JobSchedulerStub) -> None:
        binary = _upload(parser, stub, args.binary).digest if args.binary else ""
        reply = stub.UpdateJob(
            pb.UpdateJobRequest(job_id=args.job_id, spec=_spec(parser, args, binary))
        )
        show(reply, lambda: f"job {reply.job.id} updated (revision {reply.job.revision})")

    def status(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=args.job_id, recent_runs=args.runs))
        show(reply, lambda: job_details(reply.job) + "\n\n" + runs_table(list(reply.recent_runs)))

    def jobs(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.ListJobs(pb.ListJobsRequest(page_size=args.limit))
        rows = [
            [
                job.id,
                job.spec.name,
                _schedule(job.spec.schedule),
                _state(job.state, "job"),
                _when(job.next_fire_at, job.HasField("next_fire_at")),
            ]
            for job in reply.jobs
        ]
        show(
            reply,
            lambda: (
                tables.render(["JOB", "NAME", "SCHEDULE", "STATE", "NEXT FIRE"], rows)
                if rows
                else "(no jobs)"
            ),
        )

    def runs(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = stub.ListRuns(pb.ListRunsRequest(job_id=args.job_id, page_size=args.limit))
        show(reply, lambda: runs_table(list(reply.runs)))

    def simple(
        call: str, request: Message, done: str
    ) -> Callable[[pb_grpc.JobSchedulerStub], None]:
        def command(stub: pb_grpc.JobSchedulerStub) -> None:
            reply = getattr(stub, call)(request)
            show(reply, lambda: done.format(reply=reply))

        return command

    def watch(stub: pb_grpc.JobSchedulerStub) -> None:
        for event in stub.WatchJob(pb.WatchJobRequest(job_id=args.job_id)):
            if not table:
                print(json.dumps(MessageToDict(event)), flush=True)
            elif event.HasField("job"):
                job = event.job
                print(
                    f"job  {job.id}  {_state(job.state, 'job')}  next fire "
                    f"{_when(job.next_fire_at, job.HasField('next_fire_at'))}",
                    flush=True,
                )
            else:
                run = event.run
                last = run.attempts[-1] if run.attempts else None
                detail = ""
                if last is not None and last.HasField("exit_code"):
                    detail = f"  exit {last.exit_code}"
                print(
                    f"run  {run.id}  {_when(run.scheduled_at)}  {_state(run.state, 'run')}"
                    f"  attempt {run.attempt}{detail}{'  ' + run.reason if run.reason else ''}",
                    flush=True,
                )

    def logs(stub: pb_grpc.JobSchedulerStub) -> None:
        request = pb.GetRunLogsRequest(run_id=args.run_id, follow=args.follow)
        for chunk in stub.GetRunLogs(request):
            target = sys.stdout if chunk.stream != pb.LOG_STREAM_STDERR else sys.stderr
            target.buffer.write(chunk.data)
            target.flush()

    def upload(stub: pb_grpc.JobSchedulerStub) -> None:
        reply = _upload(parser, stub, args.path)
        show(reply, lambda: reply.digest)

    job = getattr(args, "job_id", "")
    commands: dict[str, Callable[[pb_grpc.JobSchedulerStub], None]] = {
        "schedule": schedule,
        "update": update,
        "status": status,
        "jobs": jobs,
        "runs": runs,
        "pause": simple("PauseJob", pb.PauseJobRequest(job_id=job), "job {reply.job.id} paused"),
        "resume": simple(
            "ResumeJob", pb.ResumeJobRequest(job_id=job), "job {reply.job.id} resumed"
        ),
        "trigger": simple("TriggerJob", pb.TriggerJobRequest(job_id=job), "{reply.run.id}"),
        "cancel": simple(
            "CancelJob", pb.CancelJobRequest(job_id=job), "job {reply.job.id} cancelled"
        ),
        "delete": simple("DeleteJob", pb.DeleteJobRequest(job_id=job), f"job {job} deleted"),
        "cancel-run": simple(
            "CancelRun",
            pb.CancelRunRequest(run_id=getattr(args, "run_id", "")),
            "run {reply.run.id} cancel requested",
        ),
        "watch": watch,
        "logs": logs,
        "upload": upload,
    }
    if args.command == "backfill":
        request = pb.BackfillRequest(job_id=job)
        getattr(request, "from").FromDatetime(args.start)
        request.to.FromDatetime(args.end)
        commands["backfill"] = simple("Backfill", request, "{reply.queued} runs queued")
    with _channel(parser, args) as channel:
        try:
            commands[args.command](pb_grpc.JobSchedulerStub(channel))
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
        except KeyboardInterrupt:
            return 130
    return 0
