"""Every command block of README.md, run: so that none can drift from what hourglass does.

The blocks are found and classified by tests/readme_blocks.py (an HTML comment marker before
each block; an unmarked block fails). Nothing here names a block's text: a block the README
gains is run as it stands.

`dev` blocks run in README order, in one real bash (tests/acceptance/readme_shell.py) whose
environment carries over from command to command, in a fresh folder with `.venv` linked to
this venv, against one real `hourglass dev` started with the arguments the README gives it.
Each command must exit 0 and print what its comment claims ("prints ..."); an `output` block
is the shape its command must print, and that command is repeated until it does (a run has
to happen first). Files a command names as `./name` are created as small scripts.

The test bed differs from a user's machine only where it must. The substitution table:
- `127.0.0.1:50051` (dev's default address): the free port the fixture's dev serves on; the
  shell also gets HOURGLASS_SERVER set to it, as a user whose dev serves elsewhere would.
- `127.0.0.1:50061`, `127.0.0.1:50062` (the first case's ports, API port + 10 and + 11): the
  ports that dev printed for it.
- `0.0.0.0:50051` (`hourglass api --listen`): a free loopback port.
- `postgresql://hourglass@db/hourglass`, `<database url>`: dev's database; `etcd:2379`: dev's
  etcd.
- `<job id>`, `<job>`: the job the last `hourglass schedule` printed; `<run>`: the run the
  last `hourglass trigger` printed; `<token id>`: the id `hourglass token create` reported,
  and `$TOKEN` the token it printed. `[-f]`: the optional flag is given.

How each kind of command is run:
- `make TARGET`: `make -n TARGET` must succeed, and show any `hourglass ...` command its
  comment quotes in backticks; nothing is built.
- `hourglass dev ...`: the fixture is already that process; its arguments must be among the
  fixture's, and what the comment says it prints must be in its log.
- `hourglass api|producer|worker|claimer ...`: a server, pointed at dev's database and etcd:
  it must come up (print `hourglass NAME serving|running`) and stop cleanly on SIGTERM.
- `hourglass watch ...`: a stream: its first line must name the job while it keeps running.
- anything else: runs to its end and exits 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hourglass.cli.dev_cases import PORT_OFFSET
from hourglass.embedded import free_port
from tests import readme_blocks
from tests.acceptance.conftest import Processes
from tests.acceptance.readme_shell import READY, Result, Shell
from tests.k8s import conftest as k8s
from tests.k8s.conftest import KubeApiServer, _missing, find_tool, tools_cache_dir

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DEV_DEFAULT_PORT = 50051
SERVERS = re.compile(r"^hourglass (api|producer|worker|claimer)\b")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CASE_PORTS = re.compile(r"^\s+\w+: gRPC (\S+), HTTP http://(\S+)", re.MULTILINE)
SAMPLE_DEADLINE = 30.0
# The Kubernetes test bed's fixtures, for this module (tests/k8s/conftest.py is not ours).
k8s_tools = k8s.k8s_tools
kube_apiserver = k8s.kube_apiserver


def _blocks() -> list[readme_blocks.Block]:
    return readme_blocks.blocks(README.read_text())


def _of(kind: str) -> list[readme_blocks.Block]:
    return [block for block in _blocks() if block.kind == kind]


def _dev_args() -> list[str]:
    """The arguments the README gives `hourglass dev`, all of them, for the one fixture."""
    args: list[str] = []
    for block in _of("dev"):
        for command in readme_blocks.commands(block):
            words = shlex.split(command.text)
            if words[:2] == ["hourglass", "dev"]:
                args += [word for word in words[2:] if word not in args]
    return args


@dataclass
class Dev:
    procs: Processes
    args: list[str]
    address: str
    database: str
    etcd: str
    case_ports: list[tuple[str, str]]


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    """One `hourglass dev`, with the README's arguments, on a free port and a temporary
    data folder."""
    # Not under pytest's temporary tree: another pytest session on this machine resets that
    # tree's modes, which PostgreSQL (running as another user) would trip over.
    folder = Path(tempfile.mkdtemp(prefix="hourglass-readme-"))
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    procs = Processes(logs=folder, env=env)
    args = _dev_args()
    procs.start("dev", "dev", *args, "--data-dir", str(folder / "data"), "--listen", address)
    procs.wait_for_log("dev", "stop:     Ctrl-C", 90)
    log = procs.log("dev")
    database = re.search(r"^\s+database: (\S+)", log, re.MULTILINE)
    etcd = re.search(r"^\s+etcd:\s+(\S+)", log, re.MULTILINE)
    assert database and etcd, log
    yield Dev(procs, args, address, database[1], etcd[1], CASE_PORTS.findall(log))
    procs.stop_all()
    assert procs.running["dev"].returncode == 0, procs.log("dev")
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Session:
    """The state of one run through the README: the shell, the table's values, what ran."""

    dev: Dev
    shell: Shell
    literals: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def fill(self, command: readme_blocks.Command, block: readme_blocks.Block) -> str:
        try:
            return readme_blocks.substitute(
                command.text, literals=self.literals, values=self.values
            )
        except KeyError as error:
            pytest.fail(f"{block.where()}, line {command.line}: {error.args[0]}", pytrace=False)


