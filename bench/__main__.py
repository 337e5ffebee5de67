"""python -m bench [--quick] [--only drain,...,leaderboard,shortener,filesync,metrics,feed,console]
[--profile] [--processes P] [--feed-full]

Starts its own PostgreSQL and etcd (embedded, in a temporary folder), runs hourglass's real
processes against them, and prints a table: each figure beside a baseline measured in the
same run, and their ratio. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from pathlib import Path

SCENARIOS = (
    "drain", "lateness", "submit", "scale", "locks", "leaderboard", "shortener", "filesync",
    "metrics", "feed", "console",
)  # fmt: skip


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {
            "drain": 1_000,
            "lateness": 1_000,
            "submit": 200,
            "scale_small": 10_000,
            "scale_large": 100_000,
            "profile": 2_000,
            "locks": 300,
            "locks_handoffs": 1,
            "leaderboard": 200_000,
            "shortener": 2_000,
            "filesync": 2_000,
            "filesync_edits": 50,
            "console": 2_000,
            "feed": 10_000,
        }
    return {
        "drain": 20_000,
        "lateness": 5_000,
        "submit": 2_000,
        "scale_small": 10_000,
        "scale_large": 1_000_000,
        "profile": 10_000,
        "locks": 2_000,
        "locks_handoffs": 3,
        "leaderboard": 1_000_000,
        "shortener": 5_000,
        "filesync": 10_000,
        "filesync_edits": 200,
        "console": 10_000,
        # The 100,000-user graph only with --feed-full (minutes of loading and fill).
        "feed": 10_000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of a minute or two"
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile with py-spy, in extra passes not part of the table: the worker "
        "and the producer during a drain, the API during submit",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="where logs, profiles and results.json go (default: a temp folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases' folder at the end")
    parser.add_argument(
        "--metrics-seconds",
        type=int,
        default=30,
        help="seconds of ingest in the metrics scenario (default 30; the issue's target is"
        " sustained for 300)",
    )
    parser.add_argument(
        "--feed-full", action="store_true", help="feed: the 100,000-user graph (default 10,000)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        metavar="P",
        help="drain: also run P worker processes of 8 / P slots each, to see whether a worker"
        " process per core pays (default: the core count; 1 skips it)",
    )
    args = parser.parse_args()
    # Stopped by a signal, the bench still stops its servers and processes: SIGTERM exits
    # through the `finally` blocks, and SIGINT works even when started in the background.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(sorted(unknown))}; pick from {', '.join(SCENARIOS)}"
        )

    from bench import (
        console,
        drain,
        feed,
        filesync,
        lateness,
        leaderboard,
        locks,
        metrics,
        scale,
        shortener,
        submit,
    )  # fmt: skip
    from bench.env import Bench, say
    from bench.profiling import Profiler
    from bench.report import Row, save, table

    n = sizes(args.quick)
    rows: list[Row] = []
    profile_text = ""
    started = time.time()
    if args.profile and Profiler.available() is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    with Bench.open(args.results, args.keep) as bench:
        say(f"results in {bench.results}")
        for scenario in chosen:
            try:
                if scenario == "drain":
                    rows += drain.run(bench, n["drain"], quick=args.quick, processes=args.processes)
                elif scenario == "lateness":
                    rows += lateness.run(bench, n["lateness"], quick=args.quick)
                elif scenario == "submit":
                    rows += submit.run(bench, n["submit"])
                elif scenario == "locks":
                    rows += locks.run(bench, n["locks"], handoffs=n["locks_handoffs"])
                elif scenario == "console":
                    rows += console.run(bench, n["console"])
                elif scenario == "leaderboard":
                    rows += leaderboard.run(bench, n["leaderboard"])
                elif scenario == "shortener":
                    rows += shortener.run(bench, n["shortener"])
                elif scenario == "filesync":
                    rows += filesync.run(bench, n["filesync"], edits=n["filesync_edits"])
                elif scenario == "metrics":
                    rows += metrics.run(
                        bench, args.metrics_seconds, reads_count=50 if args.quick else 100
                    )
                elif scenario == "feed":
                    full = args.feed_full
                    rows += feed.run(bench, 100_000 if full else n["feed"], full=full)
                elif scenario == "scale":
                    rows += scale.run(
                        bench,
                        n["scale_small"],
                        n["scale_large"],
                        fresh=5 if args.quick else 15,
                        steady=5 if args.quick else 15,
                    )
            except Exception as exc:  # one broken scenario must not hide the others
                say(f"{scenario} FAILED: {exc!r}")
                first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
                rows.append(
                    Row(scenario, "failed", None, "", note=f"failed: {type(exc).__name__} {first}")
                )
        if args.profile:
            profiler = Profiler(bench.results / "profiles")
            profiler.folder.mkdir(exist_ok=True)
            for what in chosen:
                if what == "drain":
                    drain.profile(bench, n["profile"], profiler)
                elif what == "submit":
                    submit.profile(bench, n["submit"], profiler)
            profile_text = profiler.summaries()
        save(
            rows,
            {"profile": profile_text, "quick": args.quick, "notes": bench.notes},
            bench.results / "results.json",
        )
        results = bench.results
    print()
    print(
        f"hourglass bench, {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, "
        f"{'quick' if args.quick else 'full'} sizes, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, took {(time.time() - started) / 60:.1f} min"
    )
    print()
    print(table(rows))
    if profile_text:
        print()
        print(profile_text)
    print()
    print(f"(logs, profiles and results.json: {results})")
    return 1 if any(r.measure == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
