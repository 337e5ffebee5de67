#!/usr/bin/env python3
"""A resource that checks fencing tokens: one PostgreSQL row per key, written only by a
holder whose token is at least the one that wrote it last.

Run it under `hourglass lock`, which puts the lock's token in HOURGLASS_LOCK_TOKEN:

    hourglass lock report --ttl 10s -- \
        python examples/fenced-write/fenced_write.py --dsn "$DSN" --key report --value v2

A holder that paused (a GC, a SIGSTOP, a slow disk) past its lease's TTL may wake up still
believing it holds the lock, after someone else took it and wrote with a larger token. Its
write then matches no row and is refused: the database, not the holder, has the last word.

Exit codes: 0 written; 3 refused (a newer holder wrote first); 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS fenced_rows (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    token      bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
)
"""
# The whole trick: the row changes only when the writer's token is not older than the one
# that wrote it last. Equal is the same holder writing again; smaller is a stale holder.
WRITE = """
INSERT INTO fenced_rows AS row (key, value, token) VALUES (%(key)s, %(value)s, %(token)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, token = EXCLUDED.token,
                                written_at = now()
WHERE row.token <= EXCLUDED.token
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--key", required=True)
    parser.add_argument("--value", required=True)
    parser.add_argument(
        "--wait-for-file",
        type=Path,
        help="for the demo: wait until this file exists before writing (a slow step)",
    )
    args = parser.parse_args()
    token_text = os.environ.get("HOURGLASS_LOCK_TOKEN", "")
    if not token_text.isdigit():
        parser.error("HOURGLASS_LOCK_TOKEN is not set: run me under `hourglass lock`")
    if not args.dsn:
        parser.error("give --dsn (or DATABASE_URL)")
    token = int(token_text)
    print(f"holding token {token} (pid {os.getpid()})", flush=True)
    if args.wait_for_file is not None:
        while not args.wait_for_file.exists():
            time.sleep(0.05)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        written = conn.execute(
            WRITE, {"key": args.key, "value": args.value, "token": token}
        ).rowcount
        if written:
            print(f"wrote {args.key}={args.value!r} with token {token}", flush=True)
            return 0
        row = conn.execute("SELECT token FROM fenced_rows WHERE key = %s", (args.key,)).fetchone()
        newer = row[0] if row else "?"
        print(
            f"refused: token {token} is older than {newer}, the token of the last write;"
            " this process no longer holds the lock",
            file=sys.stderr,
            flush=True,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
