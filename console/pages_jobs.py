"""The Jobs page (search, filter, schedule a job) and the Job page (spec, next fires,
actions, recent runs, revisions)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from hourglass.console import app as console
from hourglass.console import forms, revisions, views
from hourglass.console.client import ApiError
from hourglass.v1 import scheduler_pb2 as pb

PAGE = 50
SPARK_RUNS = 20
STATES = ("active", "paused", "completed", "cancelled")
ACTIONS = {
    "pause": ("PauseJob", pb.PauseJobRequest),
    "resume": ("ResumeJob", pb.ResumeJobRequest),
    "trigger": ("TriggerJob", pb.TriggerJobRequest),
    "cancel": ("CancelJob", pb.CancelJobRequest),
}


def _not_found(request: web.Request, exc: ApiError) -> web.Response:
    status = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "PERMISSION_DENIED": 403}
    return console.render(
        request, "error.html", status=status.get(exc.code.name, 502), error=exc.message
    )


async def _statuses(request: web.Request, jobs: list[pb.Job]) -> list[pb.GetJobStatusResponse]:
    """Each job's recent runs, a few calls at a time."""
    api, token = request.app[console.API], console.session_of(request).token
    limit = asyncio.Semaphore(8)

    async def one(job: pb.Job) -> Any:
        async with limit:
            try:
                return await api.call(
                    "GetJobStatus",
                    pb.GetJobStatusRequest(job_id=job.id, recent_runs=SPARK_RUNS),
                    token=token,
                )
            except ApiError:
                return pb.GetJobStatusResponse(job=job)

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def jobs_page(
    request: web.Request, *, status: int = 200, form_error: forms.FormError | None = None
) -> web.Response:
    query = request.query
    name, state, namespace = query.get("name", ""), query.get("state", ""), query.get("ns", "")
    api, token = request.app[console.API], console.session_of(request).token
    try:
        answer = await api.call(
            "ListJobs",
            pb.ListJobsRequest(page_size=PAGE, page_token=query.get("page", "")),
            token=token,
        )
    except ApiError as exc:
        return _not_found(request, exc)
    jobs = [
        job
        for job in answer.jobs
        if (not name or name.lower() in job.spec.name.lower())
        and (not state or views.job_state(job) == state)
        and (not namespace or job.namespace == namespace)
    ]
    rows = []
    for found in await _statuses(request, jobs):
        job, runs = found.job, list(found.recent_runs)
        last = next((r for r in runs if r.finished_at.seconds), None)
        rows.append(
            {
                "job": job,
                "state": views.job_state(job),
                "words": views.schedule_words(job.spec.schedule),
                "next": views.instant(job.next_fire_at),
                "last": views.run_state(last) if last is not None else "",
                "spark": views.sparkline(runs, bars=SPARK_RUNS),
            }
        )
    form = (
        {k: str(v) for k, v in (await request.post()).items()} if request.method == "POST" else {}
    )
    # One idempotency key per form shown: submitting it twice schedules one job.
    form["request_id"] = form.get("request_id") or str(uuid.uuid4())
    return console.render(
        request,
        "jobs.html",
        status=status,
        rows=rows,
        name=name,
        state=state,
        ns=namespace,
        states=STATES,
        next_page=answer.next_page_token,
        form=form,
        error=form_error,
        error_input=forms.input_for(form_error.field) if form_error else "",
        kinds=forms.KINDS,
        zoned=views.zoned,
        colours=views.COLOURS,
    )


async def jobs(request: web.Request) -> web.Response:
    return await jobs_page(request)


async def schedule(request: web.Request) -> web.Response:
    """Schedules the form's job; its page on success, the form with the error beside its
    input otherwise (nothing stored: the API refuses before storing)."""
    form = {key: str(value) for key, value in (await request.post()).items()}
    try:
        job_request = forms.schedule_request(form)
        answer = await request.app[console.API].call(
            "ScheduleJob", job_request, token=console.session_of(request).token
        )
    except forms.FormError as exc:
        return await jobs_page(request, status=400, form_error=exc)
    except ApiError as exc:
        if not exc.field:
            return _not_found(request, exc)
        reason = exc.message.removeprefix(f"{exc.field}: ")
        return await jobs_page(request, status=400, form_error=forms.FormError(exc.field, reason))
    raise web.HTTPSeeOther(f"/jobs/{answer.job_id}")


async def job_page(
    request: web.Request, *, status: int = 200, error: ApiError | forms.FormError | None = None
) -> web.Response:
    job_id = request.match_info["job_id"]
    # The revisions are asked for beside the job, not after it.
    history = asyncio.create_task(
        revisions.newest(request.app[console.API], job_id, token=console.session_of(request).token)
    )
    try:
        found = await request.app[console.API].call(
            "GetJobStatus",
            pb.GetJobStatusRequest(job_id=job_id, recent_runs=50),
            token=console.session_of(request).token,
        )
    except ApiError as exc:
        history.cancel()
        return _not_found(request, exc)
    job = found.job
    job_zone_name = job.spec.schedule.cron.time_zone or "UTC"
    user_zone_name = request.query.get("tz", "")
    fires = views.next_fires(job, 10)
    field = getattr(error, "field", "")
    return console.render(
        request,
        "job.html",
        status=status,
        job=job,
        state=views.job_state(job),
        words=views.schedule_words(job.spec.schedule),
        spec=json_format.MessageToJson(job.spec, indent=2),
        fires=fires,
        job_zone=views.zone(job_zone_name),
        job_zone_name=job_zone_name,
        user_zone=views.zone(user_zone_name) if user_zone_name else None,
        user_zone_name=user_zone_name,
        runs=list(found.recent_runs),
        revisions=await history,
        run_state=views.run_state,
        instant=views.instant,
        zoned=views.zoned,
        colours=views.COLOURS,
        error=str(error) if error else "",
        error_input=forms.input_for(field) if field else ("form" if error else ""),
        form=dict(await request.post()) if request.method == "POST" else {},
        now=datetime.now(UTC),
    )


async def job(request: web.Request) -> web.Response:
    return await job_page(request)


async def action(request: web.Request) -> web.Response:
    job_id, name = request.match_info["job_id"], request.match_info["action"]
    if name not in ACTIONS:
        raise web.HTTPNotFound()
    method, message = ACTIONS[name]
    try:
        await request.app[console.API].call(
            method, message(job_id=job_id), token=console.session_of(request).token
        )
    except ApiError as exc:
        return await job_page(request, status=400, error=exc)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


async def backfill(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    form = {key: str(value) for key, value in (await request.post()).items()}
    try:
        backfill_request = forms.backfill_request(job_id, form, form.get("zone", ""))
        answer = await request.app[console.API].call(
            "Backfill", backfill_request, token=console.session_of(request).token
        )
    except (forms.FormError, ApiError) as exc:
        return await job_page(request, status=400, error=exc)
    raise web.HTTPSeeOther(f"/jobs/{job_id}?backfilled={answer.queued}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/jobs", jobs)
    app.router.add_post("/jobs", schedule)
    app.router.add_get("/jobs/{job_id}", job)
    app.router.add_post("/jobs/{job_id}/backfill", backfill)
    app.router.add_post("/jobs/{job_id}/{action}", action)
