"""The attempt sandbox of the local executor, as plain decisions: what to launch, with which
environment, in which cgroups. No I/O here; `host.py` holds the parts that touch the machine.

A job is untrusted code. Each attempt runs:
- as its own unprivileged uid and gid, taken from a pool so that two attempts on one host never
  share one, with no supplementary groups, no capabilities (bounding set cleared) and
  no_new_privs, so no setuid binary can give any back;
- in its own PID namespace with a private /proc, so it sees no other process (not the worker's
  environment with the database URL, not another attempt's secret_env), and the kernel ends
  every process in it, `setsid` ones included, when its first process (the init) dies;
- in its own mount, IPC and UTS namespaces, with private tmpfs on /tmp and /dev/shm (and /run,
  where host services keep their sockets, unless the network is shared);
- by default in its own network namespace with only loopback: etcd and PostgreSQL on the
  worker's host may accept anyone who can connect;
- in its own cgroup, with a pids limit and the task's memory limit, so that it can be counted
  and ended as a whole. That cgroup sits in a parent per namespace whose CPU weight is the
  same for every namespace: a namespace running many attempts gets, when the CPU is scarce,
  the share of one running few (`attempt_cgroup`).

The launch is a chain of util-linux tools, each exec'ing the next:

    setpriv --pdeathsig KILL      dies with the worker (the parent-death signal)
    sh JOIN                       writes its pid into the attempt's cgroups, checks its parent
    unshare --fork --pid ...      new namespaces; --kill-child: its child dies with it
      sh INIT                     PID 1 of the namespace, still root inside it: mounts, then
        setpriv --reuid ...       drops to the attempt's uid, no capabilities, no_new_privs
          env --chdir DIR CMD...  the job, in its working directory

INIT runs the job as its child, not by exec: PID 1 ignores every signal it has no handler for,
so a job that is PID 1 would shrug off the SIGTERM of a timeout. INIT exits with the job's
status, and the namespace goes with it. (A status above 128 therefore stands for a signal.)
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePath
from typing import Literal

# The worker's variables an attempt inherits; nothing else leaks in (the worker's may hold
# database credentials). HOME, USER and TMPDIR are the worker's, not the attempt's: a sandboxed
# attempt gets HOME=/tmp (its private tmpfs) instead.
SANDBOX_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ")
# Where an uploaded binary appears inside the sandbox: bind-mounted read-only from the worker's
# cache, whose folder the attempt's uid cannot enter.
BINARY_PATH = "/tmp/.hourglass/binary"
# The cgroup controllers the sandbox uses, and one it can use to freeze a tree in cgroup v1.
CONTROLLERS = ("pids", "memory", "cpu", "freezer")

Network = Literal["private", "host"]


class SandboxError(Exception):
    """The sandbox cannot run here; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    # The uids (and gids of the same number) attempts run as; each attempt holds one alone.
    uids: range = range(200000, 265536)
    # "private": only loopback; "host": the host's network (weaker: jobs reach every service
    # the worker's host reaches, such as an etcd or PostgreSQL without authentication).
    network: Network = "private"
    # Root-only folder for the locks of the uid pool and of live workers.
    run_dir: Path = Path("/run/hourglass")
    # Most processes (and threads) one attempt may have at once.
    pids_max: int = 4096
    # Size of each private tmpfs (/tmp, /dev/shm); counted against the memory limit.
    tmp_size: str = "256m"
    # Name of the cgroup folder that holds the workers' and attempts' cgroups.
    cgroup_name: str = "hourglass"

    def __post_init__(self) -> None:
        if not self.uids or self.uids.start < 1000:
            raise ValueError("sandbox uids must be a non-empty range of uids from 1000 up")
        if self.pids_max < 2:
            raise ValueError("sandbox pids_max must be at least 2")
        if not re.fullmatch(r"\d+[kmg]?", self.tmp_size):
            raise ValueError(f"sandbox tmp_size {self.tmp_size!r} is not a size like 64m")


