"""The read service: HTTP, for browsers and anything that follows a link.

    GET /<key>       -> 301/302 (spec.redirect) with Location; 404 unknown; 410 expired,
                        deleted or out of visits
    GET /p/<key>     -> the paste, rendered as an HTML page (escaped) or, with
                        ?format=raw, its bytes (text/plain or a download)
    GET /healthz     -> 200 when PostgreSQL answers, else 503
    bad input        -> 400 {"error": "key: must be 1 to 64 of ...", "field": "key"}

It runs on aiohttp (already installed for the operator: kopf is built on it), on the server's
own event loop: a redirect served from the near cache is a dict lookup, a list append (the
visit, flushed to Redis later by visits.Recorder) and a response, with no thread hand-off.
"""

from __future__ import annotations

import html
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from hourglass import artifacts
from hourglass.cases.shortener import blobs, metrics, validation

if TYPE_CHECKING:
    from hourglass.cases.shortener.cache import Resolver, Target
    from hourglass.cases.shortener.links import Shortener
    from hourglass.cases.shortener.visits import Recorder

log = logging.getLogger(__name__)

# Characters kept as they are in a Location header; anything else (non-ASCII) is
# percent-encoded, and "%" stays so existing escapes do too.
_LOCATION_SAFE = "!#$%&'()*+,/:;=?@[]~-._"
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f8fa;padding:1em;
overflow:auto}}</style></head>
<body><p>{meta} &middot; <a href="?format=raw">raw</a></p>{body}</body></html>
"""


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    metrics.answers.labels(str(status)).inc()
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def location(url: str) -> str:
    return quote(url, safe=_LOCATION_SAFE)


def render(key: str, body: bytes, target: Target) -> str:
    """The paste as an HTML page; every byte of the paste is escaped."""
    syntax = target.syntax or "text"
    if target.binary:
        shown = f"<p>binary, {len(body)} bytes</p>"
    else:
        text = body.decode("utf-8", errors="replace")
        shown = f'<pre class="language-{html.escape(syntax)}">{html.escape(text)}</pre>'
    meta = f"{html.escape(key)} &middot; {html.escape(syntax)} &middot; {len(body)} bytes"
    return _PAGE.format(title=html.escape(key), meta=meta, body=shown)


class HttpFace:
    def __init__(
        self,
        shortener: Shortener,
        resolver: Resolver,
        recorder: Recorder,
        *,
        redirect: int,
        clock: Any = time,
    ) -> None:
        self.shortener = shortener
        self.resolver = resolver
        self.recorder = recorder
        self.redirect = redirect
        self.time = clock.time
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/p/{key}", self.paste)
        app.router.add_get("/{key}", self.follow)
        app.router.add_route("*", "/{tail:.*}", self.other)
        return app

    async def start(self, listen: str) -> HttpFace:
        host, _, port = listen.rpartition(":")
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") or "0.0.0.0", int(port), backlog=1024)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def other(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return error(405, f"method {request.method} is not served; only GET")
        return error(404, f"no such path {request.path!r}")

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            async with self.shortener.pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            return error(503, f"unavailable: {type(exc).__name__}")
        return web.json_response({"status": "ok"})

    async def _target(self, key: str) -> tuple[Target | None, web.Response | None]:
        try:
            validation.key(key)
        except validation.Invalid as exc:
            return None, error(400, str(exc), exc.field)
        try:
            target = await self.resolver.resolve(key)
        except Exception as exc:
            log.warning("resolve %s failed: %s", key, exc)
            return None, error(503, f"unavailable: {type(exc).__name__}")
        if target is None:
            return None, error(404, f"key: {key!r} is not a short link here", "key")
        if target.expired(self.time()):
            return None, error(410, f"key: {key!r} expired or was deleted", "key")
        return target, None

    async def follow(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        target, refusal = await self._target(key)
        if refusal is not None:
            return refusal
        assert target is not None
        if target.kind != "url":
            return error(404, f"key: {key!r} is a paste; see /p/{key}", "key")
        headers = request.headers
        self.recorder.visit(
            key, int(self.time()), headers.get("Referer", ""), headers.get("User-Agent", "")
        )
        metrics.answers.labels(str(self.redirect)).inc()
        return web.Response(
            status=self.redirect,
            headers={"Location": location(target.value), "Cache-Control": "private, max-age=90"},
        )

    async def paste(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        unknown = sorted(set(request.query) - {"format"})
        if unknown:
            return error(400, f"{unknown[0]}: unknown parameter (known: format)", unknown[0])
        form = request.query.get("format", "html")
        if form not in ("html", "raw"):
            return error(400, "format: must be html or raw", "format")
        target, refusal = await self._target(key)
        if refusal is not None:
            return refusal
        assert target is not None
        if target.kind != "paste" or self.shortener.blob_store is None:
            return error(404, f"key: {key!r} is not a paste", "key")
        try:
            body = await blobs.read(self.shortener.blob_store, target.value)
        except artifacts.ArtifactNotFound:
            return error(410, f"key: the paste {key!r} was purged", "key")
        headers = request.headers
        self.recorder.visit(
            key, int(self.time()), headers.get("Referer", ""), headers.get("User-Agent", "")
        )
        metrics.answers.labels("200").inc()
        if form == "raw":
            if target.binary:
                return web.Response(
                    body=body,
                    content_type="application/octet-stream",
                    headers={**_SECURITY, "Content-Disposition": f'attachment; filename="{key}"'},
                )
            return web.Response(
                body=body, content_type="text/plain", charset="utf-8", headers=_SECURITY
            )
        return web.Response(
            text=render(key, body, target), content_type="text/html", headers=_SECURITY
        )
