"""The attempt sandbox's decisions, without running anything: the launch argv, the attempt's
environment, the cgroup layout and which hierarchy does what."""

from __future__ import annotations

from pathlib import Path

import pytest

from hourglass.workers.executors.sandbox import (
    BINARY_PATH,
    CgroupLayout,
    SandboxConfig,
    SandboxError,
    attempt_cgroup,
    attempt_environment,
    cgroup_layout,
    cgroup_plan,
    launch,
    memory_bytes,
    namespace_cgroup,
    parse_uid_range,
    signal_of,
)

PROCS = [Path("/sys/fs/cgroup/x/cgroup.procs"), Path("/sys/fs/cgroup/pids/x/cgroup.procs")]


def plan(config: SandboxConfig | None = None, **kwargs: object) -> list[str]:
    arguments: dict[str, object] = {
        "uid": 200001,
        "worker_pid": 4242,
        "cgroup_procs": PROCS,
        "command": ["sh", "-c", "echo $SECRET"],
    }
    arguments.update(kwargs)
    return launch(config or SandboxConfig(), **arguments)  # type: ignore[arg-type]


def script_of(argv: list[str], marker: str) -> str:
    """The script of the `sh -c SCRIPT NAME` whose NAME is `marker`."""
    return argv[argv.index(marker) - 1]


def test_the_launch_dies_with_the_worker_and_joins_the_cgroups_first() -> None:
    argv = plan()
    assert argv[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
    join = script_of(argv, "hourglass-join")
    assert join.count('echo $$ >"$1"') == len(PROCS)
    # An orphan (its worker died before the death signal was armed) goes no further.
    assert '[ "$PPID" = 4242 ] || exit 125' in join
    after = argv[argv.index("hourglass-join") + 1 :]
    assert after[: len(PROCS)] == [str(p) for p in PROCS]
    assert after[len(PROCS)] == "unshare"


def test_each_attempt_gets_its_namespaces_and_the_init_kills_its_tree_on_exit() -> None:
    argv = plan()
    unshare = argv[argv.index("unshare") : argv.index("hourglass-init")]
    for option in ("--fork", "--pid", "--mount-proc", "--ipc", "--uts", "--net"):
        assert option in unshare
    assert "--kill-child=KILL" in unshare
    init = script_of(argv, "hourglass-init")
    assert "/tmp" in init and "/dev/shm" in init and " /run" in init
    assert "ip link set lo up" in init
    # The job runs as a child of the init, which exits with its status.
    assert "(exec setpriv --reuid 200001 --regid 200001 --clear-groups --no-new-privs" in init
    assert "--bounding-set -all --inh-caps -all" in init
    assert init.rstrip().endswith("exit $?")


def test_a_shared_network_keeps_the_host_network_and_its_run_folder() -> None:
    argv = plan(SandboxConfig(network="host"))
    assert "--net" not in argv
    init = script_of(argv, "hourglass-init")
    assert " /run" not in init and "ip link" not in init


def test_the_jobs_strings_never_enter_a_script() -> None:
    hostile = ["sh", "-c", "'; rm -rf / #", "$(reboot)"]
    argv = plan(command=hostile, working_dir="/srv/$(id)")
    for script in (script_of(argv, "hourglass-join"), script_of(argv, "hourglass-init")):
        assert "reboot" not in script and "rm -rf" not in script and "$(id)" not in script
    assert argv[argv.index("hourglass-init") + 1 :] == ["/srv/$(id)", *hostile]


def test_a_job_without_working_dir_starts_in_its_private_tmp() -> None:
    argv = plan(command=["true"])
    assert argv[argv.index("hourglass-init") + 1 :] == ["/tmp", "true"]


def test_a_binary_is_mounted_read_only_in_place_of_the_command() -> None:
    cached = Path("/var/cache/hourglass/bin/sha256-ab")
    argv = plan(command=[str(cached), "x"], binary=cached)
    assert argv[argv.index("hourglass-init") + 1 :] == ["/tmp", str(cached), BINARY_PATH, "x"]
    init = script_of(argv, "hourglass-init")
    assert 'exec 4<"$2"' in init.splitlines()[1]  # before /tmp is hidden
    assert f"mount --bind /proc/self/fd/4 {BINARY_PATH}" in init
    assert f"remount,bind,ro,nosuid,nodev {BINARY_PATH}" in init


def test_a_uid_outside_the_pool_or_an_empty_command_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        plan(uid=0)
    with pytest.raises(ValueError, match="empty"):
        plan(command=[])


def test_the_environment_holds_no_worker_secret_and_hourglass_variables_win() -> None:
    worker = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "USER": "root",
        "HOURGLASS_DATABASE_URL": "postgresql://admin:pw@db/hourglass",
        "HOURGLASS_ETCD_ENDPOINTS": "http://etcd:2379",
        "AWS_SECRET_ACCESS_KEY": "k",
        "LANG": "C.UTF-8",
    }
    env = attempt_environment(
        worker,
        task_env={"A": "1", "HOURGLASS_RUN_ID": "forged"},
        secret_env={"TOKEN": "t"},
        attempt_env={"HOURGLASS_RUN_ID": "r1"},
    )
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "A": "1",
        "TOKEN": "t",
        "HOURGLASS_RUN_ID": "r1",
    }
    assert "PATH" in attempt_environment({}, task_env={}, secret_env={}, attempt_env={})


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("", None),
        ("256Mi", 256 * 2**20),
        ("1G", 10**9),
        ("1.5Gi", 3 * 2**29),
        ("1000", 1000),
        ("1500m", 2),  # milli-bytes round up
    ],
)
def test_memory_quantities(quantity: str, expected: int | None) -> None:
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize("quantity", ["lots", "1X", "-5Mi", "0"])
def test_bad_memory_quantities(quantity: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        memory_bytes(quantity)


def test_uid_ranges() -> None:
    assert parse_uid_range("200000-265535") == range(200000, 265536)
    for bad, why in [("200000", "FIRST-LAST"), ("9-5", "ends before"), ("0-70000", "below")]:
        with pytest.raises(ValueError, match=why):
            parse_uid_range(bad)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="uids"):
        SandboxConfig(uids=range(0, 10))
    with pytest.raises(ValueError, match="pids_max"):
        SandboxConfig(pids_max=1)
    with pytest.raises(ValueError, match="tmp_size"):
        SandboxConfig(tmp_size="lots; reboot")