def _literals(dev: Dev) -> dict[str, str]:
    literals = {
        f"127.0.0.1:{DEV_DEFAULT_PORT}": dev.address,
        f"0.0.0.0:{DEV_DEFAULT_PORT}": f"127.0.0.1:{free_port()}",
        "postgresql://hourglass@db/hourglass": shlex.quote(dev.database),
        "etcd:2379": dev.etcd,
    }
    for index, (grpc_address, http_address) in enumerate(dev.case_ports):
        base = DEV_DEFAULT_PORT + PORT_OFFSET + 2 * index
        literals[f"127.0.0.1:{base}"] = grpc_address
        literals[f"127.0.0.1:{base + 1}"] = http_address
    return literals


def _user_env(extra_path: list[Path]) -> dict[str, str]:
    """The environment of a fresh terminal: no HOURGLASS_* settings, no venv on PATH (the
    README's `source .venv/bin/activate` puts it there)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOURGLASS_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([*path, *map(str, extra_path)])
    return env


def _workspace(folder: Path) -> Path:
    """A fresh folder with `.venv` linked to the venv running these tests."""
    if not (Path(sys.prefix) / "bin" / "activate").exists():
        pytest.fail("run the tests from the project's venv (`make install`)", pytrace=False)
    folder.mkdir()
    (folder / ".venv").symlink_to(sys.prefix)
    return folder


def _create_named_files(command: str, folder: Path) -> None:
    """`./name` in a command that does not exist yet becomes a small script."""
    for name in re.findall(r"(?<![\w/.])\./([\w.-]+)", command):
        path = folder / name
        if not path.exists():
            path.write_text(f'#!/bin/sh\necho "{name} ran: $*"\n')
            path.chmod(0o755)


def _check(result: Result, block: readme_blocks.Block, expected: int = 0) -> None:
    if result.status != expected:
        pytest.fail(
            f"{block.where()}: expected exit {expected}\n{result.describe()}", pytrace=False
        )


def _check_claim(
    command: readme_blocks.Command, block: readme_blocks.Block, output: str, result: Result
) -> None:
    try:
        claimed = readme_blocks.claim(command.comment)
    except ValueError as error:
        pytest.fail(f"{block.where()}: {error}", pytrace=False)
    if claimed is not None and not claimed.pattern.search(output):
        pytest.fail(
            f"{block.where()}: the comment says `{claimed.says}`, which "
            f"/{claimed.pattern.pattern}/ does not find\n{result.describe()}",
            pytrace=False,
        )


def _capture(session: Session, text: str, result: Result) -> None:
    """The values later placeholders take from this command's output."""
    if text.startswith("hourglass schedule "):
        session.values["job id"] = session.values["job"] = result.stdout.strip()
    elif text.startswith("hourglass trigger "):
        session.values["run"] = result.stdout.strip()
    elif text.startswith("hourglass token create "):
        session.shell.env["TOKEN"] = result.stdout.strip()
        if (token_id := UUID.search(result.stderr)) is not None:
            session.values["token id"] = token_id[0]


