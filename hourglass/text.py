"""Text as PostgreSQL can store it.

A job is untrusted code and its output is whatever bytes it wrote. The executors decode those
bytes as UTF-8 with replacement, which still keeps U+0000: valid UTF-8, yet refused by every
PostgreSQL text column. An error message built from a file name can carry a lone surrogate
(Python's surrogateescape), which no UTF-8 encoder accepts. Either one used to fail the whole
transaction that wrote an attempt's result. The store passes every text that came from an
attempt through `storable` before writing it.
"""

from __future__ import annotations

import re

# Shown in place of what cannot be stored: the same mark a failed UTF-8 decode leaves.
REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD, one for one, so a tail keeps
    its length and the position of what was replaced."""
    return _UNSTORABLE.sub(REPLACEMENT, text)