def test_exit_statuses_above_128_are_signals() -> None:
    assert signal_of(137) == 9 and signal_of(143) == 15
    assert signal_of(0) is None and signal_of(1) is None and signal_of(128) is None
    assert signal_of(255) is None


# This machine: controllers in v1, an empty v2 mounted at /sys/fs/cgroup/unified.
HYBRID_MOUNTS = """\
proc /proc proc rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
HYBRID_OWN = """\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/2fe6
1:cpu:/
0::/
"""


def test_a_hybrid_host_tracks_in_v2_and_limits_in_v1() -> None:
    layout = cgroup_layout(HYBRID_MOUNTS, HYBRID_OWN)
    assert layout.v2 == Path("/sys/fs/cgroup/unified")
    assert layout.v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu"),
        "memory": Path("/sys/fs/cgroup/memory/process_api/2fe6"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }
    chosen = cgroup_plan(layout, v2_controllers=set())
    assert chosen.track == Path("/sys/fs/cgroup/unified")
    assert chosen.pids == Path("/sys/fs/cgroup/pids")
    assert chosen.memory == Path("/sys/fs/cgroup/memory/process_api/2fe6")
    assert chosen.freezer is None  # cgroup.kill in v2 ends a tree
    assert chosen.v2_enable == ()
    # The namespaces' CPU weights go to the v1 cpu controller.
    assert chosen.cpu == Path("/sys/fs/cgroup/cpu")
    assert chosen.cpu_weight == ("cpu.shares", "1024")


def test_each_attempt_cgroup_sits_in_its_namespaces_parent() -> None:
    path = attempt_cgroup(cgroup_name="hourglass", worker_key="7-ab", namespace="x", attempt="r-1")
    assert path.parts[:2] == ("hourglass", "w-7-ab") and path.name == "r-1"
    assert path.parent.name == namespace_cgroup("x")
    # One parent per namespace, the same in every worker; a fixed-size name whatever the
    # tenant chose, never a path of its own.
    assert namespace_cgroup("x") == namespace_cgroup("x") != namespace_cgroup("y")
    for hostile in ("../../..", "a/b", "", "x" * 300, "ns-\n"):
        name = namespace_cgroup(hostile)
        assert len(name) == 19 and name.startswith("ns-") and name[3:].isalnum()
    other = attempt_cgroup(cgroup_name="hourglass", worker_key="7-ab", namespace="x", attempt="r-2")
    assert other.parent == path.parent


def test_a_unified_host_does_everything_in_v2() -> None:
    layout = cgroup_layout(
        "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n",
        "0::/system.slice/hourglass-worker.service\n",
    )
    assert layout == CgroupLayout(v2=Path("/sys/fs/cgroup/system.slice/hourglass-worker.service"))
    chosen = cgroup_plan(layout, v2_controllers={"cpu", "memory", "pids", "io"})
    assert chosen.track == chosen.pids == chosen.memory == chosen.cpu == layout.v2
    assert chosen.v2_enable == ("pids", "memory", "cpu")
    assert chosen.cpu_weight == ("cpu.weight", "100")
    # Without a delegated cpu controller: no weights, the sandbox still runs.
    bare = cgroup_plan(layout, v2_controllers={"memory", "pids"})
    assert bare.cpu is None and bare.cpu_weight is None


def test_a_v1_only_host_tracks_in_pids_and_freezes_to_kill() -> None:
    mounts = "\n".join(line for line in HYBRID_MOUNTS.splitlines() if "cgroup2" not in line)
    chosen = cgroup_plan(cgroup_layout(mounts, HYBRID_OWN), v2_controllers=set())
    assert chosen.track == chosen.pids == Path("/sys/fs/cgroup/pids")
    assert chosen.freezer == Path("/sys/fs/cgroup/freezer")


def test_without_a_pids_controller_the_sandbox_refuses() -> None:
    layout = cgroup_layout("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/\n")
    with pytest.raises(SandboxError, match="pids"):
        cgroup_plan(layout, v2_controllers={"memory"})
    with pytest.raises(SandboxError, match="no cgroup hierarchy"):
        cgroup_plan(CgroupLayout(), v2_controllers=set())
