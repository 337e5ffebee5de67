"""The shortener's page: its links, each with a chart of its visits by day, and one link's
statistics (visits by day, referrer and user-agent class).

The shortener's API lists no links (its keys are unguessable on purpose, and it has no
notion of who made a key), so the page shows the links made or looked up in this session:
making a link here keeps its key and its delete token with the session, and looking a key
up adds it. The counts come from the shortener's Stats call on every view.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from hourglass.console.case_pages import charts
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

CASE = "shortener"
# Links a session keeps (the oldest is forgotten past this), and days each chart shows.
KEEP = 20
ROW_DAYS = 14
DETAIL_DAYS = 30
# The Shorten request's fields -> the form's inputs.
INPUTS = {"url": "url", "alias": "alias"}


def _stub(ctx: Context) -> Any:
    from hourglass.cases.shortener.v1 import shortener_pb2_grpc as pb_grpc

    return pb_grpc.ShortenerStub(ctx.channel)


async def _stats(ctx: Context, key: str) -> Any:
    from hourglass.cases.shortener.v1 import shortener_pb2 as pb

    return await rpc(_stub(ctx).Stats, pb.StatsRequest(key=key), token=ctx.token)


def _days(stats: Any) -> dict[str, int]:
    return {count.name: count.count for count in stats.days}


async def _row(ctx: Context, key: str, today: date) -> Values:
    """One kept link and its visits of the last ROW_DAYS days; "gone" once purged."""
    try:
        stats = await _stats(ctx, key)
    except ApiError as exc:
        return {"key": key, "gone": exc.message}
    chart = charts.day_bars(_days(stats), last=today, count=ROW_DAYS, width=140, height=24)
    return {"key": key, "gone": "", "url": stats.url, "total": stats.total, "chart": chart}


async def show(ctx: Context) -> Values:
    kept = ctx.kept(CASE)
    key = ctx.request.query.get("key", "").strip()
    today = datetime.now(UTC).date()
    values: Values = {"key": key, "selected": None, **no_error()}
    if key:
        try:
            stats = await _stats(ctx, key)
        except ApiError as exc:
            values.update(error=exc.message, error_input="key")
        else:
            mine = kept.get(key) or {}
            remember(kept, key, mine, limit=KEEP)
            values["selected"] = {
                "stats": stats,
                "created": stats.created_at.ToDatetime(UTC) if stats.created_at.seconds else None,
                "delete_token": mine.get("delete_token", ""),
                "chart": charts.day_bars(
                    _days(stats), last=today, count=DETAIL_DAYS, width=600, height=120
                ),
            }
    keys = list(reversed(kept))
    values["links"] = await asyncio.gather(*(_row(ctx, k, today) for k in keys))
    return values


async def act(ctx: Context) -> str | Values:
    """Shortens the form's URL: the new link's page, or the shortener's refusal beside its
    input (nothing stored: the shortener checks before it stores)."""
    from hourglass.cases.shortener.v1 import shortener_pb2 as pb

    form = {name: str(value) for name, value in (await ctx.request.post()).items()}
    request = pb.ShortenRequest(
        url=form.get("url", "").strip(), alias=form.get("alias", "").strip()
    )
    try:
        made = await rpc(_stub(ctx).Shorten, request, token=ctx.token)
    except ApiError as exc:
        return refused(exc, INPUTS, form)
    remember(ctx.kept(CASE), made.key, {"delete_token": made.delete_token}, limit=KEEP)
    return f"/cases/{CASE}?{urlencode({'key': made.key})}"


PAGE = CasePage(CASE, "Shortener", show, act)
