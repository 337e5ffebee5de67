"""The plain decisions behind tokens and artifact quotas, and the CLI's checks of their input:
no server needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hourglass import artifact_quota, sizes
from hourglass.api.auth import refusal
from hourglass.cli import quota
from hourglass.cli.main import build_parser
from hourglass.store.tokens import Found

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_a_token_works_until_it_expires_or_is_revoked() -> None:
    live = Found(namespace="ops", revoked=False, expires_at=T0)
    assert refusal(live, now=T0 - timedelta(seconds=1)) is None
    assert refusal(Found(namespace="ops", revoked=False, expires_at=None), now=T0) is None
    expired = refusal(live, now=T0)
    assert expired is not None
    assert "expired at 2026-06-01T12:00:00+00:00" in expired
    assert "hourglass token create --namespace ops" in expired
    # Unknown and revoked read the same: neither says whether the token ever existed.
    revoked = Found(namespace="ops", revoked=True, expires_at=None)
    assert refusal(None, now=T0) == refusal(revoked, now=T0) == "unknown or revoked token"


def test_sizes_parse_and_format() -> None:
    assert sizes.parse("1048576") == 1024**2
    assert sizes.parse("1GiB") == sizes.parse("1 GiB") == 1024**3
    assert sizes.parse("500MB") == 500_000_000
    assert sizes.parse("1.5KiB") == 1536
    assert sizes.format(1024**3) == "1GiB"
    assert sizes.format(64 * 1024) == "64KiB"
    assert sizes.format(1000) == "1000B"
    assert sizes.format(0) == "0B"
    for bad in ("", "-1", "1 gigabyte", "GiB", "1e9"):
        with pytest.raises(ValueError, match="invalid size"):
            sizes.parse(bad)


def test_an_upload_fits_only_within_the_quota() -> None:
    artifact_quota.check(namespace="a", quota=100, used=60, size=40)
    with pytest.raises(artifact_quota.QuotaExceeded) as raised:
        artifact_quota.check(namespace="a", quota=100, used=60, size=41)
    message = str(raised.value)
    assert "namespace 'a'" in message and "100B" in message and "60 bytes used" in message
    assert "--max-artifact-bytes" in message
    assert artifact_quota.remaining(quota=100, used=60) == 40
    assert artifact_quota.remaining(quota=100, used=160) == 0  # a lowered quota


@pytest.mark.parametrize(
    ("ttl", "reason"),
    [
        ("0s", "must be positive"),
        ("-5d", "must be positive"),
        ("30 days", "invalid duration"),
        ("", "invalid duration"),
        ("99999999999d", "too long"),
    ],
)
def test_token_create_refuses_a_bad_ttl_with_exit_code_2(
    ttl: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["token", "create", "--namespace", "ops", f"--ttl={ttl}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--ttl" in error and reason in error


def test_a_negative_ttl_is_refused_in_either_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["token", "create", "--namespace", "ops", "--ttl", "-5d"])
    assert exited.value.code == 2
    assert "--ttl" in capsys.readouterr().err


def test_token_create_takes_a_ttl() -> None:
    args = build_parser().parse_args(["token", "create", "--namespace", "ops", "--ttl", "30d"])
    assert args.ttl == timedelta(days=30)


@pytest.mark.parametrize("size", ["-1", "lots", "1 gigabyte"])
def test_quota_set_refuses_a_bad_size_with_exit_code_2(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quota", "set", "--namespace", "ops", f"--max-artifact-bytes={size}"]
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "--max-artifact-bytes" in capsys.readouterr().err


def test_quota_set_takes_a_size_or_default() -> None:
    base = ["quota", "set", "--namespace", "ops", "--max-artifact-bytes"]
    assert build_parser().parse_args([*base, "10GiB"]).max_artifact_bytes == 10 * 1024**3
    # "default" is told apart from "not given" (None): the namespace goes back to the API's.
    assert build_parser().parse_args([*base, "default"]).max_artifact_bytes == quota.DEFAULT


@pytest.mark.parametrize("value", ["0s", "-1s", "soon"])
def test_api_refuses_a_bad_upload_idle_timeout(value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["api", f"--upload-idle-timeout={value}"])
    assert exited.value.code == 2
