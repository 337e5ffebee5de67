"""The artifact store, both backends, against real storage: a temp folder and a real
S3-compatible server (MinIO, built once by `scripts/s3-server`) on a loopback port.

Every test that takes `store` runs once per backend. Each S3 test gets its own key prefix in
one shared bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import obstore
import pytest

from hourglass.artifacts import (
    ArtifactCorrupt,
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

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY = "hourglass-test"
SECRET_KEY = "hourglass-test-secret"
REGION = "us-east-1"
BUCKET = "artifacts"
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------
# The S3 server.


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    kind: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _signed_request(method: str, endpoint: str, path: str) -> urllib.request.Request:
    """An AWS Signature V4 request with an empty body (enough to create a bucket)."""
    now = datetime.now(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1].rstrip("/")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
            signed,
            payload,
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET_KEY}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]
    return urllib.request.Request(f"{endpoint}{path}", method=method, headers=headers)


def _server_command(binary: Path, port: int, data: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    kind = binary.name
    if kind == "minio":
        console = _free_port()
        env |= {
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_REGION": REGION,
        }
        command = [
            str(binary),
            "server",
            "--quiet",
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
            str(data),
        ]
        return command, env
    if kind == "moto_server":  # the fallback of scripts/s3-server: accepts any credentials
        return [str(binary), "-H", "127.0.0.1", "-p", str(port)], env
    raise RuntimeError(f"{binary}: unknown S3 server kind {kind!r} (expected minio or moto_server)")


def _create_bucket(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Create the bucket once the server answers; a just-started server may refuse for a while."""
    deadline = time.monotonic() + 60
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the S3 server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(_signed_request("PUT", endpoint, f"/{BUCKET}"), timeout=5):
                return
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            if "BucketAlreadyOwnedByYou" in body:
                return
            last = f"HTTP {error.code}: {body[:500]}"
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    raise RuntimeError(f"the S3 server at {endpoint} did not become ready: {last}")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on a free loopback port, with one bucket."""
    script = REPO / "scripts" / "s3-server"
    binary = Path(
        subprocess.run(
            [str(script), "--print-path"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        if os.environ.get("HOURGLASS_REQUIRE_S3") == "1":
            pytest.fail(f"HOURGLASS_REQUIRE_S3=1 but there is no S3 server at {binary}")
        pytest.skip("run scripts/s3-server to build the S3 server (needs Go)")
    folder = tmp_path_factory.mktemp("s3")
    port = _free_port()
    command, env = _server_command(binary, port, folder / "data")
    log = folder / "server.log"
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        _create_bucket(endpoint, process, log)
        yield S3Server(endpoint=endpoint, bucket=BUCKET, kind=binary.name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
