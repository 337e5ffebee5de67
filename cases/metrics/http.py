"""The HTTP face: a push endpoint that existing agents speak, and a query API Grafana reads.

    POST /api/v2/write?bucket=B&org=O&precision=ns|us|ms|s   InfluxDB 2 line protocol
    POST /write?db=D&precision=n|u|ms|s                       InfluxDB 1 line protocol
        -> 204 once the batch is durable in the broker; 400 {"code": "invalid", "message":
           ..., "error": ..., "field": ...} and nothing stored for a bad body
    GET|POST /api/v1/query_range?query=SELECTOR&start&end&step   Prometheus-compatible subset
    GET|POST /api/v1/query?query=SELECTOR|NUMBER&time
    GET /api/v1/labels, /api/v1/label/NAME/values, /api/v1/series?match[]=SELECTOR
    GET /api/v1/status/buildinfo, /healthz

Grafana's Prometheus data source works against it with the query being a series selector
(no PromQL functions). query_range with a step under a minute returns the raw points in the
range; with a step of a minute or more, one point per step: the average from the best
rollup (the step is rounded down to whole minutes). Bucket and org are accepted and ignored:
a resource is one database.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from hourglass.cases.metrics import lineproto, metrics, query
from hourglass.cases.metrics.consumer import ERRORS
from hourglass.cases.metrics.pipeline import Backlogged, Pipeline
from hourglass.cases.metrics.validation import LABEL_NAME, Invalid

_V1_PRECISION = {"n": "ns", "ns": "ns", "u": "us", "us": "us", "ms": "ms", "s": "s"}
LOOKBACK_MS = 5 * 60 * 1000


def _error(
    status: int, message: str, field: str | None = None, *, prom: bool = False
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    if prom:
        body.update(status="error", errorType="bad_data" if status == 400 else "unavailable")
    else:
        body.update(code="invalid" if status == 400 else "unavailable", message=message)
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _time_ms(text: str | None, field: str, default: float) -> int:
    if text is None or text == "":
        return int(default * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise Invalid(field, f"{text[:40]!r} is neither unix seconds nor RFC 3339") from None


def _step_ms(text: str | None) -> int:
    if not text:
        raise Invalid("step", "is required (seconds, or a duration such as 1m)")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except ValueError:
        raise Invalid("step", f"{text[:40]!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise Invalid("step", "must be a positive number of seconds")
    return 0 if seconds < 60 else int(seconds // 60) * 60_000


class HttpFace:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=lineproto.MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/api/v2/write", self.write)
        app.router.add_post("/write", self.write)
        for path, handler in (
            ("/api/v1/query_range", self.query_range),
            ("/api/v1/query", self.instant),
            ("/api/v1/series", self.series),
            ("/api/v1/labels", self.labels),
        ):
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.router.add_get("/api/v1/label/{name}/values", self.values)
        app.router.add_get("/api/v1/status/buildinfo", self.buildinfo)
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

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            async with self.pipeline.pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
            await self.pipeline.broker.client.ping()
        except Exception as exc:
            return _error(503, f"unavailable: {type(exc).__name__}")
        return web.json_response({"status": "ok"})

    async def write(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        precision = _V1_PRECISION.get(request.query.get("precision", "ns"), "?")
        try:
            if precision == "?":
                raise Invalid("precision", "must be one of ns, us, ms, s")
            body = await request.read()
            parsed = lineproto.parse(body, precision=precision, now_ns=time.time_ns())
            if parsed.points:
                await self.pipeline.send_points(
                    [(labels, t, v) for labels, (t, v) in parsed.points.items()]
                )
            if parsed.logs:
                await self.pipeline.send_logs(
                    [(labels, t, v) for labels, (t, v) in parsed.logs.items()]
                )
        except Invalid as exc:
            metrics.refused.labels(exc.field.split("[")[0].split(".")[0]).inc()
            return _error(400, str(exc), exc.field)
        except Backlogged as exc:
            return _error(429, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body: larger than {lineproto.MAX_BODY} bytes", "body")
        except ERRORS as exc:
            return _error(503, f"unavailable, retry: {type(exc).__name__}")
        metrics.latency.labels("write", "204").observe(time.perf_counter() - started)
        return web.Response(status=204)

    async def _params(self, request: web.Request) -> dict[str, str]:
        found = dict(request.query)
        if request.method == "POST":
            found.update({k: str(v) for k, v in (await request.post()).items()})
        return found

    async def query_range(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            now = time.time()
            start = _time_ms(params.get("start"), "start", now - 3600)
            end = _time_ms(params.get("end"), "end", now)
            step = _step_ms(params.get("step"))
            if step == 0 and end - start > 86_400_000:
                raise Invalid("step", "under a minute (raw points) only for ranges up to 1 day")
            found, _ = await self.pipeline.fetch(
                selector=params.get("query", ""), series_id=0, start=start, end=end, step=step
            )
        except Invalid as exc:
            return _error(400, str(exc), exc.field, prom=True)
        except ERRORS as exc:
            return _error(503, f"unavailable: {type(exc).__name__}", prom=True)
        result = [
            {
                "metric": d.labels,
                "values": [
                    [t / 1000, repr(float(v))] for t, v in zip(d.timestamps, d.values, strict=True)
                ],
            }
            for d in found
            if d.timestamps
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    async def instant(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        text = params.get("query", "").strip()
        try:
            at = _time_ms(params.get("time"), "time", time.time())
            try:  # Grafana's "test" asks for a number (1+1 is not PromQL this API speaks)
                number = float(text)
            except ValueError:
                number = None
            if number is not None:
                return web.json_response(
                    {"status": "success",
                     "data": {"resultType": "scalar", "result": [at / 1000, repr(number)]}}
                )  # fmt: skip
            found, _ = await self.pipeline.fetch(
                selector=text, series_id=0, start=max(0, at - LOOKBACK_MS), end=at, step=0
            )
        except Invalid as exc:
            return _error(400, str(exc), exc.field, prom=True)
        except ERRORS as exc:
            return _error(503, f"unavailable: {type(exc).__name__}", prom=True)
        result = [
            {"metric": d.labels, "value": [d.timestamps[-1] / 1000, repr(float(d.values[-1]))]}
            for d in found
            if d.timestamps
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    async def series(self, request: web.Request) -> web.Response:
        selectors = request.query.getall("match[]", [])
        try:
            if not selectors:
                raise Invalid("match[]", "give at least one series selector")
            out: dict[int, dict[str, str]] = {}
            for selector in selectors[:16]:
                for sid, labels in await query.pick(self.pipeline.pool, "points", selector, 0):
                    out[sid] = labels
        except Invalid as exc:
            return _error(400, str(exc), exc.field, prom=True)
        except ERRORS as exc:
            return _error(503, f"unavailable: {type(exc).__name__}", prom=True)
        return web.json_response({"status": "success", "data": [out[k] for k in sorted(out)]})

    async def labels(self, request: web.Request) -> web.Response:
        from hourglass.cases.metrics import store

        async with self.pipeline.pool.connection() as conn:
            names = await store.label_names(conn)
        return web.json_response({"status": "success", "data": names})

    async def values(self, request: web.Request) -> web.Response:
        from hourglass.cases.metrics import store

        name = request.match_info["name"]
        if not LABEL_NAME.fullmatch(name):
            return _error(400, f"name: {name[:64]!r} is not a label name", "name", prom=True)
        async with self.pipeline.pool.connection() as conn:
            found = await store.label_values(conn, name, limit=10_000)
        return web.json_response({"status": "success", "data": found})

    async def buildinfo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "success", "data": {"version": "2.45.0", "application": "hourglass"}}
        )
