"""The case pages in a real browser (headless Chromium), against `hourglass dev` running
every case beside the console: each page shows what its case's server holds (a link's
visits, a file's versions, a query's points), puts the server's own field-named refusal
next to the input, passes axe-core, fits a desktop and a phone screen, and is photographed
into the same artefact folder as the other pages."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.console.conftest import Console, Page
from tests.console.test_console import shoot, wait_until


@pytest.fixture
def tab(browser: Any, console: Console) -> Iterator[Page]:
    opened = Page(browser, console.url)
    yield opened
    opened.close()
    assert not opened.blocked, f"the Content-Security-Policy blocked: {opened.blocked}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def visit(console: Console, key: str, *, referrer: str, agent: str) -> int:
    """Follows a short link as a browser would, without going on to its target."""
    request = urllib.request.Request(
        f"{console.http['shortener']}/{key}", headers={"Referer": referrer, "User-Agent": agent}
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def shorten(page: Any, url: str, alias: str = "") -> None:
    page.get_by_label("URL").fill(url)
    page.get_by_label("Custom key (optional)").fill(alias)
    page.get_by_role("button", name="Shorten").click()


def send_points(console: Console, name: str, room: str, values: list[float]) -> None:
    """`values` as one point a minute up to now, into the metrics case's gRPC face."""
    from hourglass.cases.metrics.v1 import metrics_pb2 as pb
    from hourglass.cases.metrics.v1 import metrics_pb2_grpc as pb_grpc

    now_ms = int(time.time() * 1000)
    series = pb.Series(
        labels=[pb.Label(name="__name__", value=name), pb.Label(name="room", value=room)],
        timestamps_ms=[now_ms - (len(values) - i) * 60_000 for i in range(len(values))],
        values=values,
    )
    with grpc.insecure_channel(console.grpc["metrics"]) as channel:
        pb_grpc.MetricsStub(channel).SendMetrics(pb.SendMetricsRequest(series=[series]), timeout=30)


def test_the_shortener_page_shows_a_links_visits_on_its_chart(
    tab: Page, console: Console, screenshots: Path
) -> None:
    tab.sign_in(console.token("team-short"))
    page = tab.go("/cases/shortener")
    shorten(page, "https://example.com/docs/<getting-started>")
    page.wait_for_url("**/cases/shortener?key=*")
    key = page.url.rsplit("=", 1)[1]
    assert page.locator("#link-total").inner_text() == "0"
    assert page.locator(f"table.links tr[data-key='{key}']").is_visible()

    desktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
    for _ in range(3):
        assert visit(console, key, referrer="https://news.example/item", agent=desktop) in (
            301,
            302,
            307,
            308,
        )

    # Visits are counted off the request path, within seconds: the page shows them then.
    def counted() -> bool:
        return bool(
            tab.go(f"/cases/shortener?key={key}").locator("#link-total").inner_text() == "3"
        )

    wait_until(counted, what="three visits on the link's page")
    page = tab.page
    today = page.locator("#link svg.days rect").last
    assert today.locator("title").text_content().endswith(": 3 visits")
    assert float(today.get_attribute("height") or 0) > 0
    assert page.locator("#link table", has_text="news.example").is_visible()
    assert page.locator("#link table", has_text="desktop").is_visible()
    row = page.locator(f"table.links tr[data-key='{key}']")
    assert row.locator("td.total").inner_text() == "3"
    assert row.locator("svg").get_attribute("aria-label") == "3 visits in the last 14 days"
    # The link's target is text, never markup.
    assert page.locator("#link dd", has_text="<getting-started>").is_visible()
    assert not tab.axe(), "axe found serious violations on the shortener page"
    shoot(page, screenshots, "shortener")


