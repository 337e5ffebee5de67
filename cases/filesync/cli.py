"""`hourglass filesync ACTION --server HOST:PORT ...`: calls of a FileSync service, and
`hourglass sync DIR --workspace W --server HOST:PORT`: the sync client (client.py).

    hourglass filesync workspace W --user U            make a workspace; prints the owner's token
    hourglass filesync member W USER --access read|write   (owner) prints the member's token
    hourglass filesync upload W FILE PATH              a file, as a new version of PATH
    hourglass filesync download W PATH [--version N] [-o FILE]
    hourglass filesync versions|delete W PATH          delete keeps the old versions
    hourglass filesync restore W PATH VERSION
    hourglass filesync share W PATH [--expires-in 7d]  prints the link
    hourglass filesync gc|retention|expire             (what the resource's ScheduledJobs run)

A member's token comes from --token-file or HOURGLASS_FILESYNC_TOKEN, never from the
command line (it would show in the process list). `main(argv)` is the whole command.
Exit codes: 0 done; 1 a failure (the server could not be reached, not found, a conflict);
2 bad input, whether argparse or the server (INVALID_ARGUMENT, ALREADY_EXISTS) found it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from hourglass import durations
from hourglass.cases.filesync import chunking, validation
from hourglass.cases.filesync.remote import Remote, Upload
from hourglass.cases.filesync.v1 import filesync_pb2 as pb

TOKEN_ENV = "HOURGLASS_FILESYNC_TOKEN"
_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)


def _seconds(text: str) -> int:
    try:
        return max(1, int(durations.parse(text).total_seconds()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", required=True, help="the service's gRPC HOST:PORT")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    common.add_argument("--token-file", type=Path, help=f"the member's token (or ${TOKEN_ENV})")
    return common


def parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="hourglass filesync", description="Calls of a FileSync service."
    )
    actions = parser.add_subparsers(dest="action", required=True)
    made = actions.add_parser("workspace", parents=[common], help="make a workspace")
    made.add_argument("workspace")
    made.add_argument("--user", required=True)
    member = actions.add_parser("member", parents=[common], help="add a member (owner only)")
    member.add_argument("workspace")
    member.add_argument("user")
    member.add_argument("--access", choices=validation.ACCESS, required=True)
    upload = actions.add_parser("upload", parents=[common], help="upload a file")
    upload.add_argument("workspace")
    upload.add_argument("file", type=Path)
    upload.add_argument("path")
    download = actions.add_parser("download", parents=[common], help="a file's bytes")
    download.add_argument("workspace")
    download.add_argument("path")
    download.add_argument("--version", type=int, default=0)
    download.add_argument("-o", "--output", type=Path, help="default: standard output")
    for name in ("versions", "delete"):
        one = actions.add_parser(name, parents=[common])
        one.add_argument("workspace")
        one.add_argument("path")
    restore = actions.add_parser("restore", parents=[common], help="an old version as the head")
    restore.add_argument("workspace")
    restore.add_argument("path")
    restore.add_argument("version", type=int)
    share = actions.add_parser("share", parents=[common], help="a link anyone can download")
    share.add_argument("workspace")
    share.add_argument("path")
    share.add_argument("--version", type=int, default=0)
    share.add_argument("--expires-in", type=_seconds, default=7 * 86400, metavar="DURATION")
    for name, what in (
        ("gc", "admin: delete chunks no version refers to"),
        ("retention", "admin: delete versions past the spec's retention"),
        ("expire", "admin: delete expired share links"),
    ):
        actions.add_parser(name, parents=[common], help=what)
    return parser


def token(path: Path | None) -> str:
    if path is not None:
        return path.read_text().strip()
    return os.environ.get(TOKEN_ENV, "").strip()


def _show(message: object) -> str:
    shown = MessageToDict(message, always_print_fields_with_no_presence=True)  # type: ignore[arg-type]
    return json.dumps(shown, indent=2)


async def call(args: argparse.Namespace) -> str:
    remote = Remote(args.server, getattr(args, "workspace", ""), token(args.token_file))
    try:
        return await _call(remote, args)
    finally:
        await remote.close()


async def _call(remote: Remote, args: argparse.Namespace) -> str:
    t = args.timeout
    ws = getattr(args, "workspace", "")
    if args.action == "workspace":
        made = await remote.call(
            "CreateWorkspace", pb.CreateWorkspaceRequest(workspace=ws, user=args.user), t
        )
        return str(made.token)
    if args.action == "member":
        adding = pb.AddMemberRequest(workspace=ws, user=args.user, access=args.access)
        return str((await remote.call("AddMember", adding, t)).token)
    if args.action == "upload":
        cut, data = await asyncio.to_thread(chunking.cut_file, args.file)
        head = 0
        try:
            versions = await remote.call(
                "ListVersions", pb.ListVersionsRequest(workspace=ws, path=args.path), t
            )
            head = versions.versions[0].version
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        upload = Upload(args.path, head, cut, data)
        await remote.send_missing([upload], lambda n, size: None)
        return _show((await remote.commit([upload]))[0])
    if args.action == "download":
        target = args.output or Path(f"/dev/fd/{sys.stdout.fileno()}")
        found = await remote.call(
            "ListVersions", pb.ListVersionsRequest(workspace=ws, path=args.path), t
        )
        chosen = [v for v in found.versions if v.version == args.version or not args.version]
        if not chosen or chosen[0].deleted:
            return f"{args.path}: no version {args.version or 'now'}"
        await remote.download(args.path, chosen[0].version, chosen[0].digest, target)
        return ""
    if args.action == "versions":
        return _show(
            await remote.call(
                "ListVersions", pb.ListVersionsRequest(workspace=ws, path=args.path), t
            )
        )
    if args.action == "delete":
        return _show(await remote.call("Delete", pb.DeleteRequest(workspace=ws, path=args.path), t))
    if args.action == "restore":
        request = pb.RestoreRequest(workspace=ws, path=args.path, version=args.version)
        return _show(await remote.call("Restore", request, t))
    if args.action == "share":
        sharing = pb.CreateShareLinkRequest(
            workspace=ws, path=args.path, version=args.version, expires_in=args.expires_in
        )
        link = await remote.call("CreateShareLink", sharing, t)
        return str(link.url or link.path)
    method, request_type = {
        "gc": ("CollectGarbage", pb.CollectGarbageRequest),
        "retention": ("EnforceRetention", pb.EnforceRetentionRequest),
        "expire": ("ExpireShareLinks", pb.ExpireShareLinksRequest),
    }[args.action]
    return _show(await remote.call(method, request_type(), t))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on bad arguments
    try:
        out = asyncio.run(call(args))
    except grpc.aio.AioRpcError as exc:
        print(
            f"hourglass filesync {args.action}: {exc.code().name}: {exc.details()}", file=sys.stderr
        )
        return 2 if exc.code() in _BAD_INPUT else 1
    except OSError as exc:
        print(f"hourglass filesync {args.action}: {exc}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0


def sync_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass sync", description="Keep a folder in sync with a FileSync workspace."
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--server", required=True, help="the service's gRPC HOST:PORT")
    parser.add_argument("--token-file", type=Path, help=f"the member's token (or ${TOKEN_ENV})")
    parser.add_argument(
        "--device", default=socket.gethostname().split(".")[0][:64],
        help="this device's name, shown in conflict copies (default: the host name)",
    )  # fmt: skip
    parser.add_argument(
        "--upload-limit", type=float, default=0, metavar="BYTES_PER_SECOND",
        help="upload at most this fast (default: no limit)",
    )  # fmt: skip
    return parser


def sync_main(argv: Sequence[str] | None = None) -> int:
    from hourglass.cases.filesync.client import Syncer

    cli = sync_parser()
    args = cli.parse_args(argv)
    try:
        validation.workspace(args.workspace, "--workspace")
        validation.device(args.device, "--device")
    except validation.Invalid as exc:
        cli.error(str(exc))
    if not args.folder.is_dir():
        cli.error(f"{args.folder}: not a folder")
    secret = token(args.token_file)
    if not secret:
        cli.error(f"no token: give --token-file or set ${TOKEN_ENV}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        remote = Remote(
            args.server, args.workspace, secret, device=args.device, rate=args.upload_limit
        )
        try:
            await Syncer(args.folder, remote, device=args.device).run(stop)
        finally:
            await remote.close()

    print(f"hourglass sync: {args.folder} <-> {args.workspace} on {args.server}", flush=True)
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
