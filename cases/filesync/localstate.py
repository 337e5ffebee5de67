"""The sync client's own state, in SQLite inside the synced folder (STATE_DIR/state.db):
what each file was when it last matched a server version (so a restart re-reads and
re-uploads nothing that did not change), the change cursor, and counters.

A row says: the local file `path`, as stat saw it (size, mtime_ns, inode), had the content
`digest`, which is `version` on the server. A file whose stat differs from its row is
re-read; one whose row has no file was deleted here while the client was away.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hourglass.cases.filesync import paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    version: int
    digest: str  # "" when the local file is kept over a remote deletion (send it again)
    size: int
    mtime_ns: int
    ino: int


class State:
    def __init__(self, root: Path) -> None:
        folder = root / paths.STATE_DIR
        folder.mkdir(exist_ok=True)
        (folder / "tmp").mkdir(exist_ok=True)
        self.tmp = folder / "tmp"
        self.db = sqlite3.connect(folder / "state.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, path: str) -> Row | None:
        found = self.db.execute(
            "SELECT path, version, digest, size, mtime_ns, ino FROM files WHERE path = ?", (path,)
        ).fetchone()
        return None if found is None else Row(*found)

    def rows(self) -> dict[str, Row]:
        return {
            r[0]: Row(*r)
            for r in self.db.execute("SELECT path, version, digest, size, mtime_ns, ino FROM files")
        }

    def put(self, rows: list[Row]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [(r.path, r.version, r.digest, r.size, r.mtime_ns, r.ino) for r in rows],
            )

    def forget(self, path: str) -> None:
        self.db.execute("DELETE FROM files WHERE path = ?", (path,))

    def meta(self, key: str, default: str = "") -> str:
        found = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if found is None else str(found[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> int:
        return int(self.meta("cursor", "0"))

    def count(self, name: str, n: int = 1) -> None:
        self.db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
            " SET value = value + excluded.value",
            (name, n),
        )

    def counters(self) -> dict[str, int]:
        return {name: int(v) for name, v in self.db.execute("SELECT name, value FROM counters")}