def test_the_shortener_page_puts_the_refusal_next_to_its_field(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-short-bad"))
    page = tab.go("/cases/shortener")
    shorten(page, "javascript:alert(1)")
    error = page.locator("#url-error")
    assert error.inner_text().startswith("url: "), error.inner_text()
    assert page.get_by_label("URL").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("URL").input_value() == "javascript:alert(1)"
    assert page.locator("table.links tr[data-key]").count() == 0, "a refused link was kept"

    shorten(page, "https://example.com/", alias="no")
    assert page.locator("#alias-error").inner_text().startswith("alias: ")

    page = tab.go("/cases/shortener?key=no such key")
    assert page.locator("#key-error").inner_text().startswith("key: ")
    assert page.get_by_label("Key", exact=True).get_attribute("aria-invalid") == "true"


def test_the_filesync_page_shows_a_workspace_and_a_files_versions(
    tab: Page, console: Console, screenshots: Path, tmp_path: Path
) -> None:
    tab.sign_in(console.token("team-files"))
    page = tab.go("/cases/filesync")
    page.get_by_label("Workspace", exact=True).fill("console-docs")
    page.get_by_label("Owner's user name").fill("ana")
    page.get_by_role("button", name="Make it").click()
    page.wait_for_url("**/cases/filesync?workspace=console-docs")
    token = page.locator("#made-token").inner_text()
    assert page.get_by_text("No files yet.").is_visible()

    # Two versions of one file, written by FileSync's own command line with that token.
    token_file = tmp_path / "token"
    token_file.write_text(token)
    for text in ("first draft\n", "second draft, longer\n"):
        body = tmp_path / "notes.txt"
        body.write_text(text)
        console.dev.cli(
            "filesync", "upload", "console-docs", str(body), "notes/today.txt",
            "--server", console.grpc["filesync"], "--token-file", str(token_file),
        )  # fmt: skip

    page = tab.go("/cases/filesync?workspace=console-docs")
    assert page.locator("#made-token").count() == 0, "the owner's token was shown twice"
    row = page.locator("table.files tr[data-path='notes/today.txt']")
    assert row.locator("td").nth(1).inner_text() == "2"
    row.get_by_role("link", name="notes/today.txt").click()
    page.wait_for_url(lambda url: "&path=notes" in url)
    versions = page.locator("table.versions tbody tr")
    assert versions.count() == 2
    assert versions.nth(0).get_attribute("data-version") == "2"
    assert versions.nth(0).locator("td").nth(1).inner_text() == "21 B"
    assert versions.nth(1).locator("td").nth(1).inner_text() == "12 B"
    assert "ana" in versions.nth(0).inner_text()
    assert not tab.axe(), "axe found serious violations on the filesync page"
    shoot(page, screenshots, "filesync")


def test_the_filesync_page_puts_the_refusal_next_to_its_field(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-files-bad"))
    page = tab.go("/cases/filesync")
    page.get_by_label("Workspace", exact=True).fill("Not A Name")
    page.get_by_label("Owner's user name").fill("ana")
    page.get_by_role("button", name="Make it").click()
    assert page.locator("#workspace-error").inner_text().startswith("workspace: ")
    assert page.get_by_label("Workspace", exact=True).get_attribute("aria-invalid") == "true"

    page.get_by_label("Workspace to open").fill("console-nobody")
    page.get_by_label("Member's token").fill("not-a-token")
    page.get_by_role("button", name="Open").click()
    assert page.locator("#token-error").inner_text().startswith("token: ")
    assert page.get_by_label("Member's token").input_value() == "", "a token was written back"
    assert page.get_by_text("None yet").is_visible(), "a refused workspace was kept"

    # A workspace this session has not opened is not shown, whatever the URL says.
    page = tab.go("/cases/filesync?workspace=console-docs")
    assert page.locator("#open_workspace-error").is_visible()
    assert page.locator("table.files").count() == 0


def test_the_metrics_page_draws_a_querys_points(
    tab: Page, console: Console, screenshots: Path
) -> None:
    send_points(console, "console_temperature", "lab", [20.5, 21.0, 22.5, 21.5, 23.0])
    send_points(console, "console_temperature", "hall", [18.0, 18.5, 18.0, 17.5, 18.0])
    tab.sign_in(console.token("team-metrics"))
    path = "/cases/metrics?selector=console_temperature&window=1h&step=raw"

    # Points are durable when sent and readable once the consumers filed them.
    def drawn() -> bool:
        return bool(tab.go(path).locator("#metrics-chart polyline").count() == 2)

    wait_until(drawn, what="two series on the metrics chart")
    page = tab.page
    rows = page.locator("table.series tbody tr")
    texts = sorted(rows.nth(i).inner_text() for i in range(2))
    assert 'console_temperature{room="hall"}' in texts[0] and "\t5\t18\t17.5\t18.5" in texts[0]
    assert 'console_temperature{room="lab"}' in texts[1] and "\t5\t23\t20.5\t23" in texts[1]
    assert page.locator("#metrics-chart circle").count() == 10
    assert not tab.axe(), "axe found serious violations on the metrics page"
    shoot(page, screenshots, "metrics")

    page = tab.go("/cases/metrics?selector=console_temperature&window=1h&step=1m")
    wait_until(lambda: page.locator("#metrics-chart polyline").count() == 2, what="a step query")
    assert "rollup" in page.locator("#result-h + p").inner_text()


def test_the_metrics_page_puts_the_refusal_next_to_its_field(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-metrics-bad"))
    page = tab.go("/cases/metrics")
    # From the keyboard alone: Tab to the selector, type, Enter.
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "selector":
            break
    else:
        raise AssertionError("Tab never reached the series selector")
    page.keyboard.type('console_temperature{room="lab"')
    page.keyboard.press("Enter")
    page.wait_for_url("**selector=*")
    error = page.locator("#selector-error")
    assert error.inner_text().startswith("selector: "), error.inner_text()
    assert page.get_by_label("Series selector").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Series selector").input_value() == 'console_temperature{room="lab"'


def make_user(page: Any, handle: str) -> str:
    """Makes a Feed user from the page; their id (the page then shows them)."""
    page.get_by_label("Handle").fill(handle)
    page.get_by_role("button", name="Make the user").click()
    page.wait_for_url("**/cases/feed?user=*")
    return str(page.url.rsplit("=", 1)[1])


def test_the_feed_page_shows_a_post_on_a_followers_timeline(
    tab: Page, console: Console, screenshots: Path
) -> None:
    tab.sign_in(console.token("team-feed"))
    suffix = str(time.time_ns())[-8:]
    page = tab.go("/cases/feed")
    ana = make_user(page, f"ana_{suffix}")
    assert page.locator("#feed-notice").inner_text().startswith(f"Made @ana_{suffix}")
    page = tab.go("/cases/feed")
    bob = make_user(page, f"bob_{suffix}")
    assert page.get_by_text("Nothing yet: follow someone who posts.").is_visible()

    # Bob follows Ana: from the keyboard, the id typed and the Follow button pressed.
    page.get_by_label("User id to follow or unfollow").fill(ana)
    page.get_by_label("User id to follow or unfollow").press("Enter")
    page.wait_for_url(f"**/cases/feed?user={bob}")
    assert page.locator("#feed-notice").inner_text() == f"@bob_{suffix} now follows @ana_{suffix}."

    # Ana posts; markup in a post is text, never markup.
    page = tab.go(f"/cases/feed?user={ana}")
    page.get_by_label("Text of the post (up to 280 characters)").fill("hello <b>feed</b>")
    page.get_by_role("button", name="Post").click()
    page.wait_for_url(f"**/cases/feed?user={ana}")
    assert page.locator("table.own tbody tr[data-post]").count() == 1

    # The fan-out is asynchronous: the post reaches Bob's timeline within moments.
    def arrived() -> bool:
        rows = tab.go(f"/cases/feed?user={bob}").locator("table.home tbody tr[data-post]")
        return bool(rows.count() == 1)

    wait_until(arrived, what="Ana's post on Bob's home timeline")
    page = tab.page
    row = page.locator("table.home tbody tr[data-post]").first
    assert row.locator("td.post-text").inner_text() == "hello <b>feed</b>"
    assert row.locator("b").count() == 0
    assert row.get_by_role("link").inner_text() == f"@ana_{suffix}"
    assert not tab.axe(), "axe found serious violations on the feed page"
    shoot(page, screenshots, "feed")

    # Unfollowing takes Ana's posts off Bob's timeline at once.
    page.get_by_label("User id to follow or unfollow").fill(ana)
    page.get_by_role("button", name="Unfollow").click()
    page.wait_for_url(f"**/cases/feed?user={bob}")
    assert page.locator("#feed-notice").inner_text().startswith(f"@bob_{suffix} no longer follows")
    assert page.locator("table.home tbody tr[data-post]").count() == 0


def test_the_feed_timeline_pages_newest_first(tab: Page, console: Console) -> None:
    """More posts than a page holds: the first page is the newest, "Older posts" the rest."""
    from hourglass.cases.feed.v1 import feed_pb2 as pb
    from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc

    suffix = str(time.time_ns())[-8:]
    with grpc.insecure_channel(console.grpc["feed"]) as channel:
        stub = pb_grpc.FeedStub(channel)
        writer = stub.CreateUser(pb.CreateUserRequest(handle=f"w_{suffix}"), timeout=30).id
        reader = stub.CreateUser(pb.CreateUserRequest(handle=f"r_{suffix}"), timeout=30).id
        stub.Follow(pb.FollowRequest(user=reader, followee=writer), timeout=30)
        for n in range(25):
            stub.CreatePost(pb.CreatePostRequest(user=writer, text=f"post {n}"), timeout=30)
    tab.sign_in(console.token("team-feed-pages"))

    def filled() -> bool:
        page = tab.go(f"/cases/feed?user={reader}")
        return bool(page.locator("table.home tbody tr[data-post]").count() == 20)

    wait_until(filled, what="a full first page of the reader's timeline")
    page = tab.page
    texts = page.locator("table.home td.post-text").all_inner_texts()
    assert texts == [f"post {n}" for n in range(24, 4, -1)]
    page.get_by_role("link", name="Older posts").click()
    page.wait_for_url("**cursor=*")
    texts = page.locator("table.home td.post-text").all_inner_texts()
    assert texts == [f"post {n}" for n in range(4, -1, -1)]
    assert page.get_by_role("link", name="Older posts").count() == 0
    assert page.get_by_role("link", name="Newest posts").is_visible()


def test_the_feed_page_puts_the_refusal_next_to_its_field(tab: Page, console: Console) -> None:
    tab.sign_in(console.token("team-feed-bad"))
    page = tab.go("/cases/feed")
    page.get_by_label("Handle").fill("Not A Handle")
    page.get_by_role("button", name="Make the user").click()
    assert page.locator("#handle-error").inner_text().startswith("handle: ")
    assert page.get_by_label("Handle").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Handle").input_value() == "Not A Handle"
    assert page.get_by_text("None yet").is_visible(), "a refused user was kept"

    page = tab.go("/cases/feed?user=not-an-id")
    assert page.locator("#open_user-error").inner_text().startswith("user: ")
    page = tab.go("/cases/feed?user=99")
    assert page.locator("#open_user-error").inner_text() == "user: no user 99"
    assert page.get_by_label("User id", exact=True).get_attribute("aria-invalid") == "true"

    suffix = str(time.time_ns())[-8:]
    user = make_user(tab.go("/cases/feed"), f"cy_{suffix}")
    page.get_by_label("User id to follow or unfollow").fill(user)
    page.get_by_role("button", name="Follow", exact=True).click()
    error = page.locator("#followee-error")
    assert error.inner_text() == "followee: a user cannot follow themselves"
    followee = page.get_by_label("User id to follow or unfollow")
    assert followee.get_attribute("aria-invalid") == "true"

    page.get_by_label("Text of the post (up to 280 characters)").fill("x" * 281)
    page.get_by_role("button", name="Post").click()
    assert page.locator("#text-error").inner_text() == "text: must be at most 280 characters"
    assert page.get_by_label("Text of the post (up to 280 characters)").input_value() == "x" * 281
    assert page.get_by_text("No posts yet.").is_visible(), "a refused post was stored"


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_every_case_page_passes_axe_and_fits_the_screen(
    browser: Any, console: Console, screenshots: Path, width: int, height: int
) -> None:
    tab = Page(browser, console.url, width=width, height=height)
    try:
        tab.sign_in(console.token(f"team-cases-{width}"))
        send_points(console, "console_fit", str(width), [1.0, 3.0, 2.0])
        page = tab.go("/cases/shortener")
        shorten(page, f"https://example.com/a/rather/long/path/to/fit/{width}/" + "x" * 80)
        page.wait_for_url("**?key=*")
        # Each page as it looks with something in it: a link, a workspace, a query, a post.
        paths = {"leaderboard": "/cases/leaderboard", "shortener": page.url[len(console.url) :]}
        page = tab.go("/cases/filesync")
        page.get_by_label("Workspace", exact=True).fill(f"console-fit-{width}")
        page.get_by_label("Owner's user name").fill("ana")
        page.get_by_role("button", name="Make it").click()
        page.wait_for_url("**?workspace=*")
        paths["filesync"] = page.url[len(console.url) :]
        page = tab.go("/cases/feed")
        make_user(page, f"fit_{width}_{str(time.time_ns())[-8:]}")
        page.get_by_label("Text of the post (up to 280 characters)").fill("a post " + "y" * 200)
        page.get_by_role("button", name="Post").click()
        page.wait_for_url("**?user=*")
        paths["feed"] = page.url[len(console.url) :]
        query = f"/cases/metrics?selector=console_fit{{room=%22{width}%22}}&window=1h"
        found: dict[str, list[dict[str, Any]]] = {}
        wide: dict[str, int] = {}
        for name in ("leaderboard", "shortener", "filesync", "metrics", "feed"):
            if name == "metrics":
                wait_until(
                    lambda: tab.go(query).locator("#metrics-chart polyline").count() == 1,
                    what="the points on the metrics chart",
                )
                page = tab.page
            else:
                page = tab.go(paths[name])
            page.wait_for_load_state("load")
            found[name] = tab.axe()
            wide[name] = page.evaluate("document.documentElement.scrollWidth")
            shoot(page, screenshots, f"{name}-{width}")
            # Every input and choice has a label.
            for control in page.locator("main input:not([type=hidden]), main select").all():
                assert control.evaluate("e => e.labels.length") >= 1, control.get_attribute("id")
        assert not [v for v in found.values() if v], f"axe found serious violations: {found}"
        assert all(w <= width + 1 for w in wide.values()), f"wider than the screen: {wide}"
    finally:
        tab.close()
    assert not tab.blocked, tab.blocked
