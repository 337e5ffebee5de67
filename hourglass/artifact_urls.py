"""One uploaded binary for a reader that holds no store credential: a signed URL.

A Kubernetes job pod runs a tenant's code, so it must never hold the artifact store's
credentials: they read every tenant's binaries. Yet its init container has to fetch the one
binary the job runs. The worker, which holds the credentials, signs a GET of exactly that
digest's object for a short while (S3's presigned URL: the signature covers the method, the key
and the expiry, so the URL opens that object alone and nothing else, and only until it
expires), and the init container fetches it with `hourglass fetch-binary --url`, which verifies
the sha256 as every fetch does.

Only an S3 store can sign. A folder store has no URL a pod could reach, so a Kubernetes worker
with one refuses binary jobs (kube_manifests.add_binary says why).

A signed URL is a credential until it expires: it is never logged or put in an error message
(`redact`), and the executor hands it to the init container through the attempt's Secret.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import obstore

from hourglass.artifacts import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    Digest,
    S3ArtifactStore,
    write_verified,
)

__all__ = ["can_sign", "fetch_url", "redact", "signed_url"]

# S3 refuses a presigned URL valid for more than 7 days.
MAX_EXPIRY = timedelta(days=7)
_CHUNK = 1024 * 1024


def can_sign(url: str) -> bool:
    """Whether the artifact store at `url` can hand out signed URLs (an s3:// store)."""
    return urlsplit(url.strip()).scheme.lower() == "s3"


async def signed_url(store: ArtifactStore, digest: Digest, *, expires_in: timedelta) -> str:
    """A URL that GETs the artifact `digest` from `store`, and nothing else, until
    `expires_in` from now. Raises ArtifactError for a store that cannot sign; signing needs
    no request to the store (its credentials may need one, e.g. from instance metadata)."""
    if not isinstance(store, S3ArtifactStore):
        raise ArtifactError(f"{store!r} cannot sign URLs: only an s3:// store can")
    if not timedelta(0) < expires_in <= MAX_EXPIRY:
        raise ValueError(f"expires_in must be more than 0 and at most {MAX_EXPIRY}")
    url: str = await obstore.sign_async(store.client, "GET", store.key_of(digest), expires_in)
    return url


def redact(url: str) -> str:
    """`url` without its query and credentials: what may be shown of a signed URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch_url(url: str, digest: Digest, destination: Path, *, timeout: float = 60.0) -> None:
    """GETs `url` into `destination` atomically, only if the bytes hash to `digest`.

    Raises ArtifactNotFound for a 404, ArtifactCorrupt (leaving no file) for other bytes, and
    ArtifactError for any other failure (an expired URL is a 403), naming the URL without
    its signature. Blocking.
    """
    shown = redact(url)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ArtifactError(f"binary URL {shown!r} is not an http(s) URL")
    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise ArtifactNotFound(digest) from None
        raise ArtifactError(
            f"fetching {digest} from {shown}: HTTP {error.code} {error.reason}"
            + (" (the signed URL may have expired)" if error.code == 403 else "")
        ) from None
    except OSError as error:
        raise ArtifactError(f"fetching {digest} from {shown}: {error}") from None
    with response:
        try:
            write_verified(_chunks(response), digest, destination)
        except OSError as error:
            raise ArtifactError(f"fetching {digest} from {shown}: {error}") from None


def _chunks(response: IO[bytes]) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk
