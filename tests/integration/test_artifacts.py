"""The artifact store, both backends, against real storage: a temp folder and a real
S3-compatible server (MinIO, built once by `scripts/s3-server`) on a loopback port.

Every test that takes `store` runs once per backend. Each S3 test gets its own key prefix in
one shared bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import obstore
import pytest

from hourglass.artifact_urls import fetch_url, redact, signed_url
from hourglass.artifacts import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTooLarge,
    Digest,
    LocalArtifactStore,
    S3ArtifactStore,
    Stored,
    open_store,
    parse_digest,
)
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_server_on

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on a free loopback port, with one bucket."""
    with s3_server_on(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    server: S3Server = request.getfixturevalue("s3_server")
    # The store reads the standard AWS variables; nothing else of this machine's AWS setup.
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    spool = tmp_path / "spool"
    spool.mkdir()
    return S3ArtifactStore(
        server.bucket,
        f"test-{uuid.uuid4().hex[:12]}/",
        endpoint_url=server.endpoint,
        region=REGION,
        spool_dir=spool,
    )


# ---------------------------------------------------------------------------------------
# Helpers.


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def sha256_digest(data: bytes) -> Digest:
    return Digest(f"sha256:{hashlib.sha256(data).hexdigest()}")


async def overwrite_stored(store: ArtifactStore, digest: Digest, data: bytes) -> None:
    """Replace the stored bytes behind the store's back."""
    if isinstance(store, LocalArtifactStore):
        store.path_of(digest).write_bytes(data)
    else:
        assert isinstance(store, S3ArtifactStore)
        await obstore.put_async(store.client, store.key_of(digest), data)


def leftovers(store: ArtifactStore) -> list[Path]:
    """Temporary files the store's uploads left behind."""
    folder = store.root / "tmp" if isinstance(store, LocalArtifactStore) else None
    if isinstance(store, S3ArtifactStore):
        folder = store.spool_dir
    assert folder is not None
    return sorted(folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------
# Both backends.


async def test_same_bytes_are_stored_once(store: ArtifactStore) -> None:
    data = b"#!/bin/sh\necho hello\n" * 100

    first = await store.put(chunked(data, 7), limit=MIB)
    second = await store.put(chunked(data, 1000), limit=MIB)

    expected = sha256_digest(data)
    assert first == Stored(digest=expected, size=len(data), created=True)
    assert second == Stored(digest=expected, size=len(data), created=False)
    assert await store.list() == [expected]
    assert await store.exists(expected)
    assert leftovers(store) == []


async def test_put_past_the_limit_stores_nothing(store: ArtifactStore) -> None:
    limit = 1000

    with pytest.raises(ArtifactTooLarge) as caught:
        await store.put(chunked(b"x" * (limit + 1), 100), limit=limit)

    assert caught.value.limit == limit
    assert "1000 bytes" in str(caught.value)
    assert "MiB" in str(caught.value)
    assert await store.list() == []
    assert not await store.exists(sha256_digest(b"x" * (limit + 1)))
    assert leftovers(store) == []

    exactly = await store.put(chunked(b"y" * limit, 300), limit=limit)
    assert exactly.size == limit
    assert await store.list() == [exactly.digest]


async def test_admit_sees_the_upload_before_it_is_published_and_can_refuse_it(
    store: ArtifactStore,
) -> None:
    data = b"#!/bin/sh\necho admitted\n" * 40
    seen: list[tuple[Stored, bool]] = []

    class Refused(Exception):
        pass

    async def refuse(stored: Stored) -> None:
        seen.append((stored, await store.exists(stored.digest)))
        raise Refused

    with pytest.raises(Refused):
        await store.put(chunked(data, 100), limit=MIB, admit=refuse)
    # The hook had the digest and size, before any of the bytes were visible...
    assert seen == [(Stored(digest=sha256_digest(data), size=len(data), created=True), False)]
    # ...and a refusal keeps nothing, not even the spooled file.
    assert await store.list() == []
    assert leftovers(store) == []

    async def accept(stored: Stored) -> None:
        seen.append((stored, await store.exists(stored.digest)))

    stored = await store.put(chunked(data, 100), limit=MIB, admit=accept)
    assert stored.created and await store.list() == [stored.digest]
    again = await store.put(chunked(data, 100), limit=MIB, admit=accept)
    assert not again.created and seen[-1][1]  # the second admit saw the bytes stored


async def test_too_large_names_the_limit_in_mib() -> None:
    assert "(10 MiB)" in str(ArtifactTooLarge(10 * MIB))
    assert "10485760 bytes" in str(ArtifactTooLarge(10 * MIB))


async def test_fetch_round_trips_a_multi_mib_artifact(store: ArtifactStore, tmp_path: Path) -> None:
    # Past 5 MiB, so the S3 upload goes in parts.
    data = random.Random(7).randbytes(6 * MIB + 12345)
    stored = await store.put(chunked(data, MIB + 17), limit=16 * MIB)
    assert stored.digest == sha256_digest(data)
    assert stored.size == len(data)

    destination = tmp_path / "out" / "binary"
    await store.fetch(stored.digest, destination)

    assert destination.read_bytes() == data
    assert sorted(p.name for p in destination.parent.iterdir()) == ["binary"]

    # A second fetch replaces what is there.
    destination.write_bytes(b"stale")
    await store.fetch(stored.digest, destination)
    assert destination.read_bytes() == data


async def test_fetch_of_a_corrupted_artifact_raises_and_writes_nothing(
    store: ArtifactStore, tmp_path: Path
) -> None:
    data = b"the real binary" * 1000
    tampered = b"something else entirely"
    stored = await store.put(chunked(data, 4096), limit=MIB)
    await overwrite_stored(store, stored.digest, tampered)

    destination = tmp_path / "out" / "binary"
    with pytest.raises(ArtifactCorrupt) as caught:
        await store.fetch(stored.digest, destination)

    message = str(caught.value)
    assert stored.digest in message
    assert sha256_digest(tampered) in message
    assert caught.value.expected == stored.digest
    assert caught.value.found == sha256_digest(tampered)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


async def test_unknown_digests(store: ArtifactStore, tmp_path: Path) -> None:
    unknown = sha256_digest(b"never stored")
    destination = tmp_path / "out"

    with pytest.raises(ArtifactNotFound, match=unknown):
        await store.fetch(unknown, destination)

    assert not destination.exists()
    assert not await store.exists(unknown)
    await store.delete(unknown)  # not an error


async def test_delete(store: ArtifactStore) -> None:
    kept = await store.put(chunked(b"kept", 2), limit=100)
    gone = await store.put(chunked(b"gone", 2), limit=100)

    await store.delete(gone.digest)

    assert not await store.exists(gone.digest)
    assert await store.list() == [kept.digest]
    again = await store.put(chunked(b"gone", 2), limit=100)
    assert again.created


async def test_an_empty_artifact(store: ArtifactStore, tmp_path: Path) -> None:
    stored = await store.put(chunked(b"", 1), limit=0)
    assert stored == Stored(digest=sha256_digest(b""), size=0, created=True)
    await store.fetch(stored.digest, tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""


# ---------------------------------------------------------------------------------------
# The layout of each backend.


async def test_local_layout(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    stored = await store.put(chunked(b"layout", 3), limit=100)
    hex_part = stored.digest.removeprefix("sha256:")
    assert (tmp_path / "sha256" / hex_part[:2] / hex_part).read_bytes() == b"layout"


async def test_s3_keys(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    prefix = f"keys-{uuid.uuid4().hex[:8]}"
    url = f"s3://{s3_server.bucket}/{prefix}/nested?endpoint={s3_server.endpoint}&region={REGION}"
    store = open_store(url)
    assert isinstance(store, S3ArtifactStore)

    stored = await store.put(chunked(b"keys", 2), limit=100)

    hex_part = stored.digest.removeprefix("sha256:")
    key = f"{prefix}/nested/sha256/{hex_part}"
    assert store.key_of(stored.digest) == key
    raw = await obstore.get_async(store.client, key)
    assert bytes(await raw.bytes_async()) == b"keys"
    assert await store.list() == [stored.digest]


# ---------------------------------------------------------------------------------------
# Parsing.


def test_parse_digest_accepts_a_sha256() -> None:
    text = "sha256:" + "0123456789abcdef" * 4
    assert parse_digest(text) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no algorithm"),
        ("0123456789abcdef" * 4, "no algorithm"),
        ("md5:" + "0" * 32, "only 'sha256'"),
        ("SHA256:" + "0" * 64, "only 'sha256'"),
        ("sha256:" + "0" * 63, "63 hex digits"),
        ("sha256:" + "0" * 65, "65 hex digits"),
        ("sha256:" + "A" * 64, "lowercase hex"),
        ("sha256:" + "g" * 64, "lowercase hex"),
        ("sha256:" + "0" * 63 + "\n", "lowercase hex"),
        (" sha256:" + "0" * 64, "only 'sha256'"),
        ("sha256:sha256:" + "0" * 57, "lowercase hex"),
    ],
)
def test_parse_digest_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_digest(text)


def test_open_store_local_forms(tmp_path: Path) -> None:
    from_url = open_store(f"file://{tmp_path}/store")
    assert isinstance(from_url, LocalArtifactStore)
    assert from_url.root == tmp_path / "store"

    from_path = open_store(str(tmp_path / "plain"))
    assert isinstance(from_path, LocalArtifactStore)
    assert from_path.root == tmp_path / "plain"

    relative = open_store("relative/folder")
    assert isinstance(relative, LocalArtifactStore)
    assert relative.root == Path("relative/folder")


def test_open_store_s3_forms() -> None:
    full = open_store("s3://bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert isinstance(full, S3ArtifactStore)
    assert (full.bucket, full.prefix, full.endpoint_url, full.region) == (
        "bucket",
        "some/prefix/",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )

    bare = open_store("s3://bucket")
    assert isinstance(bare, S3ArtifactStore)
    assert (bare.bucket, bare.prefix, bare.endpoint_url, bare.region) == ("bucket", "", None, None)

    slash = open_store("s3://bucket/p/")
    assert isinstance(slash, S3ArtifactStore)
    assert slash.prefix == "p/"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com/artifacts",
        "gs://bucket/prefix",
        "file://host/path",
        "file:relative",
        "s3://",
        "s3:///prefix",
        "s3://bucket?endpoint=http://x&colour=blue",
        "s3://bucket?region=",
    ],
)
def test_open_store_rejects(url: str) -> None:
    with pytest.raises(ValueError, match=r"file:///|s3://bucket|given once"):
        open_store(url)


# ---------------------------------------------------------------------------------------
# Signed URLs: one binary for a reader without credentials (a Kubernetes job pod).


def _s3_store(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3ArtifactStore:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return S3ArtifactStore(
        server.bucket, f"signed-{uuid.uuid4().hex[:12]}", endpoint_url=server.endpoint,
        region=REGION,
    )  # fmt: skip


async def test_a_signed_url_opens_exactly_its_binary_for_a_reader_without_credentials(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = _s3_store(s3_server, monkeypatch)
    mine, other = b"#!/bin/sh\necho mine\n" * 1000, b"another tenant's binary"
    digest = (await store.put(chunked(mine, 4096), limit=MIB)).digest
    other_digest = (await store.put(chunked(other, 4096), limit=MIB)).digest
    url = await signed_url(store, digest, expires_in=timedelta(minutes=5))
    # The reader holds no credential at all.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    assert SECRET_KEY not in url
    fetch_url(url, digest, tmp_path / "bin")
    assert (tmp_path / "bin").read_bytes() == mine

    # The same signature does not open another key: the signature covers the path.
    forged = url.replace(parse_digest(digest).split(":")[1], parse_digest(other_digest)[7:])
    with pytest.raises(ArtifactError, match="HTTP 403") as refused:
        fetch_url(forged, other_digest, tmp_path / "other")
    assert "X-Amz-Signature" not in str(refused.value)  # the signature is never shown
    assert not (tmp_path / "other").exists()
    # Nor a write.
    request = urllib.request.Request(url, data=b"evil", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as put:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert put.value.code == 403
    await store.fetch(digest, tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == mine


async def test_fetching_a_url_verifies_the_digest_and_leaves_nothing_on_a_mismatch(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = _s3_store(s3_server, monkeypatch)
    digest = (await store.put(chunked(b"genuine", 4), limit=MIB)).digest
    await overwrite_stored(store, digest, b"tampered")
    url = await signed_url(store, digest, expires_in=timedelta(minutes=5))
    with pytest.raises(ArtifactCorrupt):
        fetch_url(url, digest, tmp_path / "bin")
    assert list(tmp_path.iterdir()) == []
    missing = sha256_digest(b"never uploaded")
    with pytest.raises(ArtifactNotFound):
        fetch_url(await signed_url(store, missing, expires_in=timedelta(minutes=5)), missing,
                  tmp_path / "bin")  # fmt: skip


async def test_a_folder_store_signs_nothing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="only an s3:// store"):
        await signed_url(
            LocalArtifactStore(tmp_path), sha256_digest(b"x"), expires_in=timedelta(minutes=1)
        )


def test_redact_keeps_only_where_a_url_points() -> None:
    url = "https://user:pw@s3.example:9000/b/sha256/ab?X-Amz-Signature=s3cr3t&X-Amz-Expires=60"
    assert redact(url) == "https://s3.example:9000/b/sha256/ab"


def test_fetch_binary_with_a_signed_url_writes_an_executable(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`hourglass fetch-binary` as the init container runs it: HOURGLASS_BINARY_URL only."""
    store = _s3_store(s3_server, monkeypatch)

    async def upload() -> tuple[Digest, str]:
        digest = (await store.put(chunked(b"#!/bin/sh\necho fetched\n", 8), limit=MIB)).digest
        return digest, await signed_url(store, digest, expires_in=timedelta(minutes=5))

    digest, url = asyncio.run(upload())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HOURGLASS_"))}
    hourglass = Path(sys.executable).with_name("hourglass")
    result = subprocess.run(
        [str(hourglass), "fetch-binary", digest, str(tmp_path / "task")],
        env={**env, "HOURGLASS_BINARY_URL": url}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{digest} verified" in result.stdout
    assert subprocess.run([str(tmp_path / "task")], capture_output=True, text=True).stdout == (
        "fetched\n"
    )
    wrong = sha256_digest(b"something else")
    result = subprocess.run(
        [str(hourglass), "fetch-binary", wrong, str(tmp_path / "wrong")],
        env={**env, "HOURGLASS_BINARY_URL": url}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"artifact {wrong} is corrupt" in result.stderr
    assert "X-Amz-Signature" not in result.stderr
    assert not (tmp_path / "wrong").exists()
