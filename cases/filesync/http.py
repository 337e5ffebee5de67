"""The HTTP face: downloads for browsers and curl, and share links.

    GET /files/<workspace>/<path>[?version=N]  -> the file's bytes; needs
                                                 `Authorization: Bearer <member token>`
    GET /s/<token>                             -> a shared file, no token needed;
                                                 404 unknown, 410 expired
    GET /healthz                               -> 200 when PostgreSQL answers, else 503
    bad input                                  -> 400 {"error": "path: ...", "field": "path"}

Files are always sent as downloads (`Content-Disposition: attachment`, octet-stream,
nosniff), never rendered: a shared HTML file must not run script on this service's origin.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hourglass import artifacts
from hourglass.cases.filesync import metrics, store, validation
from hourglass.cases.filesync.files import Denied, Files, NoObjectStore

log = logging.getLogger(__name__)

_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-store",
}


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=_SECURITY
    )


class HttpFace:
    def __init__(self, files: Files) -> None:
        self.files = files
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/files/{workspace}/{path:.+}", self.download)
        app.router.add_get("/s/{token}", self.shared)
        return app

    async def start(self, listen: str) -> HttpFace:
        host, _, port = listen.rpartition(":")
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") or "0.0.0.0", int(port))
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            async with self.files.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            return error(503, f"database unavailable: {exc}")
        return web.Response(text="ok\n")

    async def download(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            workspace = validation.workspace(request.match_info["workspace"])
            path = validation.path(request.match_info["path"])
            text = request.query.get("version", "0")
            if not text.isdigit() or len(text) > 18:
                raise validation.Invalid("version", "must be a version number (0: the head)")
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            member = await self.files.authenticate(
                token.strip() if scheme.lower() == "bearer" else "", workspace, "read"
            )
            found = await self.files.head(member, path, int(text))
        except validation.Invalid as exc:
            return error(400, str(exc), exc.field)
        except Denied as exc:
            return error(401 if exc.unauthenticated else 403, str(exc), "authorization")
        except store.UNAVAILABLE_ERRORS as exc:
            return error(503, f"database unavailable: {exc}")
        if found is None or found.deleted:
            return error(404, f"path: {path!r} has no such version", "path")
        try:
            return await self._send(request, found)
        finally:
            metrics.latency.labels("http_download", "OK").observe(time.perf_counter() - started)

    async def shared(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not 16 <= len(token) <= 64 or not all(c.isalnum() or c in "-_" for c in token):
            return error(400, "token: not a share link token", "token")
        try:
            found = await self.files.shared(token)
        except store.UNAVAILABLE_ERRORS as exc:
            return error(503, f"database unavailable: {exc}")
        if found == "expired":
            return error(410, "token: this share link has expired", "token")
        if isinstance(found, str):
            return error(404, "token: no such share link", "token")
        return await self._send(request, found)

    async def _send(self, request: web.Request, version: store.Version) -> web.StreamResponse:
        name = posixpath.basename(version.path)
        response = web.StreamResponse(
            headers={
                **_SECURITY,
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
                "Content-Length": str(version.size),
                "ETag": f'"{version.digest}"',
                "X-Hourglass-Version": str(version.version),
            }
        )
        try:
            chunks = self.files.download(version)
            first = await anext(chunks, None)
        except NoObjectStore as exc:
            return error(503, str(exc))
        except artifacts.ArtifactNotFound as exc:
            return error(500, f"chunk missing from the object store: {exc}")
        await response.prepare(request)
        if first is not None:
            await response.write(first)
            async for data in chunks:
                await response.write(data)
        await response.write_eof()
        return response
