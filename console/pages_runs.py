"""The Runs page (a timeline of every run in a window, coloured by state, following new
runs live) and the Attempt page (its facts, and its output following a live run)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from aiohttp import web

from hourglass.console import app as console
from hourglass.console import events, views
from hourglass.console.client import ApiError
from hourglass.v1 import scheduler_pb2 as pb

MAX_JOBS = 100
MAX_RUNS = 20_000
# RUN_VIEW_SUMMARY's largest page.
MAX_PAGE = 10_000
LATEST = 25


async def _jobs(request: web.Request, job_id: str) -> list[pb.Job]:
    api, token = request.app[console.API], console.session_of(request).token
    if job_id:
        found = await api.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id), token=token)
        return [found.job]
    answer = await api.call("ListJobs", pb.ListJobsRequest(page_size=MAX_JOBS), token=token)
    return list(answer.jobs)


async def _runs_in(
    request: web.Request, *, job_id: str, start: datetime, end: datetime
) -> tuple[list[pb.Run], bool]:
    """The runs fired in [start, end] (of one job, or of all the caller's), newest first,
    as summaries: the picture draws fire time and state, never attempts or output. One
    ListRuns call per MAX_PAGE runs; at most MAX_RUNS, and whether that cut any off."""
    api, token = request.app[console.API], console.session_of(request).token
    runs: list[pb.Run] = []
    page = ""
    while len(runs) < MAX_RUNS:
        asked = pb.ListRunsRequest(
            job_id=job_id,
            page_size=min(MAX_PAGE, MAX_RUNS - len(runs)),
            page_token=page,
            view=pb.RUN_VIEW_SUMMARY,
        )
        getattr(asked, "from").FromDatetime(start)
        asked.to.FromDatetime(end)
        answer = await api.call("ListRuns", asked, token=token)
        runs.extend(answer.runs)
        page = answer.next_page_token
        if not page:
            break
    return runs, bool(page)


async def runs_page(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    name, start, end = views.window(request.query.get("window", ""), now)
    job_id = request.query.get("job", "")
    try:
        jobs, (found, cut) = await asyncio.gather(
            _jobs(request, job_id), _runs_in(request, job_id=job_id, start=start, end=end)
        )
    except ApiError as exc:
        return console.render(request, "error.html", status=404, error=exc.message)
    names = {job.id: job.spec.name or job.id[:8] for job in jobs}
    by_job: dict[str, list[pb.Run]] = {job.id: [] for job in jobs}
    for run in found:
        lane = by_job.get(run.job_id)
        if lane is not None:  # a job past the first MAX_JOBS has no lane
            lane.append(run)
    lanes = [(job.id, names[job.id], by_job[job.id]) for job in jobs]
    user_zone = views.zone(request.query.get("tz", ""))
    picture = views.timeline(lanes, start=start, end=end, where=user_zone)
    newest = [run for run in found if run.job_id in by_job][:LATEST]
    template = "_runs_live.html" if request.query.get("fragment") else "runs.html"
    return console.render(
        request,
        template,
        picture=picture,
        window=name,
        windows=list(views.WINDOWS),
        job_id=job_id,
        jobs=jobs,
        names=names,
        latest=newest,
        cut=cut,
        run_state=views.run_state,
        instant=views.instant,
        zoned=views.zoned,
        colours=views.COLOURS,
        query=request.query_string,
        drawn=f"{now.timestamp():.3f}",
    )


async def runs_events(request: web.Request) -> web.StreamResponse:
    """One `run` event per change of any followed job's runs (WatchJob). The runs a watch
    starts with count only when they changed after `since`, when the page was drawn."""
    api, token = request.app[console.API], console.session_of(request).token
    try:
        jobs = await _jobs(request, request.query.get("job", ""))
    except ApiError as exc:
        raise web.HTTPNotFound(text=exc.message) from None

    drawn = views.since(request.query.get("since", ""))

    async def watch(job_id: str) -> AsyncIterator[tuple[str, object]]:
        first = None  # the cursor of the watch's first messages: the runs as they were
        async for change in api.stream("WatchJob", pb.WatchJobRequest(job_id=job_id), token=token):
            first = change.cursor if first is None else first
            if change.cursor == first and not views.changed_since(change.run, drawn):
                continue
            if change.HasField("run"):
                yield (
                    "run",
                    {"job": job_id, "run": change.run.id, "state": views.run_state(change.run)},
                )

    return await events.send(request, events.merged([watch(job.id) for job in jobs[:MAX_JOBS]]))


async def _run(request: web.Request, run_id: str) -> pb.Run:
    answer = await request.app[console.API].call(
        "ListRuns",
        pb.ListRunsRequest(id_prefix=run_id, page_size=1),
        token=console.session_of(request).token,
    )
    if not answer.runs or answer.runs[0].id != run_id:
        raise ApiError(code=_NOT_FOUND, message=f"run {run_id} not found")
    return answer.runs[0]  # type: ignore[no-any-return]


async def run_page(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    try:
        run = await _run(request, run_id)
    except ApiError as exc:
        return console.render(request, "error.html", status=404, error=exc.message)
    raise web.HTTPSeeOther(f"/runs/{run.id}/attempts/{max(run.attempt, 1)}")


async def attempt_page(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    try:
        number = int(request.match_info["number"])
        run = await _run(request, run_id)
    except ValueError:
        raise web.HTTPNotFound() from None
    except ApiError as exc:
        return console.render(request, "error.html", status=404, error=exc.message)
    attempt = next((a for a in run.attempts if a.number == number), None)
    job = await request.app[console.API].call(
        "GetJobStatus",
        pb.GetJobStatusRequest(job_id=run.job_id, recent_runs=1),
        token=console.session_of(request).token,
    )
    return console.render(
        request,
        "attempt.html",
        run=run,
        job=job.job,
        number=number,
        attempt=attempt,
        attempt_state=views.run_state(attempt) if attempt is not None else "waiting",
        run_state=views.run_state(run),
        duration=views.attempt_duration(attempt, datetime.now(UTC)) if attempt else "-",
        instant=views.instant,
        zoned=views.zoned,
        colours=views.COLOURS,
    )


async def logs_events(request: web.Request) -> web.StreamResponse:
    """The attempt's output from its start, then as it comes, until the run ends."""
    run_id = request.match_info["run_id"]
    try:
        number = int(request.query.get("attempt", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="attempt: must be a number") from None
    api, token = request.app[console.API], console.session_of(request).token

    async def output() -> AsyncIterator[tuple[str, object]]:
        request_logs = pb.GetRunLogsRequest(run_id=run_id, follow=True)
        async for chunk in api.stream("GetRunLogs", request_logs, token=token):
            if number and chunk.attempt != number:
                continue
            stream = "stderr" if chunk.stream == pb.LOG_STREAM_STDERR else "stdout"
            text = chunk.data.decode("utf-8", errors="replace")
            yield "output", {"stream": stream, "text": text}

    return await events.send(request, output())


_NOT_FOUND = grpc.StatusCode.NOT_FOUND


def add_routes(app: web.Application) -> None:
    app.router.add_get("/runs", runs_page)
    app.router.add_get("/events/runs", runs_events)
    app.router.add_get("/runs/{run_id}", run_page)
    app.router.add_get("/runs/{run_id}/attempts/{number}", attempt_page)
    app.router.add_get("/events/logs/{run_id}", logs_events)
