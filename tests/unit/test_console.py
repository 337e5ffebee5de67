"""The console's pure parts (next fires, schedules in words, the timeline, forms to requests,
sessions) and its security rules, on its aiohttp app with no API behind it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.console import app as console
from hourglass.console import forms, views
from hourglass.console.sessions import Sessions
from hourglass.v1 import scheduler_pb2 as pb

REPO = Path(__file__).parents[2]


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def test_next_fires_follow_the_job_zone_across_a_dst_change() -> None:
    job = pb.Job(
        spec=pb.JobSpec(
            schedule=pb.Schedule(cron=pb.Cron(expression="30 2 * * *", time_zone="Europe/Berlin"))
        )
    )
    # 2026-03-28 02:30 CET; the next night has no 02:30 (clocks jump 02:00 -> 03:00).
    job.next_fire_at.CopyFrom(stamp(datetime(2026, 3, 28, 1, 30, tzinfo=UTC)))
    fires = views.next_fires(job, 10)
    assert len(fires) == 10
    berlin = views.zone("Europe/Berlin")
    shown = [views.zoned(fire, berlin) for fire in fires[:3]]
    assert shown[0] == "2026-03-28 02:30:00 CET (+01:00)"
    assert shown[1] == "2026-03-29 03:00:00 CEST (+02:00)"
    assert shown[2] == "2026-03-30 02:30:00 CEST (+02:00)"


def test_next_fires_of_an_interval_stop_at_the_end_and_none_when_paused() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = pb.Job(spec=pb.JobSpec(schedule=pb.Schedule()))
    job.spec.schedule.every.interval.FromTimedelta(timedelta(minutes=10))
    job.spec.schedule.end.CopyFrom(stamp(start + timedelta(minutes=25)))
    job.next_fire_at.CopyFrom(stamp(start))
    assert views.next_fires(job) == [start + timedelta(minutes=m) for m in (0, 10, 20)]
    job.ClearField("next_fire_at")
    assert views.next_fires(job) == []


def test_a_schedule_in_words() -> None:
    cron = pb.Schedule(cron=pb.Cron(expression="0 2 * * *", time_zone="Europe/Berlin"))
    assert views.schedule_words(cron) == "At 02:00 every day (Europe/Berlin)"
    assert views.schedule_words(pb.Schedule(cron=pb.Cron(expression="@daily"))).startswith(
        "At 00:00 every day"
    )
    every = pb.Schedule()
    every.every.interval.FromTimedelta(timedelta(seconds=30))
    assert views.schedule_words(every) == "every 30s"


def test_the_timeline_draws_one_path_per_state_and_counts_only_the_window() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=1)
    runs = []
    for minute in range(0, 90):
        state = pb.RUN_STATE_FAILED if minute % 10 == 0 else pb.RUN_STATE_SUCCEEDED
        runs.append(pb.Run(state=state, scheduled_at=stamp(start + timedelta(minutes=minute))))
    picture = views.timeline([("j1", "one", runs)], start=start, end=end, width=600)
    (lane,) = picture.lanes
    assert picture.total == 61 and lane.counts == {"failed": 7, "succeeded": 54}
    # Failures are drawn last, on top; every run is one tick in its state's path.
    assert [colour for colour, _ in lane.paths] == [
        views.COLOURS["succeeded"],
        views.COLOURS["failed"],
    ]
    assert lane.paths[1][1].count("M") == 7 and lane.paths[1][1].startswith("M0.0 ")
    assert lane.paths[1][1].endswith("M600.0 3v16")


def test_a_watchs_first_runs_redraw_the_page_only_when_they_changed_after_it() -> None:
    drawn = datetime(2026, 1, 1, 12, tzinfo=UTC)
    since = drawn.timestamp()
    old = drawn - timedelta(minutes=5)
    done = pb.Run(
        created_at=stamp(old),
        started_at=stamp(old),
        finished_at=stamp(old + timedelta(seconds=30)),
        attempts=[pb.Attempt(number=1, started_at=stamp(old), finished_at=stamp(old))],
    )
    assert not views.changed_since(done, since)
    # Created, started or ended after the page (or just before, within the clock's slack).
    for late in ("created_at", "started_at", "finished_at"):
        run = pb.Run()
        run.CopyFrom(done)
        getattr(run, late).CopyFrom(stamp(drawn - timedelta(seconds=views.SKEW / 2)))
        assert views.changed_since(run, since), late
    # A retried run's earlier attempt ended after the page: its state changed then.
    retried = pb.Run()
    retried.CopyFrom(done)
    retried.attempts[0].finished_at.CopyFrom(stamp(drawn + timedelta(seconds=1)))
    assert views.changed_since(retried, since)
    # No time known: every run counts, as before.
    assert views.changed_since(done, None)
    assert views.since("1767268800.5") == 1767268800.5
    for bad in ("", "soon", "nan", "inf", "-1", "0"):
        assert views.since(bad) is None, bad


def test_a_form_error_lands_next_to_its_input() -> None:
    assert forms.input_for("spec.schedule.cron.expression") == "schedule"
    assert forms.input_for("spec.schedule.cron.time_zone") == "time_zone"
    assert forms.input_for("spec.task") == "command"
    assert forms.input_for("spec.name") == "name"
    assert forms.input_for("to") == "to"
    assert forms.input_for("spec.overlap") == "form"


def test_the_schedule_form_becomes_the_request_the_cli_would_send() -> None:
    request = forms.schedule_request(
        {
            "name": "n",
            "command": "sh -c 'echo a b'",
            "schedule_kind": "cron",
            "schedule": "*/5 * * * *",
            "time_zone": "Europe/Berlin",
            "max_attempts": "3",
        }
    )
    assert list(request.spec.task.command) == ["sh", "-c", "echo a b"]
    assert request.spec.schedule.cron.time_zone == "Europe/Berlin"
    assert request.spec.max_attempts == 3 and request.request_id
    with pytest.raises(forms.FormError, match=r"^spec.schedule.every.interval: "):
        forms.schedule_request({"command": "true", "schedule_kind": "every", "schedule": "2x"})
    with pytest.raises(forms.FormError, match=r"^spec.task.command: is not shell words"):
        forms.schedule_request({"command": "echo 'open", "schedule": "1s"})
    at = forms.schedule_request(
        {
            "command": "true",
            "schedule_kind": "at",
            "schedule": "2026-07-01T09:00",
            "time_zone": "Europe/Berlin",
        }
    )
    assert at.spec.schedule.at.ToDatetime(tzinfo=UTC) == datetime(2026, 7, 1, 7, tzinfo=UTC)


def test_sessions_expire_when_idle_and_stay_bounded() -> None:
    now = [0.0]
    sessions = Sessions(idle_seconds=60, limit=2, clock=lambda: now[0])
    first = sessions.create("t1", "a")
    assert sessions.get(first.id) is first and first.csrf_matches(first.csrf)
    assert not first.csrf_matches("") and first.id != first.csrf
    now[0] = 61
    assert sessions.get(first.id) is None
    ids = [sessions.create(f"t{i}", "a").id for i in range(3)]
    assert len(sessions) == 2 and sessions.get(ids[0]) is None


def test_the_vendored_files_are_the_ones_the_lock_built() -> None:
    manifest = (REPO / "console/static/ASSETS.sha256").read_text().splitlines()
    for line in manifest:
        if line.startswith("#"):
            continue
        digest, path = line.split()
        assert hashlib.sha256((REPO / path).read_bytes()).hexdigest() == digest, path


@pytest.fixture
async def client() -> TestClient:  # type: ignore[misc]
    app = console.make_app(console.Config(server="127.0.0.1:1"))
    async with TestClient(TestServer(app)) as opened:
        yield opened


async def test_every_answer_carries_a_strict_csp(client: TestClient) -> None:
    for path in ("/jobs", "/signin", "/static/console.js", "/nowhere"):
        answer = await client.get(path, allow_redirects=False)
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_pages_need_a_session_and_posts_need_its_csrf_token(client: TestClient) -> None:
    answer = await client.get("/jobs", allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/signin?next=/jobs"
    assert (await client.post("/jobs/x/pause", allow_redirects=False)).status == 401
    assert (await client.get("/events/runs", allow_redirects=False)).status == 401
    session = client.app[console.SESSIONS].create("token", "a")
    cookies = {"hourglass": session.id}
    refused = await client.post("/jobs/x/pause", cookies=cookies, data={"_csrf": "guess"})
    assert refused.status == 403
    foreign = await client.post(
        "/jobs/x/pause",
        cookies=cookies,
        data={"_csrf": session.csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status == 403


async def test_sign_in_never_redirects_off_site(client: TestClient) -> None:
    from hourglass.console.pages_auth import _safe_next

    assert _safe_next("//evil.example/x") == "/jobs"
    assert _safe_next("https://evil.example") == "/jobs"
    assert _safe_next("/\\evil.example") == "/jobs"
    assert _safe_next("/runs?window=1h") == "/runs?window=1h"
