"""The HTTP/JSON face of a Leaderboard, for browsers and curl:

    GET /top?type=page_view&k=10&start=2025-01-01T00:00:00Z&end=2025-01-02T00:00:00Z
      -> 200 {"type": ..., "k": 10, "start": ..., "end": ..., "buckets": 5,
              "entries": [{"key": "home", "count": 1234}, ...]}
    bad input -> 400 {"error": "start: must be aligned to the smallest bucket (1m)",
                      "field": "start"}
    GET /healthz -> 200 when PostgreSQL answers, else 503

`start` and `end` are RFC 3339 instants or Unix seconds; `end` defaults to now (rounded up to
the smallest bucket), `start` to one day before `end`, `k` to 10.

It runs on the standard library's ThreadingHTTPServer (the same server prometheus_client
uses for /metrics): a read-only GET endpoint needs no framework, and this adds no dependency
and no second event loop. Each request thread hands the query to the server's asyncio loop
and waits for the answer; a per-connection timeout keeps idle or slow clients from holding
threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from hourglass.cases.leaderboard import metrics, validation

if TYPE_CHECKING:
    from hourglass.cases.leaderboard.board import Board

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 30.0
# ASCII digits only: str.isdigit() also takes "²" and "٣", which int() then refuses.
_INTEGER = re.compile(r"-?[0-9]+")
MAX_QUERY = 4096


def instant(text: str, field: str) -> int:
    """RFC 3339 or Unix seconds -> Unix seconds; Invalid naming the field otherwise."""
    text = text.strip()
    if _INTEGER.fullmatch(text):
        value = int(text)
        if not validation.MIN_SECONDS <= value <= validation.MAX_SECONDS:
            raise validation.Invalid(field, "is out of range (years 1 to 9999)")
        return value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise validation.Invalid(
            field, "must be an RFC 3339 instant (2025-01-01T00:00:00Z) or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        raise validation.Invalid(field, "needs a time zone (Z or +hh:mm)")
    if parsed.microsecond:
        raise validation.Invalid(field, "must be a whole second")
    return int(parsed.timestamp())


def parse_query(query: str, *, now: int, smallest: int) -> validation.Window:
    """The query string of GET /top -> a window; pure, so tests need no server."""
    if len(query) > MAX_QUERY:
        raise validation.Invalid("query", f"at most {MAX_QUERY} characters")
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise validation.Invalid("query", "is not valid URL-encoded UTF-8") from None
    unknown = sorted(set(params) - {"type", "k", "start", "end"})
    if unknown:
        raise validation.Invalid(unknown[0], "unknown parameter (known: type, k, start, end)")
    for name, values in params.items():
        if len(values) > 1:
            raise validation.Invalid(name, "give it once")
    one = {name: values[0] for name, values in params.items()}
    if "type" not in one:
        raise validation.Invalid("type", "is required")
    k_text = one.get("k", "10").strip()
    if not _INTEGER.fullmatch(k_text) or len(k_text) > 9:
        raise validation.Invalid("k", f"must be a whole number between 1 and {validation.MAX_K}")
    end = instant(one["end"], "end") if "end" in one else -(-now // smallest) * smallest
    start = instant(one["start"], "start") if "start" in one else end - 86400
    return validation.window(
        event_type_=one["type"],
        k=int(k_text),
        start=start,
        end=end,
        smallest=smallest,
        type_field="type",
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class HttpFace:
    def __init__(self, board: Board, loop: asyncio.AbstractEventLoop, listen: str) -> None:
        self.board = board
        self.loop = loop
        host, _, port = listen.rpartition(":")
        face = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds a connection may sit idle or trickle a request
            server_version = "hourglass-leaderboard"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s " + format, self.client_address[0], *args)

            def do_GET(self) -> None:
                face.get(self)

            def do_POST(self) -> None:
                face.send(self, 405, {"error": "only GET is served"})

            do_PUT = do_DELETE = do_PATCH = do_POST

        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="leaderboard-http")

    def start(self) -> HttpFace:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def send(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(data)

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        url = urlsplit(handler.path)
        status = 200
        try:
            if url.path == "/healthz":
                self.run(self._healthy(), timeout=5)
                self.send(handler, 200, {"status": "ok"})
            elif url.path == "/top":
                status = self.top(handler, url.query)
            else:
                status = 404
                self.send(handler, 404, {"error": f"no such path {url.path!r}; try /top"})
        except Exception as exc:
            status = 503
            log.warning("http %s failed: %s", url.path, exc)
            self.send(handler, 503, {"error": f"unavailable: {type(exc).__name__}"})
        finally:
            metrics.latency.labels(f"http{url.path}", str(status)).observe(
                time.perf_counter() - started
            )

    def top(self, handler: BaseHTTPRequestHandler, query: str) -> int:
        try:
            window = parse_query(query, now=self.board.now(), smallest=self.board.spec.smallest)
        except validation.Invalid as exc:
            self.send(handler, 400, {"error": str(exc), "field": exc.field})
            return 400
        answer = self.run(
            self.board.fetch(window.event_type, k=window.k, start=window.start, end=window.end)
        )
        self.send(
            handler,
            200,
            {
                "type": window.event_type,
                "k": window.k,
                "start": _iso(answer.start),
                "end": _iso(answer.end),
                "buckets": answer.buckets,
                "entries": [{"key": key, "count": count} for key, count in answer.entries],
            },
        )
        return 200

    def run(self, coroutine: Any, timeout: float = ANSWER_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _healthy(self) -> None:
        async with self.board.pool.connection(timeout=3) as conn:
            await conn.execute("SELECT 1")
