"""ListJobRevisions: every spec a job has had, newest first, a page at a time.

Kept out of service.py, which only registers it. Authorization is GetJobStatus's: the job must
be the caller's namespace's, and another namespace's job reads as one that does not exist.
"""

from __future__ import annotations

import base64
import binascii

from hourglass.api import convert, validation
from hourglass.store import db, jobs, revisions
from hourglass.v1 import scheduler_pb2 as pb

DEFAULT_PAGE = 50
MAX_PAGE = 500
_PREFIX = "r"


def page_token(number: int) -> str:
    """The token of the page after the one that ends at revision `number`. Opaque to clients;
    it carries no job, so one job's token on another job only pages that job's revisions."""
    return base64.urlsafe_b64encode(f"{_PREFIX}{number}".encode()).decode()


def before(token: str) -> int | None:
    """The revision a page token names (the next page holds those below it); None: first page."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, binascii.Error, UnicodeError):
        text = ""
    digits = text.removeprefix(_PREFIX)
    if not text.startswith(_PREFIX) or not digits.isascii() or not digits.isdigit():
        raise validation.Invalid("page_token", "is not a token this server returned")
    number = int(digits)
    if not 1 < number <= 2**31 - 1:
        raise validation.Invalid("page_token", "is not a token this server returned")
    return number


async def list_page(
    pool: db.Pool, request: pb.ListJobRevisionsRequest, *, namespace: str
) -> pb.ListJobRevisionsResponse | None:
    """The page the request asks for; None when the namespace has no such job. Raises
    validation.Invalid naming the field for a bad job_id, page_size or page_token."""
    job_id = validation.job_id(request.job_id)
    limit = validation.page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
    after = before(request.page_token)
    async with pool.connection() as conn:
        if await jobs.get(conn, job_id, namespace=namespace) is None:
            return None
        page = await revisions.list_page(conn, job_id, limit=limit + 1, before=after)
    token = ""
    if len(page) > limit:
        page = page[:limit]
        token = page_token(page[-1].number)
    return pb.ListJobRevisionsResponse(
        revisions=[
            pb.JobRevision(
                revision=revision.number,
                spec=convert.spec_to_pb(revision.spec),
                created_at=convert.timestamp(revision.created_at),
            )
            for revision in page
        ],
        next_page_token=token,
    )
