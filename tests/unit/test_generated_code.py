"""The generated API code in hourglass/v1 must be what the .proto files generate today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_generated_code_matches_the_protos(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [str(repo_root / "scripts" / "generate-protos"), str(tmp_path)],
        check=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    for relative in generated:
        committed = repo_root / relative
        assert committed.exists(), f"{relative} is not committed; run scripts/generate-protos"
        assert committed.read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale against protos/; run scripts/generate-protos and commit"
        )
