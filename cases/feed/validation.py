"""Turns Feed requests into plain values, or says which field is wrong and why.

Every check raises Invalid("<field>", "<reason>"); the gRPC service answers it with
INVALID_ARGUMENT and "<field>: <reason>" before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hourglass.cases import Invalid as Invalid
from hourglass.cases.feed import ids
from hourglass.cases.feed.v1 import feed_pb2 as pb

MAX_TEXT = 280
MAX_MEDIA = 4
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
_HANDLE = re.compile(r"[a-z0-9_]{1,32}")
_CURSOR = re.compile(r"[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Page:
    user: int
    cursor: int | None
    limit: int


def user_id(value: int, field: str = "user") -> int:
    if value <= 0:
        raise Invalid(field, "is required (a user id, as CreateUser returned it)")
    return value


def handle(request: pb.CreateUserRequest) -> str:
    if not request.handle:
        raise Invalid("handle", "is required")
    if not _HANDLE.fullmatch(request.handle):
        raise Invalid("handle", "must be 1 to 32 of a-z 0-9 _")
    return request.handle


def follow(request: pb.FollowRequest) -> tuple[int, int]:
    user = user_id(request.user)
    followee = user_id(request.followee, "followee")
    if user == followee:
        raise Invalid("followee", "a user cannot follow themselves")
    return user, followee


def post(request: pb.CreatePostRequest) -> tuple[int, str, list[int]]:
    user = user_id(request.user)
    text = request.text
    if len(text) > MAX_TEXT:
        raise Invalid("text", f"must be at most {MAX_TEXT} characters")
    if _CONTROL.search(text):
        raise Invalid("text", "must not contain control characters (newlines and tabs are fine)")
    media = list(request.media)
    if not text.strip() and not media:
        raise Invalid("text", "is required when the post has no media")
    if len(media) > MAX_MEDIA:
        raise Invalid("media", f"at most {MAX_MEDIA} per post")
    for i, upload in enumerate(media):
        if upload <= 0:
            raise Invalid(f"media[{i}]", "must be an upload id")
        if upload in media[:i]:
            raise Invalid(f"media[{i}]", "is given twice")
    return user, text, media


def post_id(value: int, field: str = "post") -> int:
    if value <= 0:
        raise Invalid(field, "is required (a post id)")
    return value


def page(request: pb.TimelineRequest) -> Page:
    user = user_id(request.user)
    cursor: int | None = None
    if request.cursor:
        if not _CURSOR.fullmatch(request.cursor) or not 0 < int(request.cursor) < 2**63:
            raise Invalid("cursor", "must be a next_cursor a previous page returned")
        cursor = int(request.cursor)
        if cursor >> (ids.WORKER_BITS + ids.SEQUENCE_BITS) > ids.MAX_TIME:
            raise Invalid("cursor", "must be a next_cursor a previous page returned")
    limit = request.limit or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit", f"must be between 1 and {MAX_LIMIT} (0 means {DEFAULT_LIMIT})")
    return Page(user, cursor, limit)


def upload_id(value: int) -> int:
    if value <= 0:
        raise Invalid("upload", "is required (an upload id, as StartUpload returned it)")
    return value


def chunk(request: pb.PutChunkRequest) -> tuple[int, int, int, bytes]:
    user = user_id(request.user)
    upload = upload_id(request.upload)
    if request.offset < 0:
        raise Invalid("offset", "must not be negative")
    if not request.data:
        raise Invalid("data", "is required (1 byte to 1 MiB)")
    return user, upload, request.offset, request.data


def read(request: pb.ReadMediaRequest) -> tuple[int, int, int, int]:
    user = user_id(request.user)
    upload = upload_id(request.upload)
    if request.offset < 0:
        raise Invalid("offset", "must not be negative")
    length = request.length or (1 << 20)
    if not 1 <= length <= 1 << 20:
        raise Invalid("length", "must be between 1 and 1048576 (0 means 1 MiB)")
    return user, upload, request.offset, length
