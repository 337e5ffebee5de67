"""The cgroups of one attempt, in each hierarchy the sandbox's plan uses: listing, killing
and removing them, and removing its namespace's parent cgroup with the last of them.
`host.py` creates them."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hourglass.workers.executors.sandbox import CgroupPlan

log = logging.getLogger(__name__)


def read_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def write_file(path: Path, value: str) -> None:
    path.write_text(value)


def cgroup_pids(folder: Path) -> list[int]:
    return [int(p) for p in read_file(folder / "cgroup.procs").split()]


@dataclass
class AttemptCgroup:
    """One attempt's cgroup folders (the same name in each hierarchy the plan uses)."""

    plan: CgroupPlan
    folders: dict[Path, Path]  # hierarchy base -> this attempt's folder there

    @property
    def track(self) -> Path:
        return self.folders[self.plan.track]

    def procs_files(self) -> list[Path]:
        return [folder / "cgroup.procs" for folder in self.folders.values()]

    def pids(self) -> list[int]:
        """The attempt's processes: from the tracking hierarchy, or, when that folder is gone
        (a dead worker's half-removed attempt), from whichever of its folders are left."""
        if self.plan.track in self.folders:
            return cgroup_pids(self.track)
        return sorted({pid for folder in self.folders.values() for pid in cgroup_pids(folder)})

    def oom_killed(self) -> bool:
        folder = self.folders.get(self.plan.memory) if self.plan.memory else None
        if folder is None:
            return False
        for name in ("memory.events", "memory.oom_control"):
            for line in read_file(folder / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                    return True
        return False

    def kill(self) -> None:
        freezer = self.folders.get(self.plan.freezer) if self.plan.freezer else None
        for folder in [self.track] if self.plan.track in self.folders else self.folders.values():
            _kill_tree(folder, freezer)

    def remove(self, timeout: float = 2.0) -> bool:
        """Ends whatever is left and removes the folders; False if one would not go."""
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.01)
        removed = True
        for folder in self.folders.values():
            with contextlib.suppress(FileNotFoundError):
                try:
                    folder.rmdir()
                except OSError as exc:
                    log.warning("cannot remove cgroup %s: %s", folder, exc)
                    removed = False
        for folder in self.folders.values():
            remove_if_empty(folder.parent)
        return removed


# What rmdir says of a namespace's cgroup that another attempt of the namespace still uses
# (EBUSY: it has a child cgroup), or has just removed itself (ENOENT).
_IN_USE = (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT)


def remove_if_empty(folder: Path) -> None:
    """Removes a namespace's cgroup once its last attempt is gone; leaves it to the attempts
    still in it otherwise."""
    if not folder.name.startswith("ns-"):
        return
    try:
        folder.rmdir()
    except OSError as exc:
        if exc.errno not in _IN_USE:
            log.warning("cannot remove cgroup %s: %s", folder, exc)


def _kill_tree(track: Path, freezer: Path | None) -> None:
    """SIGKILL to every process of a cgroup: one write in v2 (cgroup.kill, Linux 5.14+);
    in v1, frozen first when a freezer is at hand, so nothing forks meanwhile."""
    kill_file = track / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            write_file(kill_file, "1")
            return
    if freezer is not None:
        with contextlib.suppress(OSError):
            write_file(freezer / "freezer.state", "FROZEN")
    for pid in cgroup_pids(track):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if freezer is not None:
        with contextlib.suppress(OSError):
            write_file(freezer / "freezer.state", "THAWED")
