"""The console's aiohttp application: configuration, the security middleware every response
goes through, and serving.

Security, in one place (docs/architecture.md, "The console"):
- the session cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's
  page sends it), Path=/, and Secure with the `__Host-` prefix when served over TLS;
- every POST must carry the session's CSRF token (a form field, or the X-CSRF-Token header
  htmx sends), compared in constant time, and an Origin header, when present, must be ours;
- every response has a strict Content-Security-Policy: scripts, styles and connections only
  from this origin, no inline script or style, no framing, no plugins, forms post only here;
- Jinja2 autoescapes every template, so nothing an API answer holds becomes markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from hourglass.console import pages_auth, pages_jobs, pages_runs
from hourglass.console.cases import CaseServers
from hourglass.console.client import Api
from hourglass.console.sessions import Session, Sessions

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# Pages anyone may see without a session.
PUBLIC = ("/signin", "/static/", "/healthz")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Config:
    server: str
    listen: str = "127.0.0.1:8642"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    secure_cookies: bool = False
    # case name -> its gRPC HOST:PORT, for the case pages.
    case_servers: dict[str, str] = field(default_factory=dict)

    @property
    def cookie(self) -> str:
        return "__Host-hourglass" if self.secure_cookies else "hourglass"


CONFIG = web.AppKey("config", Config)
API = web.AppKey("api", Api)
SESSIONS = web.AppKey("sessions", Sessions)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
CASES = web.AppKey("cases", CaseServers)
SESSION = web.RequestKey("session", Session)


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment


def session_of(request: web.Request) -> Session:
    return request[SESSION]


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The session and CSRF checks before every handler."""
    return await _checked(request, handler)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, also errors, static files and event streams (set as it is sent)."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on our
    # own form posts, which the Origin check refuses; other sites still learn nothing.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    session = app[SESSIONS].get(request.cookies.get(app[CONFIG].cookie, ""))
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin request refused")
    if session is None:
        if request.path.startswith(PUBLIC):
            return await handler(request)
        if request.method in ("GET", "HEAD") and not request.path.startswith("/events/"):
            raise web.HTTPSeeOther(f"/signin?next={request.rel_url.path_qs}")
        raise web.HTTPUnauthorized(text="sign in first")
    request[SESSION] = session
    if request.method not in ("GET", "HEAD"):
        given = request.headers.get("X-CSRF-Token", "")
        if not given:
            form = await request.post()
            given = str(form.get("_csrf", ""))
        if not session.csrf_matches(given):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
    return await handler(request)


def render(
    request: web.Request, template: str, *, status: int = 200, **values: object
) -> web.Response:
    session = request.get(SESSION)
    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session is not None else "",
            path=request.path,
            cases=request.app[CASES].names(),
            **values,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[security], client_max_size=64 * 1024)
    app[CONFIG] = config
    app.on_response_prepare.append(_headers)
    app[API] = Api(
        config.server, tls_ca=config.tls_ca, tls_cert=config.tls_cert, tls_key=config.tls_key
    )
    app[SESSIONS] = Sessions()
    app[TEMPLATES] = templates()
    app[CASES] = CaseServers(config.case_servers)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    pages_auth.add_routes(app)
    pages_jobs.add_routes(app)
    pages_runs.add_routes(app)
    app[CASES].add_routes(app)

    async def close(app: web.Application) -> None:
        await app[API].close()
        await app[CASES].close()

    app.on_cleanup.append(close)
    return app


async def serve(
    config: Config, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serves until `stop` is set; `on_ready` gets the URL once it listens."""
    host, _, port = config.listen.rpartition(":")
    runner = web.AppRunner(make_app(config), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
    await site.start()
    server: Any = site._server
    sockets = server.sockets if server is not None else ()
    bound = sockets[0].getsockname()[1] if sockets else int(port)
    if on_ready is not None:
        on_ready(f"http://{host or '127.0.0.1'}:{bound}/")
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
