"""`hourglass lock` and `hourglass locks describe` as a user runs them, against a real
`hourglass api` process on real etcd and PostgreSQL: the command gets its token, waits in
line, is stopped when its lease is lost, and a holder that was paused past its TTL has its
late write refused by a resource that checks the token (examples/fenced-write/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from hourglass.embedded import EmbeddedEtcd
from tests.acceptance.conftest import HOURGLASS, Processes

REPO = Path(__file__).resolve().parents[2]
FENCED_WRITE = REPO / "examples" / "fenced-write" / "fenced_write.py"
ETCDCTL = Path(sys.executable).parent / "etcdctl"


@pytest.fixture
def api(cluster_env: Processes) -> Iterator[Processes]:
    cluster_env.start("api", "api", "--listen", cluster_env.env["HOURGLASS_SERVER"], "--insecure")
    cluster_env.wait_for_log("api", "hourglass api serving on")
    yield cluster_env


def until(check: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


def describe(procs: Processes, name: str) -> dict[str, object]:
    result: dict[str, object] = procs.cli_json("locks", "describe", name)
    return result


def holder_lease(procs: Processes, name: str) -> str:
    holder = describe(procs, name).get("holder")
    return str(holder["lease"]) if isinstance(holder, dict) else ""


def test_lock_runs_the_command_with_its_token(api: Processes) -> None:
    shown = api.cli(
        "lock",
        "job",
        "--ttl",
        "5s",
        "--",
        "sh",
        "-c",
        "echo $HOURGLASS_LOCK_NAME $HOURGLASS_LOCK_TOKEN",
    )
    name, token = shown.stdout.split()
    assert name == "job" and int(token) > 0
    again = api.cli("lock", "job", "--ttl", "5s", "--", "sh", "-c", "echo $HOURGLASS_LOCK_TOKEN")
    assert int(again.stdout) > int(token)
    # The command's exit code is the CLI's, and the lock is free afterwards.
    failed = api.cli("lock", "job", "--ttl", "5s", "--", "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7
    assert api.cli("locks", "describe", "job").stdout.strip() == "lock 'job' is free"


def test_bad_arguments_exit_2_naming_the_problem(api: Processes) -> None:
    for args, text in (
        (["lock", "job", "--ttl", "1s", "--", "true"], "--ttl: '1s' must be from 2s"),
        (["lock", "job", "--wait", "2h", "--", "true"], "--wait: '2h' must be at most"),
        (["lock", "a b", "--", "true"], "may hold only letters"),
        (["lock", "job"], "give the command to run after --"),
    ):
        result = api.cli(*args, check=False)
        assert result.returncode == 2, result
        assert text in result.stderr, result.stderr


def test_waiters_queue_and_describe_shows_them_in_order(api: Processes, tmp_path: Path) -> None:
    release = tmp_path / "release"
    wait_file = f"while [ ! -e {release} ]; do sleep 0.05; done"
    api.start(
        "holder", "lock", "deploy", "--ttl", "5s", "--holder", "holder", "--", "sh", "-c", wait_file
    )
    until(lambda: holder_lease(api, "deploy"), what="the holder holds the lock")
    busy = api.cli("lock", "deploy", "--ttl", "5s", "--", "true", check=False)
    assert busy.returncode == 1 and "is held by holder" in busy.stderr
    order = tmp_path / "order"
    for n in range(3):
        api.start(
            f"waiter{n}",
            "lock",
            "deploy",
            "--ttl",
            "5s",
            "--wait",
            "60s",
            "--holder",
            f"w{n}",
            "--",
            "sh",
            "-c",
            f"echo w{n} >> {order}",
        )
        until(lambda n=n: describe(api, "deploy").get("waiting") == str(n + 1), what=f"w{n} waits")
    table = api.cli("locks", "describe", "deploy").stdout
    assert "holder:   holder" in table
    rows = [line.split()[1] for line in table.splitlines() if line[:1].isdigit()]
    assert rows == ["w0", "w1", "w2"]
    described = describe(api, "deploy")
    waiters = described["waiters"]
    assert isinstance(waiters, list)
    assert [w["holder"] for w in waiters] == ["w0", "w1", "w2"]
    release.touch()
    for name in ("holder", "waiter0", "waiter1", "waiter2"):
        assert api.running[name].wait(30) == 0, api.log(name)
    assert order.read_text().split() == ["w0", "w1", "w2"]


def _lock_with_a_command_that_records_sigterm(
    api: Processes, tmp_path: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    marks = tmp_path / "marks"
    script = (
        f"trap 'echo terminated >> {marks}; exit 143' TERM; echo started >> {marks};"
        " while true; do sleep 0.1; done"
    )
    process = api.start(
        name, "lock", name, "--ttl", "3s", "--grace", "5s", "--", "sh", "-c", script
    )
    until(lambda: marks.exists() and "started" in marks.read_text(), what="the command started")
    return process, marks


def test_lock_stops_the_command_when_its_lease_is_revoked(
    api: Processes, tmp_path: Path, etcd_server: EmbeddedEtcd
) -> None:
    process, marks = _lock_with_a_command_that_records_sigterm(api, tmp_path, "revoked")
    lease = holder_lease(api, "revoked")
    # Someone (an operator, or etcd itself on expiry) ends the lease under the holder.
    subprocess.run(
        [str(ETCDCTL), f"--endpoints={etcd_server.endpoint}", "lease", "revoke", f"{int(lease):x}"],
        check=True,
        capture_output=True,
    )
    assert process.wait(30) == 3, api.log("revoked")
    assert "lost lock 'revoked'" in api.log("revoked")
    assert marks.read_text().split() == ["started", "terminated"]


def test_lock_stops_the_command_after_being_paused_past_its_ttl(
    api: Processes, tmp_path: Path
) -> None:
    """The CLI itself is frozen (SIGSTOP) while its command runs on: the lease expires and a
    contender takes the lock. Resumed, the CLI sees at once that no keep-alive got through
    for a whole TTL and stops the command before anything else."""
    process, marks = _lock_with_a_command_that_records_sigterm(api, tmp_path, "paused")
    os.kill(process.pid, signal.SIGSTOP)
    try:
        taken = api.cli("lock", "paused", "--ttl", "5s", "--wait", "30s", "--", "true")
        assert taken.returncode == 0
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert process.wait(30) == 3, api.log("paused")
    assert "no keep-alive got through" in api.log("paused")
    assert marks.read_text().split() == ["started", "terminated"]


def test_a_paused_holders_late_write_is_refused_by_the_token_check(
    api: Processes, tmp_path: Path, database_url: str
) -> None:
    """Holder A is paused (SIGSTOP, its CLI and its command) past its TTL; B takes the lock
    and writes. A's command resumes before its CLI can stop it and writes with its old
    token: the row refuses it, and keeps B's value."""
    go = tmp_path / "go"
    write = [sys.executable, str(FENCED_WRITE), "--dsn", database_url, "--key", "report"]
    a = api.start(
        "a", "lock", "res", "--ttl", "2s", "--", *write, "--value", "A", "--wait-for-file", str(go)
    )
    until(lambda: "holding token" in api.log("a"), what="A holds the lock")
    line = next(line for line in api.log("a").splitlines() if "holding token" in line)
    a_token, a_command = int(line.split()[2]), int(line.split("pid ")[1].rstrip(")"))
    os.kill(a.pid, signal.SIGSTOP)
    os.kill(a_command, signal.SIGSTOP)
    try:
        b = subprocess.run(
            [
                *HOURGLASS,
                "lock",
                "res",
                "--ttl",
                "5s",
                "--wait",
                "30s",
                "--",
                *write,
                "--value",
                "B",
            ],
            capture_output=True,
            text=True,
            env=api.env,
            timeout=60,
        )
        assert b.returncode == 0, b.stderr
        b_token = int(b.stdout.split("holding token ")[1].split()[0])
        assert b_token > a_token
        go.touch()
        os.kill(a_command, signal.SIGCONT)
        until(lambda: "refused: token" in api.log("a"), what="A's late write is refused")
    finally:
        os.kill(a_command, signal.SIGCONT)
        os.kill(a.pid, signal.SIGCONT)
    assert a.wait(30) == 3, api.log("a")
    assert f"refused: token {a_token} is older than {b_token}" in api.log("a")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT value, token FROM fenced_rows WHERE key = 'report'").fetchone()
    assert row == ("B", b_token)