def _run_make(command: readme_blocks.Command, text: str, block: readme_blocks.Block) -> None:
    target = shlex.split(text)[1:]
    dry = subprocess.run(
        ["make", "-n", "-C", str(REPO), *target], capture_output=True, text=True, timeout=60
    )
    result = Result(text, dry.returncode, dry.stdout, dry.stderr)
    _check(result, block)
    for quoted in re.findall(r"`(hourglass [^`]+)`", command.comment):
        assert quoted in dry.stdout, f"{block.where()}: `{text}` never runs `{quoted}`:\n{dry}"


def _run_dev_line(session: Session, command: readme_blocks.Command, text: str) -> Result:
    """`hourglass dev ...`: the fixture is that process; its log is what it printed."""
    args = shlex.split(text)[2:]
    unknown = [arg for arg in args if arg not in session.dev.args]
    assert not unknown, f"the fixture's dev lacks {unknown}: {session.dev.args}"
    log = session.dev.procs.log("dev")
    return Result(text, 0, log, "")


def run_command(
    session: Session,
    block: readme_blocks.Block,
    command: readme_blocks.Command,
    samples: dict[str, str],
) -> None:
    """One command of a dev block, run as its kind says, with its claims checked."""
    text = session.fill(command, block)
    session.ran.append(text)
    _create_named_files(text, session.shell.cwd)
    if text.startswith("make "):
        _run_make(command, text, block)
        return
    if text.startswith("grpcurl ") and find_tool("grpcurl") is None:
        _missing("no grpcurl binary in KUBEBUILDER_ASSETS or the k8s-tools cache")
    if text.startswith("hourglass dev"):
        result = _run_dev_line(session, command, text)
    elif SERVERS.match(text):
        result, stopped = session.shell.start_until(text, lambda out: bool(READY.search(out)))
        assert READY.search(result.stdout), f"{block.where()}: never came up\n{result.describe()}"
        assert stopped == 0, f"{block.where()}: no clean stop ({stopped})\n{result.describe()}"
    elif text.startswith("hourglass watch "):
        result, _ = session.shell.start_until(text, lambda out: "\n" in out, timeout=30)
        first = result.stdout.partition("\n")[0]
        assert result.status is None and first.split()[:2] == ["job", session.values["job"]], (
            f"{block.where()}: a watch streams, its first line naming the job\n" + result.describe()
        )
    else:
        sample = next((s for prefix, s in samples.items() if command.text.startswith(prefix)), "")
        result = _until_shaped(session, text, sample) if sample else session.shell.run(text)
        _check(result, block)
        if sample and (missing := readme_blocks.unmatched(sample, result.stdout)):
            pytest.fail(
                f"{block.where()}: `{text}` never printed the shape of the README's sample; "
                f"missing {missing}\n{result.describe()}",
                pytrace=False,
            )
    _check_claim(command, block, result.stdout, result)
    _capture(session, text, result)


def _until_shaped(session: Session, text: str, sample: str) -> Result:
    """Runs a read-only command until its output has the sample's shape (a run has to
    happen before a status shows one), or the deadline passes; the last result."""
    import time

    deadline = time.monotonic() + SAMPLE_DEADLINE
    while True:
        result = session.shell.run(text)
        if result.status != 0 or not readme_blocks.unmatched(sample, result.stdout):
            return result
        if time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_every_block_is_marked() -> None:
    found = _blocks()
    assert found, "README.md has no code blocks?"
    wrong = readme_blocks.problems(found)
    assert not wrong, "\n\n".join(wrong)
    for block in found:
        for command in readme_blocks.commands(block) if block.kind in ("dev", "k8s") else []:
            readme_blocks.claim(command.comment)  # a "prints" nobody checks raises


