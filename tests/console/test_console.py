"""The web console in a real browser (headless Chromium), against `hourglass dev --tokens`:
an operator signs in, schedules a job, watches it fire and its output grow without
reloading, pauses it, signs out; a second namespace's token sees none of it. Every page is
photographed (a build artefact) and checked by axe-core."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console, Page

SLOW_JOB = "sh -c 'echo start; for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done'"


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)


@pytest.fixture
def tab(browser: Any, console: Console) -> Iterator[Page]:
    opened = Page(browser, console.url)
    yield opened
    opened.close()
    assert not opened.blocked, f"the Content-Security-Policy blocked: {opened.blocked}"


def schedule(page: Any, *, name: str, command: str, kind: str, value: str, zone: str = "") -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Command").fill(command)
    page.get_by_label("Schedule kind").select_option(kind)
    page.get_by_label("Schedule", exact=True).fill(value)
    page.get_by_label("Time zone (cron, at)").fill(zone)
    page.get_by_role("button", name="Schedule", exact=True).click()


def shoot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def runs_of(console: Console, token: str, job_id: str) -> list[dict[str, Any]]:
    answer = console.dev.cli("runs", job_id, "--token", token, "--output", "json")
    return json.loads(answer.stdout).get("runs", [])  # type: ignore[no-any-return]


def test_an_operator_signs_in_schedules_watches_pauses_and_signs_out(
    tab: Page, console: Console, screenshots: Path
) -> None:
    token = console.token("team-a")
    page = tab.go("/jobs")
    page.wait_for_url("**/signin**")
    shoot(page, screenshots, "signin")
    tab.sign_in(token)

    page.get_by_role("heading", name="Jobs").wait_for()
    schedule(page, name="ticker", command=SLOW_JOB, kind="every", value="3s")
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    assert page.get_by_role("heading", name="ticker").is_visible()
    assert page.locator("dd", has_text="every 3s").is_visible()
    assert page.locator("#fires ~ div tbody tr").count() == 10

    # The runs view follows new runs itself: the page is never reloaded.
    page = tab.go(f"/runs?job={job_id}")
    page.evaluate("window.notReloaded = true")
    rows = page.locator("#latest-runs tr[data-run]")
    before = rows.count()
    wait_until(lambda: rows.count() > before, what="a new run in the runs view")
    assert page.evaluate("window.notReloaded") is True
    shoot(page, screenshots, "runs")

    # A running attempt's output grows on its page while it runs.
    running = page.locator("#latest-runs tr[data-state=running] a")
    wait_until(lambda: running.count() > 0, what="a running run in the runs view")
    running.first.click()
    page.wait_for_url("**/attempts/*")
    output = page.locator("#output")
    wait_until(lambda: "line 1" in output.inner_text(), what="the first line of output")
    early = output.inner_text()
    assert "line 8" not in early, "the output came all at once, not while it ran"
    wait_until(lambda: len(output.inner_text()) > len(early), what="more output")
    wait_until(lambda: "line 8" in output.inner_text(), what="the last line")
    assert page.evaluate("document.querySelector('#output').textContent").count("line 1\n") == 1
    shoot(page, screenshots, "attempt")

    # Pause: the job says so, and no run is fired after that.
    page = tab.go(f"/jobs/{job_id}")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_url(f"**/jobs/{job_id}")
    assert page.locator("h1 .badge").inner_text() == "paused"
    assert page.get_by_text("It will not fire again while paused").is_visible()
    paused_at = time.monotonic()
    count = len(runs_of(console, token, job_id))
    # Three intervals without a fire (the only waiting for an absence in this file).
    while time.monotonic() - paused_at < 9:
        assert len(runs_of(console, token, job_id)) == count, "a paused job fired"
        time.sleep(1)
    shoot(page, screenshots, "job")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page = tab.go("/jobs")
    page.wait_for_url("**/signin**")


def test_a_second_namespace_sees_none_of_the_first(
    tab: Page, browser: Any, console: Console
) -> None:
    first = console.token("team-b")
    tab.sign_in(first)
    schedule(tab.page, name="team-b-secret-job", command="true", kind="every", value="1h")
    tab.page.wait_for_url("**/jobs/*")
    job_id = tab.page.url.rsplit("/", 1)[1]

    other = Page(browser, console.url)
    try:
        other.sign_in(console.token("team-c"))
        assert "team-b-secret-job" not in other.page.content()
        assert other.page.locator("table.jobs a", has_text="team-b").count() == 0
        page = other.go(f"/jobs/{job_id}")
        assert page.get_by_role("heading", name="Not here").is_visible()
        assert "team-b-secret-job" not in page.content()
        page = other.go("/runs")
        assert "team-b-secret-job" not in page.content()
    finally:
        other.close()


def test_bad_input_shows_the_apis_error_next_to_its_field(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-d"))
    page = tab.page
    schedule(page, name="bad", command="true", kind="cron", value="99 * * * *")
    error = page.locator("#schedule-error")
    cli = console.dev.cli(
        "schedule",
        "--token",
        console.token("team-d"),
        "--cron",
        "99 * * * *",
        "--",
        "true",
        check=False,
    )
    assert error.is_visible() and "schedule.cron.expression" in error.inner_text()
    assert error.inner_text().split(": ", 1)[1] in cli.stderr
    assert page.get_by_label("Schedule", exact=True).get_attribute("aria-invalid") == "true"
    # The form keeps what was typed.
    assert page.get_by_label("Command").input_value() == "true"

    schedule(page, name="bad", command="true", kind="cron", value="0 * * * *", zone="Mars/Base")
    assert "schedule.cron.time_zone" in page.locator("#time_zone-error").inner_text()
    schedule(page, name="bad", command="true", kind="every", value="2x")
    assert "spec.schedule.every.interval" in page.locator("#schedule-error").inner_text()
    assert page.locator("table.jobs a", has_text="bad").count() == 0, "a refused job was stored"

    schedule(page, name="fine", command="true", kind="every", value="1h")
    page.wait_for_url("**/jobs/*")
    page.get_by_label("From (UTC)").fill("2026-01-02T00:00:00")
    page.get_by_label("To (UTC)").fill("2026-01-01T00:00:00")
    page.get_by_role("button", name="Queue the fires in between").click()
    assert page.locator("#to-error").inner_text() == "to: must not be before from"


def test_what_a_job_says_is_escaped(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-e"))
    page = tab.page
    page.evaluate("window.pwned = false")
    schedule(
        page,
        name='<img src=x onerror="window.pwned=true">',
        command="echo '<b>hi</b>'",
        kind="every",
        value="1h",
    )
    page.wait_for_url("**/jobs/*")
    assert page.locator("h1").inner_text().startswith('<img src=x onerror="window.pwned=true">')
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.pwned === true") is False


PAGES = ("/signin", "/jobs", "/job", "/runs", "/attempt")


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_every_page_passes_axe_and_is_photographed(
    browser: Any, console: Console, screenshots: Path, width: int, height: int
) -> None:
    tab = Page(browser, console.url, width=width, height=height)
    try:
        page = tab.go("/signin")
        found: dict[str, list[dict[str, Any]]] = {"signin": tab.axe()}
        shoot(page, screenshots, f"signin-{width}")
        token = console.token("team-axe")
        tab.sign_in(token)
        schedule(tab.page, name="photographed", command="echo hello", kind="every", value="2s")
        tab.page.wait_for_url("**/jobs/*")
        job_id = tab.page.url.rsplit("/", 1)[1]
        wait_until(
            lambda: [
                r for r in runs_of(console, token, job_id) if r["state"] == "RUN_STATE_SUCCEEDED"
            ],
            what="a finished run",
        )
        run = runs_of(console, token, job_id)[-1]
        for name, path in [
            ("jobs", "/jobs"),
            ("job", f"/jobs/{job_id}"),
            ("runs", "/runs"),
            ("attempt", f"/runs/{run['id']}/attempts/1"),
        ]:
            page = tab.go(path)
            page.wait_for_load_state("load")
            found[name] = tab.axe()
            shoot(page, screenshots, f"{name}-{width}")
        assert not [v for v in found.values() if v], f"axe found serious violations: {found}"
        # Usable at this size: nothing wider than the screen but the tables' own scrollers.
        page = tab.go("/jobs")
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    finally:
        tab.close()
    assert not tab.blocked, tab.blocked


def test_the_leaderboard_page_shows_the_top_keys_of_a_window(
    tab: Page, console: Console, screenshots: Path
) -> None:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as lb
    from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as lb_grpc

    now = Timestamp()
    now.GetCurrentTime()
    counts = {"home": 5, "pricing": 3, "<b>docs</b>": 1}
    events = [lb.Event(key=key, timestamp=now) for key, n in counts.items() for _ in range(n)]
    with grpc.insecure_channel(console.leaderboard) as channel:
        lb_grpc.LeaderboardStub(channel).RecordEvents(
            lb.RecordEventsRequest(batch_id="console-test", event_type="page_view", events=events),
            timeout=30,
        )
    tab.sign_in(console.token("team-lb"))
    page = tab.go("/cases/leaderboard?type=page_view&k=10&window=1h")
    rows = page.locator("table.board tbody tr")
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(3)] == [
        "home",
        "pricing",
        "<b>docs</b>",
    ]
    assert rows.nth(0).locator("td").nth(2).inner_text() == "5"
    assert not tab.axe(), "axe found serious violations on the leaderboard page"
    shoot(page, screenshots, "leaderboard")

    page = tab.go("/cases/leaderboard?type=page_view&k=0&window=1h")
    assert page.locator("#lb-error").inner_text().startswith("k: ")
    assert page.get_by_label("Top K").get_attribute("aria-invalid") == "true"
