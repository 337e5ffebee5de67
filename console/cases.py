"""The case pages: one entry per case in PAGES, shown once `hourglass console --case-server
<case>=HOST:PORT` (or `hourglass dev --case <case>`) says where its server is.

Adding a case's page is a small entry: a function that gets the request, a channel to the
case's gRPC server and the user's token, and returns a template and its values; plus the
template `case_<name>.html`. The user's token travels with every call, as with the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.console.client import api_error

Values = dict[str, Any]
Show = Callable[[web.Request, grpc.aio.Channel, str], Awaitable[Values]]


@dataclass(frozen=True)
class CasePage:
    name: str
    title: str
    show: Show


LEADERBOARD_WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


async def leaderboard(request: web.Request, channel: grpc.aio.Channel, token: str) -> Values:
    """The top K keys of an event type over a window the user picks."""
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as lb
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as lb_grpc

    query = request.query
    window = query.get("window", "24h")
    window = window if window in LEADERBOARD_WINDOWS else "24h"
    event_type = query.get("type", "page_view")
    k_text = query.get("k", "10")
    values: Values = {
        "event_type": event_type,
        "k": k_text,
        "window": window,
        "windows": list(LEADERBOARD_WINDOWS),
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
    start.FromDatetime(end - timedelta(seconds=LEADERBOARD_WINDOWS[window]))
    stop.FromDatetime(end)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        answer = await lb_grpc.LeaderboardStub(channel).FetchLeaderboard(
            lb.FetchLeaderboardRequest(event_type=event_type, k=k, start=start, end=stop),
            metadata=metadata,
            timeout=15,
        )
    except grpc.aio.AioRpcError as exc:
        error = api_error(exc)
        values.update(error=error.message, error_field=error.field)
        return values
    top = max((entry.count for entry in answer.entries), default=0)
    values["entries"] = [
        {"key": entry.key, "count": entry.count, "width": entry.count / top * 100 if top else 0}
        for entry in answer.entries
    ]
    return values


PAGES = {page.name: page for page in [CasePage("leaderboard", "Leaderboard", leaderboard)]}


class CaseServers:
    """Channels to the configured cases' servers, opened on first use."""

    def __init__(self, servers: dict[str, str]) -> None:
        unknown = sorted(set(servers) - set(PAGES))
        if unknown:
            raise ValueError(
                f"no console page for {', '.join(unknown)} (known: {', '.join(PAGES)})"
            )
        self._servers = servers
        self._channels: dict[str, grpc.aio.Channel] = {}

    def names(self) -> list[tuple[str, str]]:
        return [(name, PAGES[name].title) for name in self._servers]

    def channel(self, name: str) -> grpc.aio.Channel:
        if name not in self._channels:
            self._channels[name] = grpc.aio.insecure_channel(self._servers[name])
        return self._channels[name]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/cases/{case}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        from hourglass.console import app as console

        name = request.match_info["case"]
        if name not in self._servers:
            raise web.HTTPNotFound(text=f"no case {name!r} here")
        token = console.session_of(request).token
        values = await PAGES[name].show(request, self.channel(name), token)
        return console.render(request, f"case_{name}.html", title=PAGES[name].title, **values)
