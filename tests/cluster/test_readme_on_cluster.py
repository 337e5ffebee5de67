"""The README's "On a real cluster" walkthrough, run exactly as written.

Its blocks are marked `<!-- readme-test: cluster -->` and run here, in README order, each as one
bash script with `set -euo pipefail` from the checkout, on the cluster of this package (the
walkthrough's own `scripts/k8s-cluster up` finds it running). This module sorts last in the
package, because the walkthrough ends with `scripts/k8s-cluster down`.
"""

from __future__ import annotations

import os
import subprocess
import time

from tests import readme_blocks
from tests.cluster.conftest import REPO, Cluster


def test_the_readmes_cluster_walkthrough_runs_as_written(cluster: Cluster) -> None:
    blocks = [
        block
        for block in readme_blocks.blocks((REPO / "README.md").read_text())
        if block.kind == "cluster"
    ]
    assert blocks, "the README has no `readme-test: cluster` block"
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("KUBECONFIG", None)
    for block in blocks:
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block.text],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        took = time.monotonic() - started
        print(f"{block.where()}: exit {result.returncode} after {took:.0f}s")
        print(result.stdout[-4000:])
        assert result.returncode == 0, f"{block.where()}:\n{result.stderr[-4000:]}"
