"""What changed between two specs (hourglass.spec_diff), and a revision read back from the
JSON the store keeps (store.revisions.spec_from_json): no server needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hourglass import spec_diff
from hourglass.api import convert
from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobSpec,
    KubernetesJob,
    Overlap,
    Resources,
    RetryPolicy,
    Task,
)
from hourglass.schedules import Bounds, Cron, Every
from hourglass.store import job_columns, revisions
from hourglass.v1 import scheduler_pb2 as pb


def _spec(**task: object) -> pb.JobSpec:
    spec = pb.JobSpec(name="report", task=pb.Task(command=["echo", "hi"], **task))  # type: ignore[arg-type]
    spec.schedule.every.interval.FromSeconds(60)
    return spec


def test_the_same_spec_changes_nothing() -> None:
    assert spec_diff.changes(_spec(), _spec()) == []
    assert spec_diff.summary(_spec(), _spec()) == "no change"


def test_a_first_revision_reads_created() -> None:
    assert spec_diff.summary(None, _spec()) == "created"


def test_each_changed_part_is_named_once_in_a_fixed_order() -> None:
    after = _spec(args=["--fast"], env={"MODE": "fast"}, image="alpine:3")
    after.schedule.every.interval.FromSeconds(30)
    after.timeout.FromSeconds(10)
    after.overlap = pb.OVERLAP_POLICY_SKIP
    assert spec_diff.changes(_spec(), after) == [
        "schedule",
        "args",
        "image",
        "env",
        "timeout",
        "overlap",
    ]
    assert spec_diff.summary(_spec(), after) == "schedule, args, image, env, timeout, overlap"


def test_a_schedule_of_another_kind_or_zone_is_a_schedule_change() -> None:
    cron = pb.JobSpec(name="report", task=pb.Task(command=["echo", "hi"]))
    cron.schedule.cron.expression = "0 * * * *"
    assert spec_diff.changes(_spec(), cron) == ["schedule"]
    zoned = pb.JobSpec()
    zoned.CopyFrom(cron)
    zoned.schedule.cron.time_zone = "Europe/Paris"
    assert spec_diff.changes(cron, zoned) == ["schedule"]


def test_secrets_differ_by_name_only_and_env_by_value() -> None:
    # The history has no secret values: a new value under the same name is no change.
    assert (
        spec_diff.changes(_spec(secret_env={"K": "<redacted>"}), _spec(secret_env={"K": ""})) == []
    )
    assert spec_diff.changes(_spec(), _spec(secret_env={"K": "<redacted>"})) == ["secrets"]
    assert spec_diff.changes(_spec(env={"A": "1"}), _spec(env={"A": "2"})) == ["env"]


def test_unset_fields_equal_their_defaults() -> None:
    explicit = _spec()
    explicit.max_attempts = 1
    explicit.overlap = pb.OVERLAP_POLICY_ALLOW
    explicit.catch_up.policy = pb.CATCH_UP_POLICY_ALL
    explicit.retry_backoff.FromSeconds(1)
    assert spec_diff.changes(_spec(), explicit) == []
    explicit.max_attempts = 3
    explicit.catch_up.window.FromSeconds(30)
    assert spec_diff.changes(_spec(), explicit) == ["attempts", "catch-up"]


def test_summaries_of_a_page_newest_first() -> None:
    one, two, three = _spec(), _spec(env={"A": "1"}), _spec(env={"A": "1"}, image="x")
    assert spec_diff.summaries([three, two, one], oldest_complete=True) == [
        "image",
        "env",
        "created",
    ]
    # The oldest of a page that is not the last has its predecessor on the next page.
    assert spec_diff.summaries([three, two], oldest_complete=False) == ["image", ""]
    assert spec_diff.summaries([], oldest_complete=True) == []


def test_task_line() -> None:
    assert spec_diff.task_line(pb.Task(command=["sh", "-c"], args=["echo 'a b'"])) == (
        "sh -c 'echo '\"'\"'a b'\"'\"''"
    )
    assert spec_diff.task_line(pb.Task(binary="sha256:ab", args=["-v"])) == "sha256:ab -v"
    assert spec_diff.task_line(pb.Task(image="alpine:3")) == "alpine:3"
    assert spec_diff.task_line(pb.Task(command=["true"], image="alpine:3")) == "true (alpine:3)"
    assert spec_diff.task_line(pb.Task()) == "-"


def test_a_revision_reads_back_as_the_spec_it_kept_without_secret_values() -> None:
    spec = JobSpec(
        name="full",
        task=Task(
            command=("run",),
            args=("--all",),
            env={"MODE": "fast"},
            image="alpine:3",
            working_dir="/srv",
            resources=Resources(cpu_limit="250m"),
            secret_env={"API_KEY": "hunter2"},
            kubernetes=KubernetesJob(namespace="batch", owner_name="sj", owner_uid="u-1"),
        ),
        schedule=Cron("0 3 * * *", "Europe/Berlin"),
        bounds=Bounds(start=datetime(2026, 1, 1, tzinfo=UTC)),
        retry=RetryPolicy(max_attempts=3, backoff=timedelta(seconds=5)),
        timeout=timedelta(minutes=2),
        overlap=Overlap.SKIP,
        catch_up=CatchUp(CatchUpPolicy.SKIP, timedelta(seconds=30)),
    )
    stored = job_columns.spec_json(spec).obj
    assert "hunter2" not in str(stored)
    read = revisions.spec_from_json(stored)
    assert read.task.secret_env == {"API_KEY": ""}
    assert convert.spec_to_pb(read) == convert.spec_to_pb(spec)


def test_a_revision_from_before_resources_and_secrets_reads_back_with_defaults() -> None:
    # What the first releases wrote (job_columns.spec_json before tenancy): no resources, no
    # secret names, no kubernetes.
    old = {
        "name": "old",
        "command": ["true"],
        "args": [],
        "image": "",
        "working_dir": "",
        "binary": None,
        "max_attempts": 1,
        "overlap": "allow",
        "catch_up": "all",
        "env": {},
        "schedule": {"kind": "every", "interval_seconds": 60.0, "jitter_seconds": 0.0},
        "retry_backoff_seconds": 1.0,
        "timeout_seconds": None,
        "catch_up_window_seconds": None,
    }
    read = revisions.spec_from_json(old)
    assert read == JobSpec(
        name="old", task=Task(command=("true",)), schedule=Every(timedelta(seconds=60))
    )
