"""Whether an upload fits in its namespace's artifact quota: a plain decision, so that the API
and its tests share it without a server.

Each namespace is charged the full size of every artifact it owns, even when another
namespace uploaded the same bytes: a charge that depended on others would tell a tenant what
others stored.
"""

from __future__ import annotations

from hourglass import sizes

# Bytes of uploaded binaries a namespace may own unless the admin set its own quota.
DEFAULT_MAX_ARTIFACT_BYTES = 1024**3


class QuotaExceeded(Exception):
    """An upload does not fit in the namespace's quota; nothing of it is kept."""

    def __init__(self, *, namespace: str, quota: int, used: int) -> None:
        super().__init__(
            f"artifact quota of namespace {namespace!r} exceeded: {sizes.format(quota)}"
            f" ({quota} bytes) allowed, {used} bytes used by earlier uploads; delete jobs"
            " that use old binaries (they are collected an hour later), or ask an admin"
            f" to raise it (`hourglass quota set --namespace {namespace} --max-artifact-bytes"
            " SIZE`)"
        )
        self.namespace = namespace
        self.quota = quota
        self.used = used


def remaining(*, quota: int, used: int) -> int:
    """Bytes a new upload may still have."""
    return max(0, quota - used)


def check(*, namespace: str, quota: int, used: int, size: int) -> None:
    """Raises QuotaExceeded unless `size` more bytes fit."""
    if used + size > quota:
        raise QuotaExceeded(namespace=namespace, quota=quota, used=used)
