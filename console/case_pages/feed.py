"""The Feed's page: pick a user (made here, or opened by id), read their home timeline newest
first a page at a time, post as them, and follow or unfollow another user.

The Feed has no call that lists users or says who follows whom (it is a service behind an
app, not an app), so the page keeps the users made or opened in this session, with the
handles it was told, as the shortener's page keeps links; everything else is read from the
Feed on every view. The Feed's calls name no caller (a user is an id in the request), so the
scheduler's token travels with them as with every case, and nothing else is needed.

Fan-out is asynchronous: a post reaches its author's followers' timelines moments after it
is made, or at once for a hot author's (merged in on read). The Feed's API does not say how
far behind the fan-out is; its server's metrics do (`hourglass_feed_fanout_lag_seconds`,
`hourglass_feed_fanout_backlog`), and the page says so rather than guess.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from hourglass.console.case_pages.common import (
    CasePage,
    Context,
    Values,
    no_error,
    refused,
    remember,
    rpc,
)
from hourglass.console.client import ApiError

CASE = "feed"
# Users a session keeps, posts a timeline page shows, and the user's own posts shown.
KEEP = 20
PAGE_SIZE = 20
OWN_POSTS = 5
MAX_ID = 2**63 - 1
# Each form's request fields -> its inputs ("form": above the forms).
CREATE_INPUTS = {"handle": "handle"}
POST_INPUTS = {"text": "text", "media": "text"}
FOLLOW_INPUTS = {"followee": "followee"}
TIMELINE_INPUTS = {"user": "open_user"}


def parse_id(text: str, field: str) -> int | str:
    """`text` as a user id for the request, or the error to show beside its input: what the
    Feed cannot be asked (not a number, or beyond int64) is refused here in its words; an
    empty or non-positive id goes to the Feed, whose own refusal ("<field>: is required")
    is the one shown."""
    text = text.strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        return f"{field}: {text[:40]!r} is not a user id (a number, as CreateUser returned it)"
    if value > MAX_ID:
        return f"{field}: {text[:40]!r} is not a user id (at most {MAX_ID})"
    return max(value, 0)


def author(users: dict[str, str], user_id: int) -> str:
    """How a post's author is shown: "@handle" when this session knows it, else the id."""
    handle = users.get(str(user_id), "")
    return f"@{handle}" if handle else f"user {user_id}"


def _stub(ctx: Context) -> Any:
    from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc

    return pb_grpc.FeedStub(ctx.channel)


def _notice(ctx: Context) -> dict[str, Any]:
    """What the last form did ("@ana now follows user 12"), shown once."""
    return ctx.kept(CASE + ":notice")


def _posts(users: dict[str, str], timeline: Any) -> list[Values]:
    return [
        {
            "id": post.id,
            "author_id": post.author,
            "author": author(users, post.author),
            "text": post.text,
            "media": len(post.media),
            "at": post.created_at.ToDatetime(UTC),
        }
        for post in timeline.posts
    ]


async def show(ctx: Context) -> Values:
    from hourglass.cases.feed.v1 import feed_pb2 as pb

    users = ctx.kept(CASE)
    query = ctx.request.query
    cursor = query.get("cursor", "")
    values: Values = {
        "users": [{"id": key, "handle": handle} for key, handle in reversed(users.items())],
        "user": 0,
        "handle": "",
        "cursor": cursor,
        "timeline": [],
        "next_cursor": "",
        "own": [],
        "notice": _notice(ctx).pop("text", ""),
        "page_size": PAGE_SIZE,
        **no_error(),
    }
    if "user" not in query:
        return values
    user = parse_id(query["user"], "user")
    if isinstance(user, str):
        values.update(error=user, error_input="open_user", form={"open_user": query["user"]})
        return values
    stub = _stub(ctx)
    try:
        home = await rpc(
            stub.GetHomeTimeline,
            pb.TimelineRequest(user=user, cursor=cursor, limit=PAGE_SIZE),
            token=ctx.token,
        )
        own = await rpc(
            stub.GetUserPosts, pb.TimelineRequest(user=user, limit=OWN_POSTS), token=ctx.token
        )
    except ApiError as exc:
        values.update(refused(exc, TIMELINE_INPUTS, {"open_user": query["user"]}))
        return values
    remember(users, str(user), users.get(str(user), ""), limit=KEEP)
    values["users"] = [{"id": key, "handle": h} for key, h in reversed(users.items())]
    values.update(
        user=user,
        handle=users[str(user)],
        timeline=_posts(users, home),
        next_cursor=home.next_cursor,
        own=_posts(users, own),
    )
    return values


async def act(ctx: Context) -> str | Values:
    """Makes a user, posts as the page's user, or follows/unfollows another: the user's page
    on success (with a notice of what changed), or the Feed's refusal beside its input
    (nothing stored: the Feed checks every field before it stores)."""
    from hourglass.cases.feed.v1 import feed_pb2 as pb

    form = {name: str(value) for name, value in (await ctx.request.post()).items()}
    users, stub, action = ctx.kept(CASE), _stub(ctx), form.get("action", "")
    if action == "create":
        handle = form.get("handle", "").strip()
        try:
            made = await rpc(stub.CreateUser, pb.CreateUserRequest(handle=handle), token=ctx.token)
        except ApiError as exc:
            return refused(exc, CREATE_INPUTS, form)
        remember(users, str(made.id), made.handle, limit=KEEP)
        _notice(ctx)["text"] = f"Made @{made.handle}, user {made.id}."
        return f"/cases/{CASE}?{urlencode({'user': made.id})}"
    user = parse_id(form.get("user", ""), "user")
    if isinstance(user, str):
        return {"error": user, "error_input": "form", "form": form}
    who = author(users, user)
    if action == "post":
        request = pb.CreatePostRequest(user=user, text=form.get("text", ""))
        try:
            post = await rpc(stub.CreatePost, request, token=ctx.token)
        except ApiError as exc:
            return refused(exc, POST_INPUTS, form)
        _notice(ctx)["text"] = (
            f"{who} posted (post {post.id}): it reaches their followers' timelines as the"
            " fan-out writes it, within moments."
        )
    elif action in ("follow", "unfollow"):
        followee = parse_id(form.get("followee", ""), "followee")
        if isinstance(followee, str):
            return {"error": followee, "error_input": "followee", "form": form}
        method = stub.Follow if action == "follow" else stub.Unfollow
        try:
            answer = await rpc(
                method, pb.FollowRequest(user=user, followee=followee), token=ctx.token
            )
        except ApiError as exc:
            return refused(exc, FOLLOW_INPUTS, form)
        them = author(users, followee)
        if action == "follow":
            done = "now follows" if answer.changed else "already followed"
        else:
            done = "no longer follows" if answer.changed else "was not following"
        _notice(ctx)["text"] = f"{who} {done} {them}."
    else:
        return {"error": f"action: {action[:20]!r} is not a form of this page",
                "error_input": "form", "form": form}  # fmt: skip
    return f"/cases/{CASE}?{urlencode({'user': user})}"


PAGE = CasePage(CASE, "Feed", show, act)
