"""`hourglass revisions JOB` against a real `hourglass dev`: a job's specs newest first with
what each changed, -o json|yaml that parse back, exit 2 on bad input and 3 on no such job."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import yaml

from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes

SECRET_VALUE = "s3cr3t-value-never-shown"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    folder = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env["HOURGLASS_SERVER"] = f"127.0.0.1:{port}"
    procs = Processes(logs=folder, env=env)
    procs.start("dev", "dev", "--data-dir", str(folder / "data"), "--listen", f"127.0.0.1:{port}")
    procs.wait_for_log("dev", f"serving hourglass.v1.JobScheduler on 127.0.0.1:{port}", 60)
    yield procs
    procs.stop_all()


def test_revisions_lists_each_spec_newest_first_with_what_changed(dev: Processes) -> None:
    secret = f"API_KEY={SECRET_VALUE}"
    job_id = dev.cli(
        "schedule", "--every", "1h", "--name", "rev-report", "--secret-env", secret,
        "--", "echo", "one",
    ).stdout.strip()  # fmt: skip
    dev.cli(
        "update", "rev-report", "--every", "5m", "--name", "rev-report", "--secret-env", secret,
        "--", "echo", "one",
    )  # fmt: skip
    dev.cli(
        "update", "rev-report", "--every", "5m", "--name", "rev-report", "--env", "MODE=fast",
        "--secret-env", secret, "--", "echo", "two",
    )  # fmt: skip

    table = dev.cli("revisions", "rev-report").stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "REVISION", "CHANGED", "SCHEDULE", "COMMAND/IMAGE", "WHAT", "CHANGED",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    assert "every 5m" in lines[1] and lines[1].rstrip().endswith("args, env")
    assert "every 5m" in lines[2] and lines[2].rstrip().endswith("schedule")
    assert (
        "every 1h" in lines[3] and "echo one" in lines[3] and lines[3].rstrip().endswith("created")
    )

    wide = dev.cli("revisions", job_id[:8], "-o", "wide").stdout
    assert "SECRETS" in wide.splitlines()[0] and "API_KEY" in wide and "MODE" in wide

    as_json = json.loads(dev.cli("revisions", "rev-report", "-o", "json").stdout)
    as_yaml = yaml.safe_load(dev.cli("revisions", "rev-report", "-o", "yaml").stdout)
    assert as_json == as_yaml
    assert [r["revision"] for r in as_json["revisions"]] == [3, 2, 1]
    assert as_json["revisions"][0]["spec"]["task"]["secretEnv"] == {"API_KEY": "<redacted>"}
    for shown in (table, wide, json.dumps(as_json)):
        assert SECRET_VALUE not in shown

    # Only the newest: the oldest shown has its predecessor on a page not shown.
    newest = dev.cli("revisions", "rev-report", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in newest[1:3]] == ["3", "2"]
    assert newest[2].rstrip().endswith("-") and "larger --limit" in newest[3]


def test_bad_input_exits_2_naming_the_field_and_no_such_job_exits_3(dev: Processes) -> None:
    dev.cli("schedule", "--every", "1h", "--name", "rev-bad", "--", "true")
    negative = dev.cli("revisions", "rev-bad", "--limit", "-1", check=False)
    assert negative.returncode == 2, negative.stderr
    assert "page_size: must not be negative (INVALID_ARGUMENT)" in negative.stderr
    huge = dev.cli("revisions", "rev-bad", "--limit", "501", check=False)
    assert huge.returncode == 2 and "page_size: must be at most 500" in huge.stderr
    usage = dev.cli("revisions", "rev-bad", "--limit", "many", check=False)
    assert usage.returncode == 2 and "--limit" in usage.stderr
    missing = dev.cli("revisions", str(uuid.uuid4()), check=False)
    assert missing.returncode == 3 and "not found" in missing.stderr
