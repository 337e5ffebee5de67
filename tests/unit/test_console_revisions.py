"""The console's Revisions rows from a ListJobRevisions answer (console/revisions.py): no
server needed."""

from __future__ import annotations

from hourglass.console import revisions
from hourglass.v1 import scheduler_pb2 as pb


def _revision(number: int, every: int, argv: list[str]) -> pb.JobRevision:
    spec = pb.JobSpec(name="r", task=pb.Task(command=argv[:1], args=argv[1:]))
    spec.schedule.every.interval.FromSeconds(every)
    revision = pb.JobRevision(revision=number, spec=spec)
    revision.created_at.FromSeconds(1_800_000_000 + number)
    return revision


def test_the_last_page_ends_with_created() -> None:
    answer = pb.ListJobRevisionsResponse(
        revisions=[_revision(2, 60, ["echo", "two"]), _revision(1, 60, ["echo", "one"])]
    )
    shown = revisions.rows(answer)
    assert [(r.number, r.task, r.changes) for r in shown.rows] == [
        (2, "echo two", "args"),
        (1, "echo one", "created"),
    ]
    assert shown.rows[0].schedule == "every 1m" and shown.rows[0].at is not None
    assert not shown.more and not shown.error


def test_a_page_with_older_revisions_leaves_its_oldest_unexplained() -> None:
    answer = pb.ListJobRevisionsResponse(
        revisions=[_revision(9, 30, ["true"]), _revision(8, 60, ["true"])],
        next_page_token="cjg=",
    )
    shown = revisions.rows(answer)
    assert [r.changes for r in shown.rows] == ["schedule", ""] and shown.more
