"""The leaderboard's page: the top K keys of an event type over a window the user picks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.console.case_pages.common import CasePage, Context, Values, rpc
from hourglass.console.client import ApiError

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


async def show(ctx: Context) -> Values:
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as lb
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as lb_grpc

    query = ctx.request.query
    window = query.get("window", "24h")
    window = window if window in WINDOWS else "24h"
    event_type = query.get("type", "page_view")
    k_text = query.get("k", "10")
    values: Values = {
        "event_type": event_type,
        "k": k_text,
        "window": window,
        "windows": list(WINDOWS),
        "entries": [],
        "error": "",
        "error_field": "",
    }
    try:
        k = int(k_text)
    except ValueError:
        values.update(error=f"k: {k_text!r} is not a number", error_field="k")
        return values
    end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start, stop = Timestamp(), Timestamp()
    start.FromDatetime(end - timedelta(seconds=WINDOWS[window]))
    stop.FromDatetime(end)
    try:
        answer = await rpc(
            lb_grpc.LeaderboardStub(ctx.channel).FetchLeaderboard,
            lb.FetchLeaderboardRequest(event_type=event_type, k=k, start=start, end=stop),
            token=ctx.token,
        )
    except ApiError as error:
        values.update(error=error.message, error_field=error.field)
        return values
    top = max((entry.count for entry in answer.entries), default=0)
    values["entries"] = [
        {"key": entry.key, "count": entry.count, "width": entry.count / top * 100 if top else 0}
        for entry in answer.entries
    ]
    return values


PAGE = CasePage("leaderboard", "Leaderboard", show)
