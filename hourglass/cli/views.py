"""What the job commands print as table and wide: a job's details, job and run listings."""

from __future__ import annotations

import shlex

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import describe, durations
from hourglass.cli import tables
from hourglass.v1 import scheduler_pb2 as pb


def when(ts: Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def state(value: int, enum: str) -> str:
    return describe.state(value, enum)


def schedule(message: pb.Schedule) -> str:
    return describe.schedule(message, when)


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


def _trigger(run: pb.Run) -> str:
    return pb.RunTrigger.Name(run.trigger).removeprefix("RUN_TRIGGER_").lower()


def runs_table(runs: list[pb.Run], *, wide: bool = False) -> str:
    """One row per attempt, so a retried fire shows each try with its exit code; wide adds
    the trigger, the worker, the fencing token and when the attempt started."""
    rows: list[list[object]] = []
    for run in runs:
        head: list[object] = [run.id, when(run.scheduled_at)]
        if wide:
            head.append(_trigger(run))
        head.append(state(run.state, "run"))
        if not run.attempts:
            rows.append([*head, *(["-"] * (7 if wide else 4)), run.reason])
        for attempt in run.attempts:
            output = attempt.stdout_tail or attempt.stderr_tail or attempt.error
            if attempt.state in (pb.RUN_STATE_LOST, pb.RUN_STATE_CANCELLED):
                output = attempt.error
            row = [*head, attempt.number, state(attempt.state, "run")]
            if wide:
                row += [
                    attempt.worker_id or "-",
                    attempt.fencing_token or "-",
                    when(attempt.started_at, attempt.HasField("started_at")),
                ]
            row += [
                attempt.exit_code if attempt.HasField("exit_code") else "-",
                _took(attempt),
                _first_line(output, 120 if wide else 48),
            ]
            rows.append(row)
    if not rows:
        return "(no runs yet)"
    headers = [
        "RUN", "SCHEDULED", "RUN STATE", "ATTEMPT", "ATTEMPT STATE", "EXIT", "TOOK", "OUTPUT",
    ]  # fmt: skip
    if wide:
        headers[2:2] = ["TRIGGER"]
        headers[6:6] = ["WORKER", "FENCING TOKEN", "STARTED"]
    return tables.render(headers, rows)


def job_details(job: pb.Job, *, wide: bool = False) -> str:
    spec = job.spec
    task = spec.task
    command = shlex.join([*task.command, *task.args])
    if task.binary:
        command = shlex.join([task.binary, *task.args])
    catch_up = pb.CatchUpPolicy.Name(spec.catch_up.policy or pb.CATCH_UP_POLICY_ALL)
    window = spec.catch_up.window.ToTimedelta() if spec.catch_up.HasField("window") else None
    pairs: list[tuple[str, object]] = [
        ("job", job.id),
        ("name", spec.name),
    ]
    if wide:
        pairs.append(("namespace", job.namespace))
    pairs += [
        ("command", command),
        ("schedule", schedule(spec.schedule)),
        ("state", state(job.state, "job")),
        ("next fire", when(job.next_fire_at, job.HasField("next_fire_at"))),
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
        ("created", when(job.created_at)),
    ]
    if wide:
        pairs += [
            ("updated", when(job.updated_at, job.HasField("updated_at"))),
            ("image", task.image or "-"),
            ("env", ", ".join(sorted(task.env)) or "-"),
        ]
    return tables.key_values(pairs)


def jobs_table(jobs: list[pb.Job], *, wide: bool = False) -> str:
    if not jobs:
        return "(no jobs)"
    headers = ["JOB", "NAME", "SCHEDULE", "STATE", "NEXT FIRE"]
    if wide:
        headers = [
            "JOB", "NAMESPACE", "NAME", "SCHEDULE", "STATE", "NEXT FIRE", "REVISION",
            "MISSED", "CREATED",
        ]  # fmt: skip
    rows: list[list[object]] = []
    for job in jobs:
        row: list[object] = [
            job.id,
            job.spec.name,
            schedule(job.spec.schedule),
            state(job.state, "job"),
            when(job.next_fire_at, job.HasField("next_fire_at")),
        ]
        if wide:
            row[1:1] = [job.namespace]
            row += [job.revision, job.missed_fires, when(job.created_at)]
        rows.append(row)
    return tables.render(headers, rows)
