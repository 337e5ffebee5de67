"""The Job page's Revisions section in a real browser, against `hourglass dev --tokens`: a job
updated from the CLI shows both its specs, newest first, with what changed; what the specs
say is escaped, a secret's value never shows, and the page passes axe."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console, Page

SECRET_VALUE = "console-secret-never-shown"
HOSTILE_NAME = '<img src=x onerror="window.pwned=true">'


@pytest.fixture(params=[(1280, 800), (390, 844)], ids=["desktop", "phone"])
def tab(request: pytest.FixtureRequest, browser: Any, console: Console) -> Iterator[Page]:
    width, height = request.param
    opened = Page(browser, console.url, width=width, height=height)
    yield opened
    opened.close()
    assert not opened.blocked, f"the Content-Security-Policy blocked: {opened.blocked}"


def test_an_updated_job_shows_its_revisions_newest_first_with_what_changed(
    tab: Page, console: Console, screenshots: Path
) -> None:
    token = console.token("team-rev")
    secret = f"API_KEY={SECRET_VALUE}"
    job_id = console.dev.cli(
        "schedule", "--token", token, "--every", "1h", "--name", "rev-ui",
        "--secret-env", secret, "--", "echo", "one",
    ).stdout.strip()  # fmt: skip
    console.dev.cli(
        "update", job_id, "--token", token, "--every", "5m", "--name", HOSTILE_NAME,
        "--env", "MODE=fast", "--secret-env", secret, "--", "echo", "<b>two</b>",
    )  # fmt: skip

    tab.sign_in(token)
    page = tab.go(f"/jobs/{job_id}")
    page.evaluate("window.pwned = false")
    # The caption names the table for assistive technology.
    table = page.get_by_role("table", name=re.compile("Every spec of this job"))
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    newest, oldest = rows.nth(0), rows.nth(1)
    assert newest.get_by_role("rowheader").inner_text() == "2"
    assert oldest.get_by_role("rowheader").inner_text() == "1"
    newest_cells = [newest.locator("td").nth(i).inner_text() for i in range(4)]
    assert "every 5m" in newest_cells[1]
    assert newest_cells[2] == "echo '<b>two</b>'"
    assert newest_cells[3] == "name, schedule, args, env"
    assert "every 1h" in oldest.locator("td").nth(1).inner_text()
    assert oldest.locator("td").nth(2).inner_text() == "echo one"
    assert oldest.locator("td").nth(3).inner_text() == "created"

    # What a spec says is text, never markup; a secret's value is nowhere on the page.
    assert page.locator("table.revisions b, img[src=x]").count() == 0
    assert page.evaluate("window.pwned === true") is False
    assert SECRET_VALUE not in page.content()

    # It fits the screen: only the table scrolls sideways, inside the section.
    width = page.viewport_size["width"]
    section = page.locator("section[aria-labelledby=revisions-h]").bounding_box()
    assert section is not None and section["x"] + section["width"] <= width + 1

    violations = tab.axe()
    assert not violations, f"axe found serious violations on the job page: {violations}"
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / f"job-revisions-{width}.png"), full_page=True)
