"""The case pages' router: one entry per case in PAGES (a module each, in case_pages/),
shown once `hourglass console --case-server <case>=HOST:PORT` (or `hourglass dev --case
<case>`) says where its server is.

Adding a case's page is a module with a CasePage: `show` gets a Context (the request, a
channel to the case's gRPC server, the session) and returns the template's values, and an
optional `act` handles the page's form posts; plus the template `case_<name>.html`. The
user's token travels with every call, as with the API. A case that is not configured here
answers a page that says so (404); one whose server does not answer, a page that says that
(503): never a 500.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from aiohttp import web

from hourglass.console.case_pages import feed, filesync, leaderboard, metrics, shortener
from hourglass.console.case_pages.common import CaseDown, CasePage, Context

# How long a page waits for its case's server to take a connection before it says that the
# server does not answer; and the longest pause between two tries to reconnect (gRPC's default
# grows to two minutes, which would leave a page saying so long after the server is back).
READY_SECONDS = 3.0
CHANNEL_OPTIONS = [("grpc.max_reconnect_backoff_ms", 5_000)]

PAGES: dict[str, CasePage] = {
    page.name: page
    for page in (leaderboard.PAGE, shortener.PAGE, filesync.PAGE, metrics.PAGE, feed.PAGE)
}


async def _connected(channel: grpc.aio.Channel) -> None:
    """Returns once the channel is connected; CaseDown when it fails to connect, or has not
    within READY_SECONDS."""
    ready, failed = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    state = channel.get_state(try_to_connect=True)
    while state != ready:
        if state == failed:
            raise CaseDown("it refuses connections, or cannot be reached")
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), deadline - loop.time())
        except TimeoutError:
            raise CaseDown(f"no connection within {READY_SECONDS:g}s") from None
        state = channel.get_state(try_to_connect=True)


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
            self._channels[name] = grpc.aio.insecure_channel(
                self._servers[name], options=CHANNEL_OPTIONS
            )
        return self._channels[name]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/cases/{case}", self.page)
        app.router.add_post("/cases/{case}", self.post)

    def _context(self, request: web.Request) -> tuple[CasePage, Context] | web.Response:
        from hourglass.console import app as console

        name = request.match_info["case"]
        if name not in PAGES:
            return console.render(
                request, "error.html", status=404, error=f"There is no case page {name!r}."
            )
        page = PAGES[name]
        if name not in self._servers:
            return console.render(
                request,
                "case_down.html",
                status=404,
                title=page.title,
                case=name,
                reason="",
                address="",
            )
        return page, Context(request, self.channel(name), console.session_of(request))

    async def page(self, request: web.Request) -> web.Response:
        return await self._answer(request, post=False)

    async def post(self, request: web.Request) -> web.Response:
        return await self._answer(request, post=True)

    async def _answer(self, request: web.Request, *, post: bool) -> web.Response:
        from hourglass.console import app as console

        found = self._context(request)
        if isinstance(found, web.Response):
            return found
        page, ctx = found
        status, errors = 200, {}
        try:
            # Up front, so that a page which calls nothing yet (no link kept, no query asked)
            # still says that its server is down, before anyone fills a form.
            await _connected(ctx.channel)
            if post:
                if page.act is None:
                    raise web.HTTPMethodNotAllowed("POST", ["GET"])
                done = await page.act(ctx)
                if isinstance(done, str):
                    raise web.HTTPSeeOther(done)
                status, errors = 400, done
            values = await page.show(ctx)
        except CaseDown as exc:
            return console.render(
                request,
                "case_down.html",
                status=503,
                title=page.title,
                case=page.name,
                reason=str(exc),
                address=self._servers[page.name],
            )
        values.update(errors)
        return console.render(
            request, f"case_{page.name}.html", status=status, title=page.title, **values
        )
