"""A real S3-compatible server for tests (MinIO, built once by `scripts/s3-server`), with one
bucket: tests/integration/test_artifacts.py runs it on loopback; tests/cluster/ on the node's
address, where the cluster's pods reach it."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCESS_KEY = "hourglass-test"
SECRET_KEY = "hourglass-test-secret"
REGION = "us-east-1"
BUCKET = "artifacts"


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


def _server_command(
    binary: Path, host: str, port: int, data: Path
) -> tuple[list[str], dict[str, str]]:
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
            f"{host}:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
            str(data),
        ]
        return command, env
    if kind == "moto_server":  # the fallback of scripts/s3-server: accepts any credentials
        return [str(binary), "-H", host, "-p", str(port)], env
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


@contextmanager
def s3_server_on(folder: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """A real S3-compatible server on a free port of `host`, its data in `folder`; skips the
    test when it was never built (fails with HOURGLASS_REQUIRE_S3=1)."""
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
    port = _free_port()
    command, env = _server_command(binary, host, port, folder / "data")
    log = folder / "server.log"
    endpoint = f"http://{host}:{port}"
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