def test_every_output_sample_belongs_to_a_command_that_runs() -> None:
    dev_commands = [c.text for b in _of("dev") for c in readme_blocks.commands(b)]
    for block in _of("output"):
        assert any(text.startswith(block.argument) for text in dev_commands), (
            f"{block.where()}: it shows the output of `{block.argument}`, which no dev block runs"
        )


def test_dev_blocks_run_in_order_against_hourglass_dev(dev: Dev, tmp_path: Path) -> None:
    tools = tools_cache_dir()
    shell = Shell(
        folder=_workspace(tmp_path / "work"),
        env=_user_env([tools] if tools else []),
        state=tmp_path / "shell",
    )
    shell.env["HOURGLASS_SERVER"] = dev.address
    session = Session(dev=dev, shell=shell, literals=_literals(dev))
    session.values["database url"] = shlex.quote(dev.database)
    samples = {block.argument: block.text for block in _of("output")}
    for block in _of("dev"):
        for command in readme_blocks.commands(block):
            run_command(session, block, command, samples)
    assert session.ran, "no dev block ran"
    print(f"ran {len(session.ran)} README commands:\n" + "\n".join(session.ran))


def _shims(folder: Path) -> Path:
    """`kind`, `docker`, `helm`, `kubectl` scripts that hand over to readme_testbed."""
    folder.mkdir()
    for tool in ("kind", "docker", "helm", "kubectl"):
        shim = folder / tool
        shim.write_text(
            f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)}"
            f' -m tests.acceptance.readme_testbed {tool} "$@"\n'
        )
        shim.chmod(0o755)
    return folder


def test_kubernetes_blocks_run_against_the_test_bed(
    dev: Dev, kube_apiserver: KubeApiServer, k8s_tools: Path, tmp_path: Path
) -> None:
    """The k8s blocks in README order, except that a block installing the chart comes first
    (the others say "with the chart installed"). The default namespace of kubectl is a fresh
    one; HOURGLASS_SERVER stands for the port-forward (the CLI reaches dev)."""
    namespace = f"readme-{uuid.uuid4().hex[:8]}"
    kubeconfig = yaml.safe_load(kube_apiserver.kubeconfig.read_text())
    kubeconfig["contexts"][0]["context"]["namespace"] = namespace
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    (tmp_path / "kubeconfig").chmod(0o600)
    state = tmp_path / "testbed"
    state.mkdir()
    env = _user_env([])
    env["PATH"] = os.pathsep.join(
        [str(_shims(tmp_path / "bin")), str(Path(sys.prefix) / "bin"), env["PATH"]]
    )
    env.update(
        HOURGLASS_SERVER=dev.address,
        README_TESTBED_TOOLS=str(k8s_tools),
        README_TESTBED_KUBECONFIG=str(tmp_path / "kubeconfig"),
        README_TESTBED_STATE=str(state),
        README_TESTBED_DATABASE_URL=dev.database,
    )
    shell = Shell(folder=REPO, env=env, state=tmp_path / "shell")
    session = Session(dev=dev, shell=shell, literals=_literals(dev))
    created = shell.run(f"kubectl create namespace {namespace}")
    assert created.status == 0, created.describe()
    blocks = sorted(_of("k8s"), key=lambda block: "helm install" not in block.text)
    for block in blocks:
        for command in readme_blocks.commands(block):
            text = session.fill(command, block)
            session.ran.append(text)
            result = shell.run(text)
            _check(result, block)
            _check_claim(command, block, result.stdout, result)
    deferred = (state / "deferred").read_text() if (state / "deferred").exists() else ""
    print(f"ran {len(session.ran)} README commands; for the cluster suite:\n{deferred}")
