"""Paths inside a workspace, checked the same way by the server (every request) and the
sync client (every name it reads from the folder or is told to write), so that no path can
name anything outside the workspace or the client's folder; and the names of conflict copies.

A path is relative, with "/" between names: never absolute, never "..", "." or an empty name
(so neither "a//b" nor a trailing "/"), no NUL, control character or backslash (a separator
on Windows), NFC-normalised (macOS spells "é" two ways; both must be one file), at most
MAX_PATH bytes and MAX_NAME bytes per name, and not inside the client's own STATE_DIR.
"""

from __future__ import annotations

import posixpath
import unicodedata
from datetime import date

MAX_PATH = 4096
MAX_NAME = 255
# The sync client's own folder (state database, temporary files) in every synced folder.
STATE_DIR = ".hourglass-sync"


class BadPath(ValueError):
    """Why a path is refused (the caller names the field)."""


def check(path: str) -> str:
    """`path` if it is a safe workspace path; BadPath saying what is wrong otherwise."""
    if not path:
        raise BadPath("must not be empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise BadPath(f"longer than {MAX_PATH} bytes")
    if "\x00" in path:
        raise BadPath("contains a NUL character")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadPath("contains a control character")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in path):
        raise BadPath("is not valid UTF-8")
    if "\\" in path:
        raise BadPath("contains a backslash (use / between names)")
    if path.startswith("/"):
        raise BadPath("must be relative to the workspace, not absolute")
    names = path.split("/")
    for name in names:
        if name == "":
            raise BadPath("has an empty name (// or a trailing /)")
        if name in (".", ".."):
            raise BadPath(f"must not contain {name!r}: it would leave the workspace")
        if len(name.encode()) > MAX_NAME:
            raise BadPath(f"has a name longer than {MAX_NAME} bytes")
    if names[0] == STATE_DIR:
        raise BadPath(f"{STATE_DIR}/ is the sync client's own folder")
    if unicodedata.normalize("NFC", path) != path:
        raise BadPath("must be NFC-normalised Unicode")
    return path


def is_safe(path: str) -> bool:
    try:
        check(path)
    except BadPath:
        return False
    return True


def conflict_copy(path: str, *, device: str, day: date, taken: set[str] | None = None) -> str:
    """The name Dropbox gives the losing side of a conflict: "report (laptop's conflicted
    copy 2026-11-30).txt", beside the original; " (2)", " (3)"... inside the parentheses
    when that name is taken too. The extension is the last one of the last name (a leading
    dot, as in ".bashrc", is not an extension)."""
    folder, name = posixpath.split(path)
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    label = f"{device}'s conflicted copy {day.isoformat()}"
    taken = taken or set()
    n = 1
    while True:
        suffix = f" ({n})" if n > 1 else ""
        candidate = posixpath.join(folder, f"{stem} ({label}{suffix}){ext}")
        if candidate not in taken:
            return candidate
        n += 1
