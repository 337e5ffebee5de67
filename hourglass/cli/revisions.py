"""`hourglass revisions JOB`: every spec a job has had (ListJobRevisions), newest first, each
with what it changed from the one before (hourglass.spec_diff)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from hourglass import durations, spec_diff
from hourglass.cli import addressing, exit_codes, output, tables, views
from hourglass.cli.channel import open_channel
from hourglass.cli.client import JOB_HELP
from hourglass.cli.exit_codes import Failure
from hourglass.cli.options import add_client_options, command
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

COMMANDS = ("revisions",)


def add_parser(commands: Any) -> None:
    revisions = command(
        commands,
        "revisions",
        help="a job's specs over time, newest first, with what each changed",
        description="Show every spec a job has had, newest first: revision 1 is the spec it"
        " was scheduled with, and each update adds one. WHAT CHANGED names the parts that"
        " differ from the revision before; env and secrets show by name only (secret values"
        " are never kept).",
        examples=[
            "hourglass revisions nightly-report",
            "hourglass revisions team-a/nightly-report -o wide --limit 5",
            "hourglass revisions 3f2a9c -o json | jq '.revisions[0].spec.schedule'",
        ],
    )
    add_client_options(revisions)
    revisions.add_argument("job", metavar="JOB", help=JOB_HELP)
    revisions.add_argument(
        "--limit", type=int, default=50, help="the newest this many (default 50, up to 500)"
    )


def table(revisions: list[pb.JobRevision], *, complete: bool, wide: bool = False) -> str:
    """One row per revision; `complete`: the oldest shown is the job's first. wide adds the
    name, the env and secret names, attempts and timeout."""
    if not revisions:
        return "(no revisions)"
    words = spec_diff.summaries([r.spec for r in revisions], oldest_complete=complete)
    headers = ["REVISION", "CHANGED", "SCHEDULE", "COMMAND/IMAGE", "WHAT CHANGED"]
    if wide:
        headers[2:2] = ["NAME"]
        headers += ["ENV", "SECRETS", "ATTEMPTS", "TIMEOUT"]
    rows: list[list[object]] = []
    for revision, changed in zip(revisions, words, strict=True):
        spec = revision.spec
        row: list[object] = [
            revision.revision,
            views.when(revision.created_at),
            views.schedule(spec.schedule),
            spec_diff.task_line(spec.task),
            changed or "-",
        ]
        if wide:
            row[2:2] = [spec.name]
            row += [
                ",".join(sorted(spec.task.env)) or "-",
                ",".join(sorted(spec.task.secret_env)) or "-",
                spec.max_attempts or 1,
                durations.format(spec.timeout.ToTimedelta()) if spec.HasField("timeout") else "-",
            ]
        rows.append(row)
    text = tables.render(headers, rows)
    if not complete:
        text += f"\n(the newest {len(revisions)}; older ones with a larger --limit)"
    return text


def _show(args: argparse.Namespace, stub: pb_grpc.JobSchedulerStub) -> None:
    job_id = addressing.resolve_job(stub, args.job)
    reply = stub.ListJobRevisions(
        pb.ListJobRevisionsRequest(job_id=job_id, page_size=args.limit), timeout=30
    )
    revisions = list(reply.revisions)
    complete = not reply.next_page_token
    print(
        output.render(
            args.output,
            reply,
            table=lambda: table(revisions, complete=complete),
            wide=lambda: table(revisions, complete=complete, wide=True),
        )
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    with open_channel(parser, args) as channel:
        try:
            # (The generated stub carries no annotations.)
            _show(args, pb_grpc.JobSchedulerStub(channel))  # type: ignore[no-untyped-call]
        except grpc.RpcError as exc:
            return exit_codes.report(exc, server=args.server)
        except Failure as exc:
            print(f"hourglass: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return exit_codes.INTERRUPTED
    return exit_codes.OK