def parse_uid_range(text: str) -> range:
    """'200000-265535' (inclusive) as a range; ValueError naming the problem otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a uid range FIRST-LAST, e.g. 200000-265535")
    first, last = int(match[1]), int(match[2])
    if last < first:
        raise ValueError(f"uid range {text!r} ends before it starts")
    if first < 1000:
        raise ValueError(f"uid range {text!r} starts below 1000, among system users")
    return range(first, last + 1)


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", re.ASCII)
_FACTORS = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def memory_bytes(quantity: str) -> int | None:
    """A Kubernetes memory quantity ("256Mi", "1G", "1.5Gi") in bytes, rounded up; None when
    unset. The API has validated the form; a bad one still raises ValueError here."""
    if not quantity:
        return None
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    try:
        value = Decimal(match[1]) * _FACTORS.get(match[2] or "", Decimal(1))
    except InvalidOperation as exc:
        raise ValueError(f"{quantity!r} is not a memory quantity") from exc
    result = int(value.to_integral_value(rounding="ROUND_CEILING"))
    if result < 1:
        raise ValueError(f"memory limit {quantity!r} is below one byte")
    return result


def attempt_environment(
    worker_env: Mapping[str, str],
    *,
    task_env: Mapping[str, str],
    secret_env: Mapping[str, str],
    attempt_env: Mapping[str, str],
) -> dict[str, str]:
    """The whole environment of a sandboxed attempt: a few harmless variables of the worker,
    HOME=/tmp, then the task's env and secret_env, then the HOURGLASS_* variables, which a job
    cannot override."""
    env = {name: worker_env[name] for name in SANDBOX_INHERITED if name in worker_env}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = "/tmp"
    env.update(task_env)
    env.update(secret_env)
    env.update(attempt_env)
    return env


def signal_of(status: int) -> int | None:
    """The signal that ended a job, from the sandbox's exit status (the init reports a signal
    N as 128 + N, the way a shell does); None for an ordinary exit."""
    if 128 < status <= 128 + 64:
        return status - 128
    return None


_JOIN = 'echo $$ >"$1" && shift && '


def _init_script(config: SandboxConfig, *, uid: int, binary: bool) -> str:
    """PID 1 of the namespace. Positional parameters: the working directory, the binary's
    path on the host (only with `binary`), then the command."""
    tmpfs = f"nosuid,nodev,size={config.tmp_size}"
    lines = ["set -e"]
    if binary:
        # Opened before /tmp is hidden: the cache may lie under the host's /tmp.
        lines.append('exec 4<"$2"')
    lines += [
        f"mount -t tmpfs -o {tmpfs},mode=1777 hourglass-tmp /tmp",
        f"mount -t tmpfs -o {tmpfs},mode=1777 hourglass-shm /dev/shm",
    ]
    if config.network == "private":
        # Host services keep their Unix sockets in /run (PostgreSQL's among them); a network
        # namespace does not hide a socket file, so /run goes too.
        lines.append("mount -t tmpfs -o nosuid,nodev,noexec,size=1m,mode=755 hourglass-run /run")
        lines.append("if command -v ip >/dev/null 2>&1; then ip link set lo up; fi")
    lines.append("dir=$1; shift")
    if binary:
        lines += [
            "mkdir -m 755 /tmp/.hourglass",
            f": > {BINARY_PATH}",
            f"mount --bind /proc/self/fd/4 {BINARY_PATH}",
            f"mount -o remount,bind,ro,nosuid,nodev {BINARY_PATH}",
            "exec 4<&-",
            "shift",
        ]
    lines += [
        # From here on the init's own messages ("Terminated" when the job is killed) are
        # silenced; the job writes to the output through fd 3.
        "set +e",
        "exec 3>&2 2>/dev/null",
        # Not `exec`: PID 1 must stay an init that reaps orphans and exits with the job. A
        # subshell, so that the job's redirections never become the init's (dash applies a
        # simple command's redirections in the shell itself while it waits).
        f"(exec setpriv --reuid {uid} --regid {uid} --clear-groups --no-new-privs"
        ' --bounding-set -all --inh-caps -all -- env --chdir="$dir" -- "$@" 2>&3 3>&-)',
        "exit $?",
    ]
    return "\n".join(lines)


def launch(
    config: SandboxConfig,
    *,
    uid: int,
    worker_pid: int,
    cgroup_procs: Sequence[Path],
    command: Sequence[str],
    working_dir: str = "",
    binary: Path | None = None,
) -> list[str]:
    """The argv that runs `command` sandboxed as `uid`, placed in the cgroups whose
    `cgroup.procs` files are given. With `binary`, command[0] is replaced by the binary as
    mounted inside the sandbox. The job's own strings (command, working_dir) travel as
    positional parameters, never inside a script."""
    if not command:
        raise ValueError("the command is empty")
    if uid not in config.uids:
        raise ValueError(f"uid {uid} is outside the sandbox's range")
    join = "".join(_JOIN for _ in cgroup_procs)
    # A worker that died before setpriv armed the parent-death signal would leave this
    # process an orphan: it checks its parent is still the worker before going on.
    script = f'{join}[ "$PPID" = {int(worker_pid)} ] || exit 125; exec "$@"'
    namespaces = ["--pid", "--mount-proc", "--ipc", "--uts"]
    if config.network == "private":
        namespaces.append("--net")
    positional = [working_dir or "/tmp"]
    if binary is not None:
        positional.append(str(binary))
        command = [BINARY_PATH, *command[1:]]
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        "sh",
        "-c",
        script,
        "hourglass-join",
        *(str(path) for path in cgroup_procs),
        "unshare",
        "--fork",
        *namespaces,
        "--propagation",
        "private",
        "--kill-child=KILL",
        "--",
        "sh",
        "-c",
        _init_script(config, uid=uid, binary=binary is not None),
        "hourglass-init",
        *positional,
        *command,
    ]


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where this process sits in each cgroup hierarchy: the unified (v2) one, and the v1
    hierarchy of each controller the sandbox uses."""

    v2: Path | None = None
    v1: dict[str, Path] = field(default_factory=dict)


