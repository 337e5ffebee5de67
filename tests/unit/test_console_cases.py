"""The case pages without a browser: the chart geometry, a refusal landing next to its
input, and a case that is not deployed or does not answer getting a page that says so
(never a 500)."""

from __future__ import annotations

from datetime import date

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from hourglass.console import app as console
from hourglass.console.case_pages import charts, feed
from hourglass.console.case_pages.common import refused, remember
from hourglass.console.client import ApiError

CASES = ("leaderboard", "shortener", "filesync", "metrics", "feed")


def test_day_bars_keep_every_day_in_place_and_scale_to_the_busiest() -> None:
    drawn = charts.day_bars(
        {"2026-03-01": 2, "2026-03-03": 4, "2026-02-01": 99},
        last=date(2026, 3, 3),
        count=3,
        width=30,
        height=11,
    )
    assert [bar.label for bar in drawn.bars] == [
        "2026-03-01: 2 visits",
        "2026-03-02: 0 visits",
        "2026-03-03: 4 visits",
    ]
    assert [bar.height for bar in drawn.bars] == [5.0, 0.0, 10.0]
    assert [bar.x for bar in drawn.bars] == [1.0, 11.0, 21.0]
    assert (drawn.total, drawn.most) == (6, 4), "a day outside the window counts nowhere"
    quiet = charts.day_bars({"2026-03-02": 1, "2026-03-03": 1000}, last=date(2026, 3, 3),
                            count=2, width=20, height=11)  # fmt: skip
    assert quiet.bars[0].height == 1.0, "a day with a visit is never drawn empty"


def test_a_plot_shares_one_scale_and_drops_points_outside_the_window() -> None:
    drawn = charts.plot(
        [("a", [0, 50, 100, 200], [1.0, 3.0, 5.0, 99.0]), ("b", [100], [2.0])],
        start_ms=0,
        end_ms=100,
        width=100,
        height=40,
    )
    assert (drawn.low, drawn.high) == (1.0, 5.0)
    assert drawn.lines[0].points == "0.0,40.0 50.0,20.0 100.0,0.0"
    assert drawn.lines[1].dots == [(100.0, 30.0)]
    assert drawn.lines[0].colour != drawn.lines[1].colour
    flat = charts.plot([("c", [10], [7.0])], start_ms=0, end_ms=100, width=100, height=40)
    assert (flat.low, flat.high) == (6.0, 8.0), "a flat series gets a height"


def test_a_refusal_lands_next_to_the_input_its_field_names() -> None:
    invalid = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "url: scheme must be http", "url")
    assert refused(invalid, {"url": "url"}, {"url": "x"})["error_input"] == "url"
    exists = ApiError(grpc.StatusCode.ALREADY_EXISTS, "workspace: 'w' exists already")
    assert refused(exists, {"workspace": "workspace"}, {})["error_input"] == "workspace"
    other = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "series: the batch is empty", "series")
    assert refused(other, {"url": "url"}, {})["error_input"] == "form"


def test_a_session_keeps_a_bounded_number_of_entries() -> None:
    kept: dict[str, object] = {}
    for n in range(5):
        remember(kept, f"k{n}", n, limit=3)
    remember(kept, "k2", "again", limit=3)
    assert list(kept) == ["k3", "k4", "k2"]


def test_a_feed_user_id_the_feed_cannot_be_asked_is_refused_by_field() -> None:
    assert feed.parse_id(" 42 ", "followee") == 42
    assert feed.parse_id(str(2**63 - 1), "user") == 2**63 - 1
    # Empty, zero or negative: the Feed's own refusal ("user: is required ...") is shown.
    assert feed.parse_id("", "user") == 0 and feed.parse_id("-3", "user") == 0
    assert feed.parse_id("ana", "followee") == (
        "followee: 'ana' is not a user id (a number, as CreateUser returned it)"
    )
    too_big = feed.parse_id(str(2**63), "user")
    assert isinstance(too_big, str) and too_big.startswith("user: ")


def test_a_feed_author_is_shown_by_handle_when_the_session_knows_it() -> None:
    users = {"7": "ana", "8": ""}
    assert feed.author(users, 7) == "@ana"
    assert feed.author(users, 8) == "user 8"
    assert feed.author(users, 9) == "user 9"


async def _signed_in(servers: dict[str, str]) -> tuple[TestClient, dict[str, str]]:
    app = console.make_app(console.Config(server="127.0.0.1:1", case_servers=servers))
    client = TestClient(TestServer(app))
    await client.start_server()
    session = client.app[console.SESSIONS].create("token", "a")
    return client, {"hourglass": session.id}


async def test_a_case_that_is_not_deployed_says_how_to_deploy_it() -> None:
    client, cookies = await _signed_in({})
    try:
        answer = await client.get("/cases/shortener", cookies=cookies)
        text = await answer.text()
        assert answer.status == 404
        assert "The shortener case is not deployed here." in text
        assert "hourglass dev --case shortener" in text
        answer = await client.get("/cases/feed?user=1", cookies=cookies)
        assert answer.status == 404
        assert "hourglass dev --case feed" in await answer.text()
        unknown = await client.get("/cases/feed<x>", cookies=cookies)
        assert unknown.status == 404 and "feed&lt;x&gt;" in await unknown.text()
    finally:
        await client.close()


@pytest.mark.parametrize(
    "path",
    [
        "/cases/metrics",
        "/cases/shortener",
        "/cases/leaderboard",
        "/cases/filesync",
        "/cases/feed",
        "/cases/feed?user=12",
    ],
)
async def test_a_case_whose_server_does_not_answer_says_so(path: str) -> None:
    # Port 1 refuses connections: the case is configured, its server is down.
    client, cookies = await _signed_in({name: "127.0.0.1:1" for name in CASES})
    try:
        answer = await client.get(path, cookies=cookies)
        text = await answer.text()
        assert answer.status == 503, text
        assert 'server at <span class="mono">127.0.0.1:1</span> does not answer' in text
    finally:
        await client.close()
