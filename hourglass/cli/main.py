"""Entry point of the `hourglass` command: the top-level parser and where each command runs.

The commands live in their own modules (client, components, admin, quota, locks, serve,
completion); the exit codes are in exit_codes.py and close `hourglass --help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from hourglass import logs
from hourglass.cli import (
    admin,
    client,
    completion,
    component_options,
    components,
    exit_codes,
    quota,
    serve,
)
from hourglass.cli import console as console_command
from hourglass.cli import locks as lock_commands
from hourglass.cli import revisions as revision_commands
from hourglass.cli import uninstall as uninstall_command
from hourglass.cli.options import (
    add_client_options,
    add_metrics_option,
    add_store_options,
    command,
    env,
)


def version() -> str:
    try:
        return metadata.version("hourglass")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass",
        description="Schedule commands; run every fire at least once.",
        epilog="A JOB is its id, a unique id prefix (4+ hex digits), NAME or NAMESPACE/NAME;"
        " a RUN its id or a unique id prefix.\n\n" + exit_codes.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hourglass {version()}")
    parser.add_argument("--log-level", default=env("HOURGLASS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env("HOURGLASS_LOG_FORMAT", "text"),
        help="json: one object per line with job_id, run_id, attempt, fencing_token fields",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client.add_parsers(commands)
    revision_commands.add_parser(commands)
    lock_commands.add_parsers(commands, add_client_options=add_client_options)
    component_options.add_parsers(commands)
    console_command.add_parser(commands)
    admin.add_parsers(commands, add_store_options=add_store_options)
    quota.add_parser(commands, add_store_options=add_store_options)
    serve.add_parser(commands, add_metrics_option=add_metrics_option)
    # The Leaderboard's admin client (what its ScheduledJobs run): its own parser reads the rest.
    # (No option prefix of its own, so every word, --help and --server included, reaches it.)
    leaderboard = command(
        commands,
        "leaderboard",
        add_help=False,
        prefix_chars="\0",
        help="a Leaderboard's admin calls",
        description="A Leaderboard's admin calls (what its ScheduledJobs run); `hourglass"
        " leaderboard --help` shows its own options.",
        examples=["hourglass leaderboard rollup --server games-arcade:50061"],
    )
    leaderboard.add_argument("case_args", nargs="*", metavar="rollup|retention --server HOST:PORT")
    # The UrlShortener's client (its write service, and what its ScheduledJobs run), the same way.
    shortener = command(
        commands,
        "shortener",
        add_help=False,
        prefix_chars="\0",
        help="a UrlShortener's calls",
        description="A UrlShortener's calls: shorten, paste, delete, stats, and what its"
        " ScheduledJobs run (purge, rollup); `hourglass shortener --help` shows its own options.",
        examples=["hourglass shortener --server 127.0.0.1:50061 shorten https://example.com/a"],
    )
    shortener.add_argument("case_args", nargs="*", metavar="--server HOST:PORT shorten|paste|...")
    # The FileSync case's calls, and its sync client, the same way.
    filesync = command(
        commands,
        "filesync",
        add_help=False,
        prefix_chars="\0",
        help="a FileSync service's calls",
        description="A FileSync service's calls: workspaces, members, versions, shares, and what"
        " its ScheduledJobs run (gc, retention, expire); `hourglass filesync --help` shows its"
        " own options.",
        examples=["hourglass filesync workspace demo --user ann --server 127.0.0.1:50061"],
    )
    filesync.add_argument("case_args", nargs="*", metavar="workspace|upload|share|gc|... ")
    sync = command(
        commands,
        "sync",
        add_help=False,
        prefix_chars="\0",
        help="sync a folder with a FileSync workspace",
        description="Keep a folder in sync with a FileSync workspace, until stopped;"
        " `hourglass sync --help` shows its own options.",
        examples=[
            "hourglass sync laptop --workspace demo --server 127.0.0.1:50061"
            " --token-file ann.token --device laptop"
        ],
    )
    sync.add_argument("case_args", nargs="*", metavar="DIR --workspace W --server HOST:PORT")
    # The MetricsPipeline's client (sends, reads, and what its ScheduledJobs run), the same way.
    metrics_case = command(
        commands,
        "metrics",
        add_help=False,
        prefix_chars="\0",
        help="a MetricsPipeline's calls",
        description="A MetricsPipeline's calls: send points and log lines, fetch and query them,"
        " and what its ScheduledJobs run (compact, downsample, retention); `hourglass metrics"
        " --help` shows its own options.",
        examples=["hourglass metrics --server 127.0.0.1:50061 send 'room_temp{room=\"lab\"}' 21.5"],
    )
    metrics_case.add_argument("case_args", nargs="*", metavar="--server HOST:PORT send|fetch|...")
    # The Feed's client (users, follows, posts, timelines, and what its ScheduledJobs run).
    feed = command(
        commands,
        "feed",
        add_help=False,
        prefix_chars="\0",
        help="a Feed's calls",
        description="A Feed's calls: users, follows, posts and timelines, and what its"
        " ScheduledJobs run (trim, prewarm); `hourglass feed --help` shows its own options.",
        examples=["hourglass feed timeline USER_ID --limit 20 --server 127.0.0.1:50061"],
    )
    feed.add_argument(
        "case_args", nargs="*", metavar="user|follow|post|timeline|... --server HOST:PORT"
    )
    completion.add_parser(commands)
    uninstall_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command_words: list[str] = []
    if "--" in words:
        split = words.index("--")
        words, command_words = words[:split], words[split + 1 :]
    args = parser.parse_args(words)
    args.words = words  # `worker --processes` passes them on to its children
    if command_words:
        if not hasattr(args, "argv"):
            parser.error("only schedule, update and lock take a command after --")
        args.argv = command_words
    logs.configure(args.log_level, args.log_format)
    if args.command == "completion":
        print(completion.script(parser, args.shell))
        return exit_codes.OK
    if args.command in lock_commands.COMMANDS:
        return lock_commands.run(parser, args)
    if args.command in client.COMMANDS:
        return client.run(parser, args)
    if args.command in revision_commands.COMMANDS:
        return revision_commands.run(parser, args)
    if args.command in console_command.COMMANDS:
        return console_command.run(parser, args)
    if args.command in components.COMMANDS:
        return components.run(parser, args)
    if args.command == "serve":
        if args.metrics_listen:
            from hourglass import health

            health.serve(args.metrics_listen)
        return serve.run(parser, args)
    if args.command == "leaderboard":
        from hourglass.cases.leaderboard import cli as leaderboard_cli

        return leaderboard_cli.main(args.case_args)
    if args.command == "shortener":
        from hourglass.cases.shortener import cli as shortener_cli

        return shortener_cli.main(args.case_args)
    if args.command in ("filesync", "sync"):
        from hourglass.cases.filesync import cli as filesync_cli

        if args.command == "sync":
            return filesync_cli.sync_main(args.case_args)
        return filesync_cli.main(args.case_args)
    if args.command == "metrics":
        from hourglass.cases.metrics import cli as metrics_cli

        return metrics_cli.main(args.case_args)
    if args.command == "feed":
        from hourglass.cases.feed import cli as feed_cli

        return feed_cli.main(args.case_args)
    if args.command in uninstall_command.COMMANDS:
        return uninstall_command.run(parser, args)
    if args.command in admin.COMMANDS:
        return admin.run(parser, args)
    return quota.run(parser, args)


if __name__ == "__main__":
    sys.exit(main())
