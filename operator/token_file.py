"""The operator's API token read from a file that the kubelet rotates.

In a cluster the chart projects the operator's service account token (audience `hourglass`)
into its pod; the kubelet replaces the file before the token expires. Each call reads the file
again when it changed, so a rotated token is used at once and nobody copies a token by hand.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class TokenFile:
    """A callable giving the file's token (stripped), re-read whenever the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._token = ""
        self()  # a missing or unreadable file fails at startup, naming the path

    def __call__(self) -> str:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_ino)
            with self._lock:
                if stamp != self._stamp:
                    self._token = self.path.read_text().strip()
                    self._stamp = stamp
                return self._token
        except OSError as error:
            raise OSError(f"token file {self.path}: {error.strerror or error}") from None
