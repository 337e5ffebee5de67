"""The local executor's attempt sandbox on this machine (root, cgroups, util-linux), driven by a
worker in this event loop: what one attempt can see of another and of the worker, its limits,
the end of its whole tree, and the caps on its output."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hourglass.domain import JobId, JobSpec, Resources, RunState, Task
from hourglass.locks import Etcd
from hourglass.schedules import At
from hourglass.store import db, jobs
from hourglass.workers.executors.host import Host
from hourglass.workers.executors.local import LocalExecutor
from hourglass.workers.executors.sandbox import SandboxConfig, namespace_cgroup
from hourglass.workers.logs import DEFAULT_LIMIT
from tests.integration.helpers import (
    eventually,
    finished_run,
    running_service,
    schedule,
    seconds,
)


@pytest.fixture
def host() -> Iterator[Host]:
    started = Host(SandboxConfig(pids_max=64))
    started.start()
    yield started
    started.stop()


async def schedule_task(pool: db.Pool, task: Task) -> JobId:
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(
            conn, spec=JobSpec(name="test", task=task, schedule=At(now)), now=now
        )
    return job_id


def processes_named(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip() == text.encode():
                    found.append(int(entry.name))
    return found


async def test_an_attempt_sees_neither_the_worker_nor_another_attempt(
    pool: db.Pool, database_url: str, etcd: Etcd, host: Host
) -> None:
    os.environ["HOURGLASS_DATABASE_URL"] = database_url
    secret = f"secret-{os.getpid()}-{time.time_ns()}"
    try:
        other = await schedule_task(
            pool, Task(command=("sh", "-c", "id -u; sleep 3"), secret_env={"TOKEN": secret})
        )
        reader = await schedule(
            pool,
            "sh",
            "-c",
            "sleep 1; id -u; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; env; ls /proc | wc -l",
        )
        async with running_service(pool, database_url, etcd, executor=LocalExecutor(sandbox=host)):
            runs = {job: await finished_run(pool, job) for job in (other, reader)}
    finally:
        del os.environ["HOURGLASS_DATABASE_URL"]
    seen = runs[reader].attempts[0].stdout_tail
    assert runs[reader].state == RunState.SUCCEEDED, runs[reader].attempts[0]
    assert secret not in seen and "postgresql://" not in seen and "HOURGLASS_DATABASE" not in seen
    assert "HOURGLASS_RUN_ID" in seen  # it did read its own environment
    uids = {seen.split()[0], runs[other].attempts[0].stdout_tail.split()[0]}
    assert len(uids) == 2 and all(int(uid) >= 200000 for uid in uids)


async def test_a_timeout_ends_the_whole_tree_setsid_included(
    pool: db.Pool, database_url: str, etcd: Etcd, host: Host
) -> None:
    job_id = await schedule(
        pool, "sh", "-c", "setsid sleep 3011 & echo started; sleep 1000", timeout=seconds(1)
    )
    async with running_service(pool, database_url, etcd, executor=LocalExecutor(sandbox=host)):
        run = await finished_run(pool, job_id)
    assert run.state == RunState.TIMED_OUT
    assert run.attempts[0].stdout_tail == "started\n"
    assert processes_named("sleep 3011") == []


async def test_limits_hold_and_say_why(
    pool: db.Pool, database_url: str, etcd: Etcd, host: Host
) -> None:
    memory = await schedule_task(
        pool,
        Task(
            command=("python3", "-c", "x = bytearray(300 * 1024 * 1024); print('got it')"),
            resources=Resources(memory_limit="64Mi"),
        ),
    )
    forks = await schedule(
        pool, "sh", "-c", "for i in $(seq 100); do sleep 5 & done; wait; echo all forked"
    )
    async with running_service(pool, database_url, etcd, executor=LocalExecutor(sandbox=host)):
        oom = await finished_run(pool, memory)
        bounded = await finished_run(pool, forks, timeout=30)
    assert oom.state == RunState.FAILED and "out of memory" in oom.attempts[0].error
    assert "got it" not in oom.attempts[0].stdout_tail
    # The pids limit (64) stops the forks: the shell reports it cannot fork.
    assert "fork" in bounded.attempts[0].stderr_tail.lower(), bounded.attempts[0]


def test_a_new_worker_ends_what_a_dead_one_left_in_its_cgroups() -> None:
    config = SandboxConfig()
    first = Host(config)
    first.start()
    assert first.plan is not None
    # A dead worker's attempt whose parent-death signal never came: a process in its cgroup.
    slot = first.acquire("r-left-behind-1", memory=None)
    procs = slot.cgroup.procs_files()
    join = " && ".join(f'echo $$ > "{path}"' for path in procs)
    left = subprocess.Popen(["sh", "-c", f"{join} && exec setsid sleep 3013"])
    deadline = time.monotonic() + 10
    while left.pid not in slot.cgroup.pids():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The worker dies: its lock goes with its process (here: released by hand).
    assert first._worker_lock is not None
    os.close(first._worker_lock)
    first._worker_lock = None
    os.close(slot._uid_lock)

    second = Host(config)
    second.start()
    try:
        assert left.wait(10) == -9
        assert not slot.cgroup.track.exists()
    finally:
        second.stop()


def test_a_worker_leaves_alone_the_attempts_of_a_worker_it_cannot_judge(tmp_path: Path) -> None:
    """Workers of another run folder (another container, another --sandbox-run-dir) share
    the cgroup tree but not the locks: whether they live cannot be told, so a new worker must
    not end their attempts."""
    other = Host(SandboxConfig(run_dir=tmp_path / "other-run"))
    other.start()
    slot = other.acquire("r-of-another-1", memory=None)
    join = " && ".join(f'echo $$ > "{path}"' for path in slot.cgroup.procs_files())
    theirs = subprocess.Popen(["sh", "-c", f"{join} && exec setsid sleep 3014"])
    try:
        deadline = time.monotonic() + 10
        while theirs.pid not in slot.cgroup.pids():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        mine = Host(SandboxConfig())
        mine.start()
        try:
            assert theirs.poll() is None  # still running
            assert slot.cgroup.track.exists()
        finally:
            mine.stop()
    finally:
        theirs.kill()
        theirs.wait()
        slot.close()
        other.stop()


def test_a_dead_workers_half_removed_attempt_is_cleaned_up() -> None:
    """A worker that died while removing an attempt's folders (the tracking one gone, others
    left): the next worker removes what is left instead of failing to start."""
    config = SandboxConfig()
    first = Host(config)
    first.start()
    assert first.plan is not None
    slot = first.acquire("r-half-removed-1", memory=None)
    slot.cgroup.track.rmdir()  # on cgroup v1 the other hierarchies' folders are left
    assert first._worker_lock is not None
    os.close(first._worker_lock)
    first._worker_lock = None
    os.close(slot._uid_lock)

    second = Host(config)
    second.start()
    try:
        assert not any(folder.exists() for folder in slot.cgroup.folders.values())
    finally:
        second.stop()


async def test_output_caps_hold_in_the_database_and_on_disk(
    pool: db.Pool, database_url: str, etcd: Etcd, host: Host, tmp_path: Path
) -> None:
    job_id = await schedule(pool, "sh", "-c", "head -c 30000000 /dev/zero | tr '\\0' x; echo end")
    executor = LocalExecutor(sandbox=host, log_dir=tmp_path / "logs", log_limit=2_000_000)
    async with running_service(pool, database_url, etcd, executor=executor):
        run = await finished_run(pool, job_id, timeout=60)
    assert run.state == RunState.SUCCEEDED
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT sum(length(data)) AS stored, bool_or(position('output cut here' IN"
            " convert_from(data, 'UTF8')) > 0) AS noted FROM run_logs WHERE run_id = %s",
            (run.id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    print(f"stored {row['stored']} bytes in run_logs (cap {DEFAULT_LIMIT})")
    assert DEFAULT_LIMIT - 200 <= row["stored"] <= DEFAULT_LIMIT and row["noted"]
    (log_file,) = (tmp_path / "logs").rglob("*.log")
    data = log_file.read_bytes()
    note = data[2_000_000:]
    assert data[:2_000_000] == b"x" * 2_000_000
    assert note.startswith(b"\n[hourglass: output cut here, at 2000000 bytes") and len(note) < 100
    # Only the worker's user may read it: another attempt must not.
    assert log_file.stat().st_mode & 0o077 == 0 and log_file.parent.stat().st_mode & 0o077 == 0


async def test_attempts_share_their_namespaces_cpu_weight_and_its_cgroup_goes_with_them(
    pool: db.Pool, database_url: str, etcd: Etcd, host: Host
) -> None:
    """Each attempt's cgroup sits in its namespace's parent, whose CPU weight is the same for
    every namespace; the parent exists while an attempt of the namespace runs, and the last
    one to end removes it."""
    assert host.plan is not None and host.plan.cpu is not None and host.plan.cpu_weight
    weight_file, weight = host.plan.cpu_weight
    workers = host.plan.cpu / host.config.cgroup_name / f"w-{host.key}"
    parent = workers / namespace_cgroup("team-x")
    marker = f"cpu-share-{time.time_ns()}"
    now = datetime.now(UTC)
    async with db.transaction(pool) as conn:
        job_id, _ = await jobs.create(
            conn,
            spec=JobSpec(
                name="cpu",
                task=Task(command=("sh", "-c", f"cat /proc/self/cgroup; sleep 2 # {marker}")),
                schedule=At(now),
            ),
            now=now,
            namespace="team-x",
        )
    async with running_service(pool, database_url, etcd, executor=LocalExecutor(sandbox=host)):

        async def attempt_running() -> Path | None:
            """The attempt's cgroup once its processes are in it: the cgroup is made before
            the launcher's first step moves itself in, so a bare folder is not enough."""
            for entry in parent.glob("r-*"):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    if (entry / "cgroup.procs").read_text().split():
                        return entry
            return None

        # Its processes are there, in the namespace's parent, not beside it.
        await eventually(attempt_running)
        assert (parent / weight_file).read_text().strip() == weight
        run = await finished_run(pool, job_id)
    assert run.state == RunState.SUCCEEDED, run.attempts[0]
    assert f"/ns-{namespace_cgroup('team-x')[3:]}/r-" in run.attempts[0].stdout_tail
    assert not parent.exists()

    # Two attempts of one namespace: the first to end leaves the parent to the second.
    first = host.acquire("r-a-1", memory=None, namespace="team-y")
    second = host.acquire("r-b-1", memory=None, namespace="team-y")
    shared = workers / namespace_cgroup("team-y")
    assert first.cgroup.folders[host.plan.cpu].parent == shared
    assert second.cgroup.folders[host.plan.cpu].parent == shared
    first.close()
    assert shared.is_dir() and (shared / weight_file).read_text().strip() == weight
    second.close()
    assert not shared.exists()
    for base in host._bases():
        folder = base / host.config.cgroup_name / f"w-{host.key}"
        assert [entry for entry in folder.iterdir() if entry.is_dir()] == []
