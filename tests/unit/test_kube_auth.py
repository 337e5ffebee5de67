"""The pure parts of service account authentication: the flag's mapping, the operator's
rotated token file, and how bad flags are refused (exit 2, naming the flag)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hourglass.api import kube_auth
from hourglass.cli import main
from hourglass.operator.token_file import TokenFile


def test_a_mapping_names_a_service_account_and_a_namespace() -> None:
    assert kube_auth.parse_mapping("hourglass/hg-operator=default") == (
        "hourglass/hg-operator",
        "default",
    )


@pytest.mark.parametrize("text", ["operator=default", "hourglass/op", "a/b/c=d", "/op=x", "ns/=x"])
def test_a_bad_mapping_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/SERVICE_ACCOUNT=HOURGLASS_NAMESPACE"):
        kube_auth.parse_mapping(text)


def test_the_api_refuses_a_bad_flag_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main(["api", "--database-url", "x", "--kubernetes-service-account", "nope"])
    assert exit_.value.code == 2
    assert "--kubernetes-service-account" in capsys.readouterr().err


def test_the_token_file_is_read_again_when_the_kubelet_rotates_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(path)
    assert token() == "first"
    # The kubelet swaps the file (a new inode, through a symlinked folder in a real pod).
    replacement = tmp_path / "token.new"
    replacement.write_text("second\n")
    os.replace(replacement, path)
    assert token() == "second"


def test_a_missing_token_file_fails_at_startup_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"token file .*missing"):
        TokenFile(tmp_path / "missing")
