"""Workers execute runs through the local executor, retry failures, enforce timeouts."""

from __future__ import annotations

import os
from pathlib import Path

from hourglass.domain import RetryPolicy, RunState
from hourglass.locks import Etcd
from hourglass.store import db
from tests.integration.helpers import finished_run, running_service, schedule, seconds


async def test_a_due_job_runs_with_the_hourglass_environment(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(
        pool,
        "sh",
        "-c",
        'echo "$HOURGLASS_RUN_ID $HOURGLASS_JOB_ID $HOURGLASS_ATTEMPT $HOURGLASS_FENCING_TOKEN'
        ' $HOURGLASS_SCHEDULED_AT"; echo oops >&2',
    )
    async with running_service(pool, database_url, etcd):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.SUCCEEDED
    (attempt,) = run.attempts
    assert attempt.state == RunState.SUCCEEDED and attempt.exit_code == 0
    assert attempt.fencing_token > 0
    assert attempt.stdout_tail.split() == [
        str(run.id),
        str(job_id),
        "1",
        str(attempt.fencing_token),
        run.scheduled_at.isoformat(timespec="microseconds"),
    ]
    assert attempt.stderr_tail == "oops\n"
    assert attempt.finished_at is not None and attempt.finished_at >= attempt.started_at


async def test_a_failing_job_is_retried_with_backoff_and_keeps_every_attempt(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(
        pool,
        "sh",
        "-c",
        'echo "try $HOURGLASS_ATTEMPT"; exit 3',
        retry=RetryPolicy(max_attempts=3, backoff=seconds(0.4)),
    )
    async with running_service(pool, database_url, etcd):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.FAILED
    assert run.attempt == 3
    assert [(a.number, a.state, a.exit_code, a.stdout_tail) for a in run.attempts] == [
        (n, RunState.FAILED, 3, f"try {n}\n") for n in (1, 2, 3)
    ]
    # Exponential backoff with jitter: attempt 2 waits 0.2-0.4s, attempt 3 waits 0.4-0.8s.
    gaps = [
        (later.started_at - earlier.finished_at).total_seconds()  # type: ignore[operator]
        for earlier, later in zip(run.attempts, run.attempts[1:], strict=False)
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4


async def test_a_job_that_succeeds_on_retry(
    pool: db.Pool, database_url: str, etcd: Etcd, tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"
    job_id = await schedule(
        pool,
        "sh",
        "-c",
        f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 1; fi",
        retry=RetryPolicy(max_attempts=3, backoff=seconds(0.1)),
    )
    async with running_service(pool, database_url, etcd):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.SUCCEEDED
    assert [(a.state, a.exit_code) for a in run.attempts] == [
        (RunState.FAILED, 1),
        (RunState.SUCCEEDED, 0),
    ]


async def test_timeout_kills_the_whole_process_group(
    pool: db.Pool, database_url: str, etcd: Etcd, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    job_id = await schedule(
        pool,
        "sh",
        "-c",
        f"sleep 60 & echo $! > {pid_file}; echo started; wait",
        timeout=seconds(1),
    )
    async with running_service(pool, database_url, etcd):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.TIMED_OUT
    (attempt,) = run.attempts
    assert attempt.stdout_tail == "started\n"
    assert "timeout" in attempt.error
    child = int(pid_file.read_text())
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    ), "the grandchild outlived the timeout"


async def test_a_command_that_cannot_start_fails_with_the_reason(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    job_id = await schedule(pool, "/no/such/program")
    async with running_service(pool, database_url, etcd):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.FAILED
    assert "cannot start '/no/such/program'" in run.attempts[0].error


async def test_worker_env_does_not_leak_into_jobs(
    pool: db.Pool, database_url: str, etcd: Etcd
) -> None:
    os.environ["HOURGLASS_DATABASE_URL"] = "postgresql://secret@somewhere/db"
    try:
        job_id = await schedule(pool, "sh", "-c", 'echo "[$HOURGLASS_DATABASE_URL]"')
        async with running_service(pool, database_url, etcd):
            run = await finished_run(pool, job_id)
    finally:
        del os.environ["HOURGLASS_DATABASE_URL"]
    assert run.attempts[0].stdout_tail == "[]\n"
