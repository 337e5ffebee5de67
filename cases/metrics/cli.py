"""`hourglass metrics --server HOST:PORT ACTION`: a MetricsPipeline server's client.

    hourglass metrics send 'cpu{host="a"}' 12.5 [--at UNIX_MS]     sendMetric: a batch of one
    hourglass metrics log '{app="web"}' 'GET / 200' [--at UNIX_NS]
    hourglass metrics fetch 'cpu{host=~"a|b"}' --since 1h [--step 5m] | --series-id N
    hourglass metrics logs '{app="web"}' --since 1h [--limit 100]
    hourglass metrics compact|downsample|retention     (what the resource's ScheduledJobs run)

`main(argv)` is the whole command; the CLI registers it as `hourglass metrics`. Exit codes:
0 done; 1 a failure (the server could not be reached); 2 bad input, whether argparse or the
server (INVALID_ARGUMENT) found it, as for every `hourglass` command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import grpc
from google.protobuf.json_format import MessageToDict

from hourglass import durations
from hourglass.cases import Invalid
from hourglass.cases.metrics import selectors
from hourglass.cases.metrics.v1 import metrics_pb2 as pb
from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc


def _duration_ms(text: str) -> int:
    try:
        return int(durations.parse(text).total_seconds() * 1000)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass metrics", description="Calls of a MetricsPipeline's server."
    )
    parser.add_argument("--server", required=True, help="the server's gRPC HOST:PORT")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    actions = parser.add_subparsers(dest="action", required=True)
    send = actions.add_parser("send", help="one point of one series (sendMetric)")
    send.add_argument("series", help='labels as a selector of = matchers: cpu{host="a"}')
    send.add_argument("value", type=float)
    send.add_argument("--at", type=int, help="unix milliseconds (default now)")
    line = actions.add_parser("log", help="one log line of one stream")
    line.add_argument("stream", help='labels: {app="web"}')
    line.add_argument("line")
    line.add_argument("--at", type=int, help="unix nanoseconds (default now)")
    for name in ("fetch", "logs"):
        read = actions.add_parser(name)
        read.add_argument("selector", nargs="?", default="")
        read.add_argument("--since", type=_duration_ms, default=3_600_000, metavar="DURATION")
        read.add_argument("--until", type=int, help="unix ms (default now)")
        if name == "fetch":
            read.add_argument("--step", type=_duration_ms, default=0, metavar="DURATION")
            read.add_argument("--series-id", type=int, default=0)
        else:
            read.add_argument("--limit", type=int, default=0)
    for name in ("compact", "downsample", "retention"):
        actions.add_parser(name, help=f"admin: {name}")
    return parser


def _labels(text: str, field: str) -> list[pb.Label]:
    """A selector of = matchers as a label set (what `send` and `log` name a series by)."""
    matchers = selectors.parse(text, field)
    if any(m.op != "=" for m in matchers):
        raise Invalid(field, "name a series with = matchers only")
    return [pb.Label(name=m.name, value=m.value) for m in matchers]


def call(args: argparse.Namespace) -> str:
    """One call; a line (or JSON) saying what happened. grpc.RpcError on failure."""
    # A fetch of many series is larger than gRPC's default 4 MiB message.
    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    with grpc.insecure_channel(args.server, options=options) as channel:
        stub = pb_grpc.MetricsStub(channel)
        call_options = {"timeout": args.timeout, "wait_for_ready": True}
        if args.action == "send":
            at = args.at if args.at is not None else int(time.time() * 1000)
            series = pb.Series(labels=_labels(args.series, "series"), timestamps_ms=[at],
                               values=[args.value])  # fmt: skip
            done = stub.SendMetrics(pb.SendMetricsRequest(series=[series]), **call_options)
            return f"accepted {done.accepted}"
        if args.action == "log":
            at = args.at if args.at is not None else time.time_ns()
            stream = pb.LogStream(labels=_labels(args.stream, "stream"), timestamps_ns=[at],
                                  lines=[args.line])  # fmt: skip
            done = stub.SendLogs(pb.SendLogsRequest(streams=[stream]), **call_options)
            return f"accepted {done.accepted}"
        until = args.until if getattr(args, "until", None) is not None else int(time.time() * 1000)
        if args.action == "fetch":
            got = stub.FetchDataset(
                pb.FetchDatasetRequest(
                    selector=args.selector, series_id=args.series_id,
                    start_ms=until - args.since, end_ms=until, step_ms=args.step,
                ),
                **call_options,
            )  # fmt: skip
            return json.dumps(MessageToDict(got), indent=2)
        if args.action == "logs":
            logs = stub.FetchLogs(
                pb.FetchLogsRequest(
                    selector=args.selector, start_ns=(until - args.since) * 1_000_000,
                    end_ns=until * 1_000_000, limit=args.limit,
                ),
                **call_options,
            )  # fmt: skip
            return json.dumps(MessageToDict(logs), indent=2)
        if args.action == "compact":
            c = stub.Compact(pb.CompactRequest(), **call_options)
            return (
                f"compacted {c.partitions} partitions ({c.files_merged} files,"
                f" {c.duplicates_dropped} duplicates dropped)"
            )
        if args.action == "downsample":
            d = stub.Downsample(pb.DownsampleRequest(), **call_options)
            return f"wrote {d.rollups_written} rollups"
        r = stub.EnforceRetention(pb.EnforceRetentionRequest(), **call_options)
        return f"deleted {r.files_deleted} files; forgot {r.series_forgotten} series"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on bad arguments
    try:
        print(call(args))
    except Invalid as exc:
        print(f"hourglass metrics {args.action}: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(
            f"hourglass metrics {args.action}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
