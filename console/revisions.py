"""The Job page's Revisions section: the job's newest specs (ListJobRevisions), each with
what it changed from the one before (hourglass.spec_diff, as `hourglass revisions` says it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hourglass import spec_diff
from hourglass.console import views
from hourglass.console.client import Api, ApiError
from hourglass.v1 import scheduler_pb2 as pb

# The newest this many; `hourglass revisions JOB --limit N` shows more.
SHOWN = 20


@dataclass(frozen=True)
class Row:
    number: int
    at: datetime | None
    schedule: str
    task: str
    # "created", "schedule, env", "no change"; "" for the oldest shown when older ones exist.
    changes: str


@dataclass(frozen=True)
class Revisions:
    rows: list[Row] = field(default_factory=list)
    # Older revisions exist beyond the ones shown.
    more: bool = False
    # Why none could be shown (the API refused); "" otherwise.
    error: str = ""


def rows(answer: pb.ListJobRevisionsResponse) -> Revisions:
    revisions = list(answer.revisions)
    more = bool(answer.next_page_token)
    changes = spec_diff.summaries([r.spec for r in revisions], oldest_complete=not more)
    return Revisions(
        rows=[
            Row(
                number=revision.revision,
                at=views.instant(revision.created_at),
                schedule=views.schedule_words(revision.spec.schedule),
                task=spec_diff.task_line(revision.spec.task),
                changes=changed,
            )
            for revision, changed in zip(revisions, changes, strict=True)
        ],
        more=more,
    )


async def newest(api: Api, job_id: str, *, token: str) -> Revisions:
    """The newest revisions of the job. A refusal does not fail the Job page: the section says
    why instead (GetJobStatus, called beside it, decides whether the page exists)."""
    try:
        answer = await api.call(
            "ListJobRevisions",
            pb.ListJobRevisionsRequest(job_id=job_id, page_size=SHOWN),
            token=token,
        )
    except ApiError as exc:
        return Revisions(error=exc.message)
    return rows(answer)
