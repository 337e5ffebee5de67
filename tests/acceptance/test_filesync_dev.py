"""`hourglass dev --case filesync` with two `hourglass sync` clients on two folders, as the
README's two-folder demo runs it: creates, edits, renames and deletes cross over; offline
edits on both sides end as the winner plus a conflict copy holding the other side's bytes;
a client killed mid-upload re-sends only what the server lacks; the server restarts
mid-sync. Each step ends with both folders byte-identical to the expected state."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import grpc
import pytest

from hourglass.cases.filesync import chunking
from hourglass.cases.filesync.v1 import filesync_pb2 as pb
from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc
from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes

ADDRESS = re.compile(r"filesync: gRPC (\S+), HTTP http://(\S+) \(schema (\w+)\)")
WAIT = 120.0


class Dev:
    """`hourglass dev --case filesync` in its own folder, restartable on the same ports."""

    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
        self.procs = Processes(logs=folder, env=env)
        self.folder = folder
        self.listen = f"127.0.0.1:{free_port()}"
        self.grpc = ""
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        name = f"dev{self.starts}"
        self.procs.start(
            name, "dev", "--data-dir", str(self.folder / "data"), "--listen", self.listen,
            "--case", "filesync",
        )  # fmt: skip
        self.procs.wait_for_log(name, "hourglass dev: serving hourglass.v1.JobScheduler", WAIT)
        found = ADDRESS.search(self.procs.log(name))
        assert found and found.group(3) == "filesync_dev", self.procs.log(name)
        assert self.grpc in ("", found.group(1)), "a restart moved the service"
        self.grpc = found.group(1)

    def stop(self) -> None:
        process = self.procs.running[f"dev{self.starts}"]
        process.terminate()
        process.wait(60)

    def cli(self, *args: str, token: Path | None = None) -> str:
        extra = ["--token-file", str(token)] if token else []
        done = self.procs.cli("filesync", *args, "--server", self.grpc, *extra)
        return done.stdout.strip()


class Client:
    def __init__(self, dev: Dev, name: str, folder: Path, workspace: str, token: Path) -> None:
        self.dev, self.name, self.folder = dev, name, folder
        self.workspace, self.token = workspace, token
        folder.mkdir(exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.process = self.dev.procs.start(
            f"sync-{self.name}-{time.monotonic_ns()}", "sync", str(self.folder),
            "--workspace", self.workspace, "--server", self.dev.grpc,
            "--token-file", str(self.token), "--device", self.name, *extra,
        )  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(60)

    def counters(self) -> dict[str, int]:
        path = self.folder / ".hourglass-sync" / "state.db"
        if not path.exists():
            return {}
        with sqlite3.connect(path, timeout=10) as db:
            try:
                return dict(db.execute("SELECT name, value FROM counters").fetchall())
            except sqlite3.OperationalError:
                return {}


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".hourglass-sync" not in p.relative_to(folder).parts
    }


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def converge(expected: dict[str, bytes], *folders: Path) -> None:
    wait_until(
        f"both folders to hold {sorted(expected)}",
        lambda: all(tree(f) == expected for f in folders),
    )


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    running = Dev(tmp_path_factory.mktemp("filesync"))
    try:  # a start that fails stops what it started too
        running.start()
        yield running
    finally:
        running.procs.stop_all()


def workspace(dev: Dev, name: str) -> Path:
    token = dev.folder / f"{name}.token"
    token.write_text(dev.cli("workspace", name, "--user", "ann"))
    return token


def test_two_folders_sync_edits_conflicts_and_a_server_restart(dev: Dev, tmp_path: Path) -> None:
    token = workspace(dev, "demo")
    a = Client(dev, "laptop", tmp_path / "a", "demo", token)
    b = Client(dev, "desktop", tmp_path / "b", "demo", token)
    a.start()
    b.start()
    # Create (nested too), then edit on the other side.
    (a.folder / "docs").mkdir()
    (a.folder / "notes.txt").write_bytes(b"first\n")
    (a.folder / "docs" / "plan.md").write_bytes(b"# plan\n")
    expected = {"notes.txt": b"first\n", "docs/plan.md": b"# plan\n"}
    converge(expected, a.folder, b.folder)
    with (b.folder / "notes.txt").open("ab") as out:
        out.write(b"second\n")
    expected["notes.txt"] = b"first\nsecond\n"
    converge(expected, a.folder, b.folder)
    # Rename, then delete.
    (a.folder / "docs" / "plan.md").rename(a.folder / "docs" / "plan-v2.md")
    expected["docs/plan-v2.md"] = expected.pop("docs/plan.md")
    converge(expected, a.folder, b.folder)
    (b.folder / "notes.txt").unlink()
    del expected["notes.txt"]
    converge(expected, a.folder, b.folder)
    # Offline edits on both sides: one wins the name, the other becomes a conflict copy.
    (a.folder / "shared.txt").write_bytes(b"v1\n")
    expected["shared.txt"] = b"v1\n"
    converge(expected, a.folder, b.folder)
    a.stop()
    b.stop()
    (a.folder / "shared.txt").write_bytes(b"offline edit on the laptop\n")
    (b.folder / "shared.txt").write_bytes(b"offline edit on the desktop\n")
    a.start()
    wait_until(
        "the laptop's offline edit to reach the server",
        lambda: '"version": "2"' in _head(dev, token, "demo", "shared.txt"),
    )
    b.start()
    copy = f"shared (desktop's conflicted copy {date.today().isoformat()}).txt"
    expected["shared.txt"] = b"offline edit on the laptop\n"
    expected[copy] = b"offline edit on the desktop\n"
    converge(expected, a.folder, b.folder)
    # The server restarts mid-sync: what was written meanwhile syncs once it is back.
    big = os.urandom(6 * 1024 * 1024)
    (a.folder / "big.bin").write_bytes(big)
    dev.stop()
    (b.folder / "while-down.txt").write_bytes(b"written while the server was down\n")
    (a.folder / "docs" / "plan-v2.md").write_bytes(b"# plan, edited offline\n")
    dev.start()
    expected.update(
        {
            "big.bin": big,
            "while-down.txt": b"written while the server was down\n",
            "docs/plan-v2.md": b"# plan, edited offline\n",
        }
    )
    converge(expected, a.folder, b.folder)
    assert a.counters().get("conflicts", 0) + b.counters().get("conflicts", 0) == 1


def _head(dev: Dev, token: Path, workspace: str, path: str) -> str:
    """What `hourglass filesync versions` prints; "" when the path has no versions."""
    try:
        return dev.cli("versions", workspace, path, token=token)
    except AssertionError as exc:
        assert "NOT_FOUND" in str(exc)
        return ""


def test_a_client_killed_mid_upload_resends_only_what_is_missing(dev: Dev, tmp_path: Path) -> None:
    token = workspace(dev, "killed")
    a = Client(dev, "laptop", tmp_path / "a", "killed", token)
    data = os.urandom(24 * 1024 * 1024)
    (a.folder / "video.bin").write_bytes(data)
    pieces = chunking.pieces(data)
    distinct = {p.digest for p in pieces}
    # Slowed to 4 MB/s so that the kill lands mid-upload on any machine.
    a.start("--upload-limit", str(4 * 1024 * 1024))
    wait_until("some chunks to be sent", lambda: a.counters().get("chunks_uploaded", 0) > 0)
    a.stop(signal.SIGKILL)
    sent_before = a.counters()["chunks_uploaded"]
    with grpc.insecure_channel(dev.grpc) as channel:
        missing = pb_grpc.FileSyncStub(channel).HaveChunks(
            pb.HaveChunksRequest(workspace="killed", digests=sorted(distinct)),
            metadata=(("authorization", f"Bearer {token.read_text().strip()}"),),
        )
    held = len(distinct) - len(missing.missing)
    assert 0 < sent_before <= held < len(distinct), (sent_before, held, len(distinct))
    # Killed before its commit: the file has no version yet.
    assert _head(dev, token, "killed", "video.bin") == ""
    a.start()
    b = Client(dev, "desktop", tmp_path / "b", "killed", token)
    b.start()
    converge({"video.bin": data}, a.folder, b.folder)
    resent = a.counters()["chunks_uploaded"] - sent_before
    assert resent == len(distinct) - held, (resent, held, len(distinct))
    assert a.counters()["versions_committed"] == 1
    assert hashlib.sha256((b.folder / "video.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
