"""Ending what workers that died on this host left behind: the processes still running in
their attempt cgroups, and those cgroups.

A worker holds an flock on `<run_dir>/workers/<key>` for its whole life and names its
cgroups `w-<key>` (host.py), so a starting worker tells a dead worker (its lock is free) from
a live one (held) by trying the lock. A worker key with no lock file belongs to a worker of
another run folder (another container or mount namespace sharing the cgroup tree); whether it
lives cannot be told, so its cgroups are left alone. The parent-death signal should have
ended such processes already; this is what remains when it did not.

It is its own module because it deals with other workers' leftovers, once, at start, while
host.py holds this worker's own place; `flock` is here because telling the dead by their
locks is what it is for, and host.py takes the same locks for its key and its uids.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from hourglass.workers.executors.cgroups import AttemptCgroup, remove_if_empty
from hourglass.workers.executors.sandbox import CgroupPlan, SandboxConfig

__all__ = ["end_dead_workers", "flock"]

# The host's logger: these lines are part of a worker's start on the host.
log = logging.getLogger("hourglass.workers.executors.host")


def flock(path: Path) -> int | None:
    """An exclusive flock on `path` (created 0600), or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def end_dead_workers(
    config: SandboxConfig, plan: CgroupPlan, *, bases: list[Path], own_key: str
) -> list[str]:
    """Ends the processes left in the cgroups of workers that died on this host (their
    parent-death signal should have done so already) and removes those cgroups. `bases` are
    the cgroup hierarchies the plan uses. Returns a line per attempt cgroup that still had
    processes."""
    reports: list[str] = []
    parents = [base / config.cgroup_name for base in bases]
    keys = {
        entry.name[2:]
        for parent in parents
        if parent.is_dir()
        for entry in parent.iterdir()
        if entry.is_dir() and entry.name.startswith("w-")
    }
    for key in sorted(keys - {own_key}):
        lock_path = config.run_dir / "workers" / key
        if not lock_path.exists():
            # Not a worker of this run folder: one in another container or mount
            # namespace, or with another --sandbox-run-dir, that shares the cgroup tree.
            # Whether it lives cannot be told from here, so its attempts are left alone.
            continue
        fd = flock(lock_path)
        if fd is None:
            continue  # a live worker
        try:
            reports += _end_worker(config, plan, bases=bases, key=key, parents=parents)
            with contextlib.suppress(OSError):
                lock_path.unlink()
        finally:
            os.close(fd)
    return reports


def _end_worker(
    config: SandboxConfig,
    plan: CgroupPlan,
    *,
    bases: list[Path],
    key: str,
    parents: list[Path],
) -> list[str]:
    reports = []
    names = {
        entry.relative_to(parent / f"w-{key}")
        for parent in parents
        if (parent / f"w-{key}").is_dir()
        for namespace in (parent / f"w-{key}").iterdir()
        if namespace.is_dir()
        for entry in namespace.iterdir()
        if entry.is_dir()
    }
    for name in sorted(names):
        folders = {base: base / config.cgroup_name / f"w-{key}" / name for base in bases}
        cgroup = AttemptCgroup(plan, {b: f for b, f in folders.items() if f.is_dir()})
        left = cgroup.pids() if plan.track in cgroup.folders else []
        if left:
            line = (
                f"attempt cgroup {name} of dead worker {key}: ended {len(left)} processes"
                f" it left running ({', '.join(map(str, left[:10]))})"
            )
            log.warning("%s", line)
            reports.append(line)
        cgroup.remove()
    for parent in parents:
        with contextlib.suppress(OSError):
            for namespace in (parent / f"w-{key}").iterdir():
                remove_if_empty(namespace)
        with contextlib.suppress(OSError):
            (parent / f"w-{key}").rmdir()
    return reports
