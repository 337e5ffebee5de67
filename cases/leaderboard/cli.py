"""`hourglass leaderboard rollup|retention --server HOST:PORT`: the thin client the
Leaderboard's ScheduledJobs run. Their pods hold no database credentials, so they ask the
server to do the work (the Rollup and EnforceRetention admin RPCs).

`main(argv)` is the whole command; the CLI registers it as `hourglass leaderboard`.
Exit codes: 0 done, 1 the server failed or could not be reached, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass leaderboard", description="Admin calls of a Leaderboard server."
    )
    parser.add_argument("action", choices=["rollup", "retention"])
    parser.add_argument("--server", required=True, help="the server's gRPC HOST:PORT")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the answer"
    )
    return parser


def call(action: str, server: str, timeout: float) -> str:
    """Calls the admin RPC; returns a line saying what it did. grpc.RpcError on failure."""
    with grpc.insecure_channel(server) as channel:
        stub = pb_grpc.LeaderboardStub(channel)
        if action == "rollup":
            rolled = stub.Rollup(pb.RollupRequest(), timeout=timeout, wait_for_ready=True)
            marks = ", ".join(
                f"{size} until {stamp.ToDatetime().isoformat()}Z"
                for size, stamp in sorted(rolled.rolled_until.items())
            )
            return f"rolled up {rolled.buckets_created} buckets ({marks})"
        kept = stub.EnforceRetention(
            pb.EnforceRetentionRequest(), timeout=timeout, wait_for_ready=True
        )
        return (
            f"deleted {kept.buckets_deleted} buckets older than "
            f"{kept.horizon.ToDatetime().isoformat()}Z"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on bad arguments
    try:
        print(call(args.action, args.server, args.timeout))
    except grpc.RpcError as exc:
        print(
            f"hourglass leaderboard {args.action}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
