"""`hourglass feed ACTION ... --server HOST:PORT`: a Feed server's client.

    hourglass feed user HANDLE                       prints the new user's id
    hourglass feed follow|unfollow USER FOLLOWEE
    hourglass feed post USER TEXT [--media FILE]...  uploads each file (resumable), then posts
    hourglass feed upload USER FILE                  prints the upload's id
    hourglass feed delete USER POST
    hourglass feed timeline USER [--cursor C] [--limit N]   JSON: {"posts": [...], "next_cursor"}
    hourglass feed posts USER [--cursor C] [--limit N]
    hourglass feed trim|prewarm                      (what the resource's ScheduledJobs run)

`main(argv)` is the whole command; the CLI registers it as `hourglass feed`.
Exit codes: 0 done; 1 a failure (the server could not be reached, not found); 2 bad input,
whether argparse or the server (INVALID_ARGUMENT, ALREADY_EXISTS) found it.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc

_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)
CHUNK = 256 * 1024
_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", required=True, help="the Feed server's gRPC HOST:PORT")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser = argparse.ArgumentParser(prog="hourglass feed", description="Calls of a Feed server.")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("user", parents=[common], help="a new user").add_argument("handle")
    for name in ("follow", "unfollow"):
        action = actions.add_parser(name, parents=[common])
        action.add_argument("user", type=int)
        action.add_argument("followee", type=int)
    post = actions.add_parser("post", parents=[common], help="a post, with media files")
    post.add_argument("user", type=int)
    post.add_argument("text")
    post.add_argument("--media", type=Path, action="append", default=[], metavar="FILE")
    upload = actions.add_parser("upload", parents=[common], help="a resumable media upload")
    upload.add_argument("user", type=int)
    upload.add_argument("file", type=Path)
    delete = actions.add_parser("delete", parents=[common], help="delete a post")
    delete.add_argument("user", type=int)
    delete.add_argument("post", type=int)
    for name in ("timeline", "posts"):
        page = actions.add_parser(name, parents=[common])
        page.add_argument("user", type=int)
        page.add_argument("--cursor", default="")
        page.add_argument("--limit", type=int, default=0)
    actions.add_parser("trim", parents=[common], help="admin: cap timelines, compact")
    actions.add_parser("prewarm", parents=[common], help="admin: build active users' timelines")
    return parser


def upload_file(stub: pb_grpc.FeedStub, user: int, path: Path, timeout: float) -> int:
    """Uploads a file in chunks; after a lost connection asks where the upload stands and
    sends only the rest. The upload's id."""
    data = path.read_bytes()
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    started = stub.StartUpload(
        pb.StartUploadRequest(user=user, size=len(data), content_type=kind),
        timeout=timeout, wait_for_ready=True,
    )  # fmt: skip
    offset, deadline = 0, time.monotonic() + timeout
    while offset < len(data):
        try:
            answer = stub.PutChunk(
                pb.PutChunkRequest(user=user, upload=started.id, offset=offset,
                                   data=data[offset : offset + CHUNK]),
                timeout=60, wait_for_ready=True,
            )  # fmt: skip
            offset = answer.offset
        except grpc.RpcError as exc:
            if exc.code() not in (*_RETRY, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            offset = stub.GetUpload(
                pb.GetUploadRequest(user=user, upload=started.id), timeout=60, wait_for_ready=True
            ).offset
    return int(started.id)


def call(args: argparse.Namespace) -> str:
    """One call; a line (or JSON) saying what happened. grpc.RpcError on failure."""
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.FeedStub(channel)
        options = {"timeout": args.timeout, "wait_for_ready": True}
        action = args.action
        if action == "user":
            return str(stub.CreateUser(pb.CreateUserRequest(handle=args.handle), **options).id)
        if action in ("follow", "unfollow"):
            method = stub.Follow if action == "follow" else stub.Unfollow
            changed = method(pb.FollowRequest(user=args.user, followee=args.followee), **options)
            return "changed" if changed.changed else "unchanged"
        if action == "upload":
            return str(upload_file(stub, args.user, args.file, args.timeout))
        if action == "post":
            media = [upload_file(stub, args.user, path, args.timeout) for path in args.media]
            made = stub.CreatePost(
                pb.CreatePostRequest(user=args.user, text=args.text, media=media), **options
            )
            return str(made.id)
        if action == "delete":
            stub.DeletePost(pb.DeletePostRequest(user=args.user, post=args.post), **options)
            return "deleted"
        if action in ("timeline", "posts"):
            method = stub.GetHomeTimeline if action == "timeline" else stub.GetUserPosts
            page = method(
                pb.TimelineRequest(user=args.user, cursor=args.cursor, limit=args.limit), **options
            )
            return json.dumps(
                MessageToDict(page, always_print_fields_with_no_presence=True), indent=2
            )
        if action == "trim":
            trimmed = stub.Trim(pb.TrimRequest(), **options)
            return (
                f"trimmed {trimmed.timelines_trimmed} timelines; purged {trimmed.posts_purged}"
                f" deleted posts; expired {trimmed.uploads_expired} uploads"
            )
        warmed = stub.Prewarm(pb.PrewarmRequest(), **options)
        return f"built {warmed.timelines_built} of {warmed.active_users} active users' timelines"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on bad arguments
    try:
        print(call(args))
    except OSError as exc:
        print(f"hourglass feed {args.action}: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"hourglass feed {args.action}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2 if exc.code() in _BAD_INPUT else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
