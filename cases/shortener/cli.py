"""`hourglass shortener ACTION --server HOST:PORT`: the write service's client.

    hourglass shortener shorten URL [--alias A] [--expires-in 7d] [--max-visits N]
    hourglass shortener paste FILE|- [--syntax python] [--expires-in 1d]
    hourglass shortener delete KEY --token TOKEN
    hourglass shortener stats KEY

`shorten` and `paste` print the short URL (or the key, without a baseUrl) on the first line
and the delete token on the second: keep it to delete the key later.
    hourglass shortener purge|rollup     (what the resource's ScheduledJobs run)

`main(argv)` is the whole command; the CLI registers it as `hourglass shortener`.
Exit codes: 0 done; 1 a failure (the server could not be reached, an unknown key); 2 bad
input, whether argparse or the server (INVALID_ARGUMENT, ALREADY_EXISTS) found it, as for
every `hourglass` command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass import durations
from hourglass.cases.shortener.v1 import shortener_pb2 as pb
from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc

_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)


def _duration(text: str) -> float:
    try:
        return durations.parse(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass shortener", description="Calls of a UrlShortener's write service."
    )
    parser.add_argument("--server", required=True, help="the write service's gRPC HOST:PORT")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    actions = parser.add_subparsers(dest="action", required=True)
    shorten = actions.add_parser("shorten", help="a short key for a URL")
    shorten.add_argument("url")
    shorten.add_argument("--alias", default="")
    shorten.add_argument("--expires-in", type=_duration, metavar="DURATION")
    shorten.add_argument("--max-visits", type=int, default=0)
    paste = actions.add_parser("paste", help="a key for a file's bytes (- for stdin)")
    paste.add_argument("file")
    paste.add_argument("--syntax", default="")
    paste.add_argument("--expires-in", type=_duration, metavar="DURATION")
    delete = actions.add_parser("delete", help="delete a key you made (410 until purged)")
    delete.add_argument("key")
    delete.add_argument("--token", required=True, help="the delete token that made it")
    actions.add_parser("stats", help="visit counts of a key").add_argument("key")
    actions.add_parser("purge", help="admin: remove expired and deleted keys and blobs")
    actions.add_parser("rollup", help="admin: roll hourly visit counts into days")
    return parser


def _expiry(seconds: float | None) -> Timestamp | None:
    return None if seconds is None else Timestamp(seconds=int(time.time() + seconds))


def call(args: argparse.Namespace) -> str:
    """One call; a line (or JSON) saying what happened. grpc.RpcError on failure."""
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.ShortenerStub(channel)
        options = {"timeout": args.timeout, "wait_for_ready": True}
        if args.action == "shorten":
            answer = stub.Shorten(
                pb.ShortenRequest(
                    url=args.url, alias=args.alias, expires_at=_expiry(args.expires_in),
                    max_visits=args.max_visits,
                ),
                **options,
            )  # fmt: skip
            return f"{answer.short_url or answer.key}\ndelete token: {answer.delete_token}"
        if args.action == "paste":
            data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
            request = pb.CreatePasteRequest(syntax=args.syntax, expires_at=_expiry(args.expires_in))
            try:  # text is shown as text; anything else is served as a download
                request.text = data.decode("utf-8")
            except UnicodeDecodeError:
                request.data = data
            made = stub.CreatePaste(request, **options)
            return f"{made.short_url or made.key}\ndelete token: {made.delete_token}"
        if args.action == "delete":
            deleted = stub.Delete(
                pb.DeleteRequest(key=args.key, delete_token=args.token), **options
            )
            return "deleted" if deleted.deleted else "already deleted"
        if args.action == "stats":
            stats = stub.Stats(pb.StatsRequest(key=args.key), **options)
            return json.dumps(MessageToDict(stats), indent=2)
        if args.action == "purge":
            purged = stub.Purge(pb.PurgeRequest(), **options)
            return f"purged {purged.keys_deleted} keys and {purged.blobs_deleted} blobs"
        rolled = stub.Rollup(pb.RollupRequest(), **options)
        return (
            f"rolled {rolled.rows_rolled} hourly rows into days; forgot"
            f" {rolled.batches_forgotten} applied batch ids"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on bad arguments
    try:
        print(call(args))
    except OSError as exc:
        print(f"hourglass shortener {args.action}: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(
            f"hourglass shortener {args.action}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 2 if exc.code() in _BAD_INPUT else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
