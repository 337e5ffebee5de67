"""The parts of the attempt sandbox that touch the machine: checking that it can run, the uid
pool, the cgroups, and (through dead_workers.py) ending what a dead worker left behind.
`sandbox.py` decides; this module does.

Cgroups: `<base>/<cgroup_name>/w-<worker key>/ns-<hash of namespace>/<attempt>` in each
hierarchy the plan uses (`sandbox.attempt_cgroup`). The namespace level carries the CPU weight,
equal for every namespace; it is created by the first attempt of its namespace and removed by
the last one to end. Two attempts of one namespace may race there: a creation tolerates the
folder being there, a removal tolerates it being busy, and a creation that finds its parent
removed under it starts again.

Locks live in a root-only folder (`SandboxConfig.run_dir`):
- `uids/<uid>`: held (flock) by the attempt running as that uid, so that two attempts on one
  host, of one worker or of two, never share a uid;
- `workers/<key>`: held by a live worker for its whole life. Its cgroups are named after the
  key, so a worker starting on the host can tell the cgroups of dead workers (whose lock is
  free) from those of live ones, and end the processes left in them. A worker key with no
  lock file here belongs to a worker of another run folder (another container or mount
  namespace sharing the cgroup tree): its cgroups are left alone, since whether it lives
  cannot be told.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import random
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hourglass.workers.executors.cgroups import (
    AttemptCgroup,
    read_file,
    remove_if_empty,
    write_file,
)
from hourglass.workers.executors.dead_workers import end_dead_workers, flock
from hourglass.workers.executors.sandbox import (
    CgroupPlan,
    SandboxConfig,
    SandboxError,
    attempt_cgroup,
    cgroup_layout,
    cgroup_plan,
    launch,
)

log = logging.getLogger(__name__)

TOOLS = ("setpriv", "unshare", "mount", "env", "sh")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class Slot:
    """What one attempt holds while it runs: its uid and its cgroup."""

    uid: int
    cgroup: AttemptCgroup
    _uid_lock: int
    closed: bool = field(default=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.cgroup.remove()
        finally:
            # The uid is free only once nothing of this attempt runs as it any more.
            os.close(self._uid_lock)


class Host:
    """The sandbox's hold on this machine, for one worker process."""

    def __init__(self, config: SandboxConfig, *, cgroup_root: Path = CGROUP_ROOT) -> None:
        self.config = config
        self.cgroup_root = cgroup_root
        self.key = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._worker_lock: int | None = None
        self.plan: CgroupPlan | None = None
        self._next_uid = random.randrange(len(config.uids))

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Checks that the sandbox can run here, ends what dead workers left, and takes this
        worker's place. Raises SandboxError with what to do when it cannot run."""
        if os.geteuid() != 0:
            raise SandboxError(
                "the attempt sandbox needs root: it runs each attempt as its own uid, in its own"
                " namespaces and cgroup. Run the worker as root (in a container: with"
                " CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and a writable /sys/fs/cgroup); on your"
                " own machine, `hourglass dev --unsandboxed` runs jobs as your user, unisolated"
            )
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise SandboxError(
                f"the attempt sandbox needs {', '.join(missing)} (util-linux 2.32+, coreutils)"
            )
        run_dir = self.config.run_dir
        for folder in (run_dir, run_dir / "uids", run_dir / "workers"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self.plan = self._plan()
        self.end_stale()
        self._worker_lock = flock(run_dir / "workers" / self.key)
        assert self._worker_lock is not None, "a fresh key is never locked"
        for base in self._bases():
            (base / self.config.cgroup_name / f"w-{self.key}").mkdir(parents=True, exist_ok=True)
        self._enable_v2(self.plan, self.config.cgroup_name, f"w-{self.key}")
        self._trial()

    def _plan(self) -> CgroupPlan:
        layout = cgroup_layout(
            read_file(Path("/proc/self/mounts")), read_file(Path("/proc/self/cgroup"))
        )
        v2_controllers: set[str] = set()
        if layout.v2 is not None:
            v2_controllers = set(read_file(layout.v2 / "cgroup.controllers").split())
            try:
                self._enable_v2_at(layout.v2, tuple(sorted({"pids", "memory"} & v2_controllers)))
            except OSError as exc:
                # The worker shares its cgroup with other processes (EBUSY): v2's limits are not
                # ours to use; v1's may be.
                log.warning("cannot enable cgroup v2 controllers under %s: %s", layout.v2, exc)
                v2_controllers = set()
            if "cpu" in v2_controllers:
                try:
                    self._enable_v2_at(layout.v2, ("cpu",))
                except OSError as exc:
                    # E.g. a realtime process in the subtree: the weights go to v1, if any.
                    log.warning("cannot enable the v2 cpu controller in %s: %s", layout.v2, exc)
                    v2_controllers.discard("cpu")
        plan = cgroup_plan(layout, v2_controllers=v2_controllers)
        if plan.cpu is not None and plan.cpu not in {plan.track, plan.pids, plan.memory}:
            try:
                (plan.cpu / self.config.cgroup_name).mkdir(exist_ok=True)
            except OSError as exc:
                # Weights are fairness, not isolation: without them the sandbox still holds.
                log.warning(
                    "cannot create cgroups under %s (%s): namespaces get no CPU weights",
                    plan.cpu,
                    exc.strerror,
                )
                plan = dataclasses.replace(plan, cpu=None, cpu_weight=None)
        for base in {plan.track, plan.pids, plan.memory, plan.freezer} - {None}:
            assert base is not None
            probe = base / self.config.cgroup_name
            try:
                probe.mkdir(exist_ok=True)
            except OSError as exc:
                raise SandboxError(
                    f"cannot create cgroups under {base} ({exc.strerror}): the sandbox needs"
                    " a writable cgroup hierarchy (mount /sys/fs/cgroup read-write)"
                ) from exc
        log.info(
            "sandbox cgroups: processes in %s, pids limit in %s, memory limit in %s,"
            " namespaces' CPU weights in %s",
            plan.track,
            plan.pids,
            plan.memory or "(none: tasks with a memory limit fail)",
            plan.cpu or "(none: no cpu controller)",
        )
        return plan

    @staticmethod
    def _enable_v2_at(folder: Path, controllers: tuple[str, ...]) -> None:
        if controllers:
            write_file(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in controllers))

    def _enable_v2(self, plan: CgroupPlan, *names: str) -> None:
        if not plan.v2_enable:
            return
        folder = plan.track
        for name in names:
            folder = folder / name
            self._enable_v2_at(folder, plan.v2_enable)

    def _bases(self) -> list[Path]:
        assert self.plan is not None
        plan = self.plan
        bases = [plan.track, plan.pids, plan.memory, plan.freezer, plan.cpu]
        return list(dict.fromkeys(b for b in bases if b is not None))

    def _trial(self) -> None:
        """One sandboxed `true`, so that a kernel or container that forbids a step fails the
        worker's start, not every attempt."""
        slot = self.acquire("trial", memory=None)
        try:
            argv = launch(
                self.config,
                uid=slot.uid,
                worker_pid=os.getpid(),
                cgroup_procs=slot.cgroup.procs_files(),
                command=["true"],
            )
            # No timeout: its polling sleeps fail under libfaketime (tests/acceptance/
            # test_downtime.py runs workers so); a blocking wait does not.
            result = subprocess.run(argv, capture_output=True, text=True, env={})
        finally:
            slot.close()
        if result.returncode != 0:
            raise SandboxError(
                f"a sandboxed `true` failed ({result.returncode}): {result.stderr.strip()}. The"
                " sandbox needs PID, mount, IPC, UTS and network namespaces (unshare) and"
                " root's CAP_SYS_ADMIN, CAP_SETUID and CAP_SETGID"
            )

    def stop(self) -> None:
        """Removes this worker's (empty) cgroup folders and lets its key go."""
        for base in self._bases():
            folder = base / self.config.cgroup_name / f"w-{self.key}"
            with contextlib.suppress(OSError):
                for child in folder.iterdir():
                    remove_if_empty(child)
            with contextlib.suppress(OSError):
                folder.rmdir()
        if self._worker_lock is not None:
            with contextlib.suppress(OSError):
                (self.config.run_dir / "workers" / self.key).unlink()
            os.close(self._worker_lock)
            self._worker_lock = None

    # -- stale cgroups -----------------------------------------------------------------------

    def end_stale(self) -> list[str]:
        """Ends what workers that died on this host left (dead_workers.py); a line per attempt
        cgroup that still had processes."""
        assert self.plan is not None
        return end_dead_workers(self.config, self.plan, bases=self._bases(), own_key=self.key)

    # -- attempts ----------------------------------------------------------------------------

    def acquire(self, name: str, *, memory: int | None, namespace: str = "") -> Slot:
        """A free uid and a fresh cgroup with the limits set, for the attempt `name` of
        `namespace`."""
        assert self.plan is not None, "start() first"
        if memory is not None and self.plan.memory is None:
            raise SandboxError(
                "the task has a memory limit, and this worker has no memory cgroup controller"
                " to enforce it"
            )
        uid, fd = self._take_uid()
        try:
            cgroup = self._cgroup(name, memory=memory, namespace=namespace)
        except BaseException:
            os.close(fd)
            raise
        return Slot(uid=uid, cgroup=cgroup, _uid_lock=fd)

    def _take_uid(self) -> tuple[int, int]:
        uids = self.config.uids
        folder = self.config.run_dir / "uids"
        # From a moving, randomly started position: a uid is seldom reused soon, so files an
        # attempt leaves in a shared world-writable place are seldom visible to the next one.
        for step in range(len(uids)):
            index = (self._next_uid + step) % len(uids)
            fd = flock(folder / str(uids[index]))
            if fd is not None:
                self._next_uid = index + 1
                return uids[index], fd
        raise SandboxError(f"all {len(uids)} sandbox uids are in use on this host")

    def _cgroup(self, name: str, *, memory: int | None, namespace: str) -> AttemptCgroup:
        assert self.plan is not None
        plan = self.plan
        folders: dict[Path, Path] = {}
        # A memory cgroup only when there is a limit to hold: each folder costs a mkdir and an
        # rmdir per attempt, and v1 memory cgroups are slow to remove.
        wanted = [plan.track, plan.pids, plan.freezer, plan.cpu, plan.memory if memory else None]
        bases = list(dict.fromkeys(b for b in wanted if b is not None))
        relative = attempt_cgroup(
            cgroup_name=self.config.cgroup_name,
            worker_key=self.key,
            namespace=namespace,
            attempt=name,
        )
        try:
            for base in bases:
                folders[base] = self._attempt_folder(base, base / relative)
        except BaseException:
            AttemptCgroup(plan, folders).remove()
            raise
        cgroup = AttemptCgroup(plan, folders)
        try:
            pids = folders[plan.pids]
            write_file(pids / "pids.max", str(self.config.pids_max))
            if memory is not None and plan.memory is not None:
                folder = folders[plan.memory]
                if (folder / "memory.max").exists():  # v2
                    write_file(folder / "memory.max", str(memory))
                    with contextlib.suppress(OSError):
                        write_file(folder / "memory.swap.max", "0")
                else:
                    write_file(folder / "memory.limit_in_bytes", str(memory))
                    with contextlib.suppress(OSError):
                        write_file(folder / "memory.memsw.limit_in_bytes", str(memory))
        except OSError as exc:
            cgroup.remove()
            if exc.errno in (errno.EINVAL, errno.EBUSY):
                raise SandboxError(f"cannot set the attempt's cgroup limits: {exc}") from exc
            raise
        return cgroup

    def _attempt_folder(self, base: Path, folder: Path) -> Path:
        """Makes the attempt's folder in one hierarchy, under its namespace's folder, which it
        creates (with the CPU weight, and the v2 controllers for its children) if it is not
        there. Another attempt of the namespace ending meanwhile may remove that folder: then
        it starts again."""
        assert self.plan is not None
        plan = self.plan
        namespace = folder.parent
        for _ in range(10):
            try:
                namespace.mkdir(exist_ok=True)
                if base == plan.track and plan.v2_enable:
                    self._enable_v2_at(namespace, plan.v2_enable)
                if base == plan.cpu and plan.cpu_weight is not None:
                    weight_file, weight = plan.cpu_weight
                    write_file(namespace / weight_file, weight)
                folder.mkdir()
                return folder
            except FileExistsError:
                AttemptCgroup(plan, {base: folder}).remove()
            except FileNotFoundError:
                continue
        raise SandboxError(f"cannot create the attempt cgroup {folder}: its parent keeps going")
