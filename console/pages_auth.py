"""Sign in and out. Signing in checks the token with one API call and keeps it server-side
(sessions.py); the browser gets a session id in an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

from aiohttp import web

from hourglass.console import app as console
from hourglass.console.client import ApiError


def _safe_next(target: str) -> str:
    """Only a path on this site: "//evil.example" or "https://..." would leave it."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/jobs"


async def signin_page(request: web.Request) -> web.Response:
    needs = await request.app[console.API].needs_token()
    return console.render(
        request,
        "signin.html",
        needs_token=needs,
        next=_safe_next(request.query.get("next", "/jobs")),
        error="",
    )


async def signin(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    target = _safe_next(str(form.get("next", "/jobs")))
    api = request.app[console.API]
    needs = await api.needs_token()
    if needs and not token:
        error = "token: is required: this API takes calls only with a token"
        return console.render(
            request, "signin.html", status=400, needs_token=needs, next=target, error=error
        )
    try:
        namespace = await api.whoami(token)
    except ApiError as exc:
        return console.render(
            request,
            "signin.html",
            status=400 if exc.code.name == "UNAUTHENTICATED" else 502,
            needs_token=needs,
            next=target,
            error=f"token: {exc.message} ({exc.code.name})",
        )
    config = request.app[console.CONFIG]
    # A new session id at every sign-in: an id planted before sign-in is worthless after.
    old = request.cookies.get(config.cookie, "")
    request.app[console.SESSIONS].end(old)
    session = request.app[console.SESSIONS].create(token, namespace)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        config.cookie,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=config.secure_cookies,
        path="/",
    )
    raise response


async def signout(request: web.Request) -> web.Response:
    config = request.app[console.CONFIG]
    request.app[console.SESSIONS].end(console.session_of(request).id)
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(config.cookie, path="/")
    raise response


async def home(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/jobs")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
