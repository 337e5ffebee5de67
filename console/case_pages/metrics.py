"""The metrics page: a series selector over a window, raw or at a step, drawn as a chart of
one line per series, with the series' labels and figures in a table beside it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from hourglass.console.case_pages import charts
from hourglass.console.case_pages.common import CasePage, Context, Values, no_error, refused, rpc
from hourglass.console.client import ApiError

CASE = "metrics"
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
STEPS = {"raw": 0, "1m": 60_000, "5m": 300_000, "1h": 3_600_000}
WIDTH, HEIGHT = 800, 240
# The FetchDataset request's fields -> the form's inputs.
INPUTS = {"selector": "selector", "start_ms": "window", "end_ms": "window", "step_ms": "step"}


def series_name(labels: Any) -> str:
    """name{a="1",b="2"}, as a selector would pick the series."""
    pairs = {label.name: label.value for label in labels}
    name = pairs.pop("__name__", "")
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(pairs.items()))
    return f"{name}{{{inner}}}" if inner or not name else name


async def show(ctx: Context) -> Values:
    from hourglass.cases.metrics.v1 import metrics_pb2 as pb
    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc

    query = ctx.request.query
    selector = query.get("selector", "").strip()
    window = query.get("window", "1h")
    window = window if window in WINDOWS else "1h"
    step = query.get("step", "raw")
    step = step if step in STEPS else "raw"
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - WINDOWS[window] * 1000
    values: Values = {
        "selector": selector,
        "window": window,
        "windows": list(WINDOWS),
        "step": step,
        "steps": list(STEPS),
        "plot": None,
        "rows": [],
        "resolution": 0,
        "start": datetime.fromtimestamp(start_ms / 1000, UTC),
        "end": datetime.fromtimestamp(end_ms / 1000, UTC),
        "width": WIDTH,
        "height": HEIGHT,
        **no_error(),
    }
    if not selector:
        return values
    request = pb.FetchDatasetRequest(
        selector=selector, start_ms=start_ms, end_ms=end_ms, step_ms=STEPS[step]
    )
    try:
        answer = await rpc(pb_grpc.MetricsStub(ctx.channel).FetchDataset, request, token=ctx.token)
    except ApiError as exc:
        values.update(refused(exc, INPUTS, dict(query)))
        return values
    found = [
        (series_name(d.labels), list(d.timestamps_ms), list(d.values)) for d in answer.datasets
    ]
    plot = charts.plot(found, start_ms=start_ms, end_ms=end_ms, width=WIDTH, height=HEIGHT)
    values["plot"] = plot
    values["resolution"] = answer.resolution_s
    values["rows"] = [
        {
            "line": line,
            "last": points[-1] if points else None,
            "low": min(points) if points else None,
            "high": max(points) if points else None,
        }
        for line, (_, _, points) in zip(plot.lines, found, strict=True)
    ]
    return values


PAGE = CasePage(CASE, "Metrics", show)