def cgroup_layout(mounts: str, own: str) -> CgroupLayout:
    """Reads /proc/self/mounts and /proc/self/cgroup. A host may have a unified mount, v1
    hierarchies, or both (a hybrid, such as one with controllers in v1 and an empty v2 at
    /sys/fs/cgroup/unified)."""
    v2_mounts: list[Path] = []
    v1_mounts: list[tuple[set[str], Path]] = []
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point = Path(parts[1].replace("\\040", " "))
        if parts[2] == "cgroup2":
            v2_mounts.append(point)
        elif parts[2] == "cgroup":
            v1_mounts.append((set(parts[3].split(",")), point))
    layout = CgroupLayout()
    for line in own.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        relative = path.lstrip("/")
        if hierarchy == "0" and not controllers:
            if v2_mounts:
                layout = CgroupLayout(v2=v2_mounts[0] / relative, v1=layout.v1)
            continue
        names = set(controllers.split(",")) - {""}
        for options, point in v1_mounts:
            if names and names <= options:
                for name in names & set(CONTROLLERS):
                    layout.v1.setdefault(name, point / relative)
    return layout


@dataclass(frozen=True, slots=True)
class CgroupPlan:
    """Which hierarchy does what: `track` holds every attempt (its processes are listed and
    ended from there); the others hold the limits. `v2_enable` are the controllers to switch
    on in the v2 subtree. `cpu` holds the namespaces' CPU weights, written to the file
    `cpu_weight` names with the value it gives."""

    track: Path
    pids: Path
    memory: Path | None
    freezer: Path | None
    v2_enable: tuple[str, ...] = ()
    cpu: Path | None = None
    cpu_weight: tuple[str, str] | None = None


# The CPU weight of every namespace's parent cgroup: one value for all, the kernel's default
# (v1 cpu.shares 1024, v2 cpu.weight 100), written explicitly so that nothing else set on the
# host changes it. What makes the shares fair is the level itself: the CPU is divided among
# namespaces first, and only then among a namespace's attempts.
CPU_SHARES_V1 = ("cpu.shares", "1024")
CPU_WEIGHT_V2 = ("cpu.weight", "100")


def namespace_cgroup(namespace: str) -> str:
    """The folder name of a namespace's parent cgroup. A hash, not the name: a namespace is a
    tenant's text (any length, any character, `..` included), a cgroup name a path part."""
    return "ns-" + hashlib.sha256(namespace.encode()).hexdigest()[:16]


def attempt_cgroup(*, cgroup_name: str, worker_key: str, namespace: str, attempt: str) -> PurePath:
    """Where an attempt's cgroup lies under each hierarchy's base:
    `<cgroup_name>/w-<worker key>/ns-<hash of namespace>/<attempt>`. The same path in every
    hierarchy the plan uses, so that a dead worker's attempts are found the same way in each."""
    return PurePath(cgroup_name, f"w-{worker_key}", namespace_cgroup(namespace), attempt)


def cgroup_plan(layout: CgroupLayout, *, v2_controllers: set[str]) -> CgroupPlan:
    """Prefers v2 (it can end a whole tree with one write, cgroup.kill); takes each limit from
    v2 when the controller is delegated there, else from v1. Without a cpu controller the
    namespaces share the CPU as their processes do (no weights). Without any pids controller the
    sandbox refuses to run: an attempt could fork without bound."""
    v2 = layout.v2
    track = v2 if v2 is not None else layout.v1.get("pids")
    if track is None:
        raise SandboxError(
            "no cgroup hierarchy found for attempts: mount cgroup2 (or the v1 pids controller)"
            " under /sys/fs/cgroup"
        )
    enable = tuple(c for c in ("pids", "memory", "cpu") if v2 is not None and c in v2_controllers)
    pids = v2 if "pids" in enable else layout.v1.get("pids")
    if pids is None:
        raise SandboxError(
            "the pids cgroup controller is not available (neither delegated in cgroup v2 nor"
            " mounted as v1): the sandbox cannot bound an attempt's processes"
        )
    memory = v2 if "memory" in enable else layout.v1.get("memory")
    freezer = None if v2 is not None else layout.v1.get("freezer")
    cpu, weight = (v2, CPU_WEIGHT_V2) if "cpu" in enable else (layout.v1.get("cpu"), CPU_SHARES_V1)
    return CgroupPlan(
        track=track,
        pids=pids,
        memory=memory,
        freezer=freezer,
        v2_enable=enable,
        cpu=cpu,
        cpu_weight=weight if cpu is not None else None,
    )


def describe(argv: Sequence[str]) -> str:
    """The launch as one shell-quoted line, for debug logs."""
    return shlex.join(argv)
