"""What-if experiments behind docs/benchmarks.md's recommendations (not part of the table):

    python -m bench.whatif [--runs 10000] [--rounds 3] [--only 2,6,7] [--results DIR]

The drain scenario's worker-only variant (N due runs of /bin/true, one worker), once per
variant of the worker per round. A variant is applied in memory by bench/patched.py or is a
command-line option; nothing in hourglass changes. Each round runs the unchanged worker and
every chosen variant (in reverse order every other round); a variant's figure is the median,
over rounds, of its ratio to the unchanged worker of the same round, in runs/s and in CPU ms
per run (all processes). On a shared machine a single run says little; rounds help.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.drain import run_hourglass
from bench.env import HOURGLASS, REPO, Bench, say
from bench.report import Row, save, table

ALL = ["--pidfd", "--no-pool-check", "--pool-size", "32"]
VARIANTS: list[tuple[str, list[str], list[str], list[str]]] = [
    # (name, options of bench.patched, hourglass global options, worker options)
    ("as is", [], [], []),
    ("--log-level WARNING", [], ["--log-level", "WARNING"], []),
    ("pidfd child watcher", ["--pidfd"], [], []),
    ("pool without check", ["--no-pool-check"], [], []),
    ("pool of 32", ["--pool-size", "32"], [], []),
    ("all four above", ALL, ["--log-level", "WARNING"], []),
    ("--concurrency 128", [], [], ["--concurrency", "128"]),
    ("all four, --concurrency 128", ALL, ["--log-level", "WARNING"], ["--concurrency", "128"]),
]


def launcher(
    patches: list[str], options: list[str], shim: Path
) -> tuple[list[str], dict[str, str]]:
    if not patches:
        return [*HOURGLASS, *options], {}
    # PYTHONPATH holds only a link to bench/, so `hourglass` is still imported as installed.
    return [sys.executable, "-m", "bench.patched", *patches, "--", *options], {
        "PYTHONPATH": str(shim) + os.pathsep + os.environ.get("PYTHONPATH", "")
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.whatif", description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--results", type=Path)
    parser.add_argument(
        "--only", default="", help="comma-separated variant numbers (1-based) to run"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shim = Path(tempfile.mkdtemp(prefix="hourglass-bench-shim-"))
    (shim / "bench").symlink_to(REPO / "bench")
    try:
        return _run(args, shim)
    finally:
        shutil.rmtree(shim, ignore_errors=True)  # a folder holding one symlink


def _run(args: argparse.Namespace, shim: Path) -> int:
    chosen = {int(n) for n in args.only.split(",") if n.strip()} or set(range(2, len(VARIANTS) + 1))
    order = [n for n in range(1, len(VARIANTS) + 1) if n == 1 or n in chosen]
    found: dict[int, list[dict[str, Any]]] = {n: [] for n in order}
    with Bench.open(args.results, keep=False) as bench:
        for round_ in range(args.rounds):
            for number in order if round_ % 2 == 0 else list(reversed(order)):
                name, patches, options, worker_args = VARIANTS[number - 1]
                say(f"what-if round {round_ + 1}/{args.rounds}, variant {number}: {name}")
                command, env = launcher(patches, options, shim)
                figures = run_hourglass(
                    bench,
                    args.runs,
                    pipeline=False,
                    variant=f"r{round_}v{number}",
                    launcher=command,
                    launcher_env=env,
                    worker_args=tuple(worker_args),
                )
                figures["cpu_total"] = sum(figures["cpu_ms"].values())
                found[number].append(figures)
        results = bench.results
    plain = found[1]
    rows = [
        Row(
            "what-if",
            "as is: runs/s, CPU ms per run, per round",
            None,
            "",
            note=", ".join(f"{f['rate']:,.0f}/s {f['cpu_total']:.2f} ms" for f in plain),
        )
    ]
    for number in order[1:]:
        name = VARIANTS[number - 1][0]
        runs = found[number]
        rate = statistics.median(f["rate"] / p["rate"] for f, p in zip(runs, plain, strict=True))
        cpu = statistics.median(
            f["cpu_total"] / p["cpu_total"] for f, p in zip(runs, plain, strict=True)
        )
        rows.append(
            Row(
                "what-if",
                f"{name}: runs/s (median of rounds)",
                statistics.median(f["rate"] for f in runs),
                "runs/s",
                statistics.median(f["rate"] for f in plain),
                "as is",
                note=f"median per-round ratio {rate:.2f}x",
            )
        )
        rows.append(
            Row(
                "what-if",
                f"{name}: CPU ms per run (median of rounds)",
                statistics.median(f["cpu_total"] for f in runs),
                "ms",
                statistics.median(f["cpu_total"] for f in plain),
                "as is",
                better="lower",
                note=f"median per-round ratio {cpu:.2f}x; "
                + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1]["cpu_ms"].items()),
            )
        )
    save(rows, {"variants": {VARIANTS[n - 1][0]: found[n] for n in order}}, results / "whatif.json")
    print()
    print(f"{args.runs:,} runs per variant and round, {args.rounds} rounds")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
