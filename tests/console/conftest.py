"""The console's browser tests: `hourglass dev --tokens` with its console, and Debian's
Chromium driven headless by Playwright's Python library (never a browser Playwright
downloads: executable_path is the system's chromium)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hourglass.embedded import free_port
from tests.acceptance.conftest import Processes

CHROMIUM = os.environ.get("HOURGLASS_CHROMIUM", "/usr/bin/chromium")
ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).parents[2]
# The cases `hourglass dev` runs beside the console, each with its page.
CASES = ("leaderboard", "shortener", "filesync", "metrics", "feed")


@dataclass
class Console:
    dev: Processes
    url: str
    database_url: str
    # The leaderboard case's gRPC address (dev runs it with --case leaderboard).
    leaderboard: str
    # Every case's gRPC HOST:PORT, and HTTP base URL (for those with one: not the feed), by
    # name, as `hourglass dev` printed them.
    grpc: dict[str, str]
    http: dict[str, str]

    def token(self, namespace: str) -> str:
        created = self.dev.cli(
            "token", "create", "--namespace", namespace, "--database-url", self.database_url
        )
        return created.stdout.strip()


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One `hourglass dev --tokens` for the console tests: the API requires tokens, as in
    production, so that a second namespace is a real second tenant."""
    folder = tmp_path_factory.mktemp("console-dev")
    port, console_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env["HOURGLASS_SERVER"] = f"127.0.0.1:{port}"
    procs = Processes(logs=folder, env=env)
    procs.start(
        "dev",
        "dev",
        "--tokens",
        "--data-dir",
        str(folder / "data"),
        "--listen",
        f"127.0.0.1:{port}",
        "--console",
        f"127.0.0.1:{console_port}",
        *(arg for case in CASES for arg in ("--case", case)),
    )
    procs.wait_for_log("dev", f"serving hourglass.v1.JobScheduler on 127.0.0.1:{port}", 90)
    procs.wait_for_log("dev", "console on http://", 30)
    database = re.search(r"database: (\S+)", procs.log("dev"))
    faces = dict(
        (found.group(1), (found.group(2), found.group(3)))
        for found in re.finditer(r"(\w+): gRPC ([^\s,]+)(?:, HTTP (\S+))? ", procs.log("dev"))
    )
    assert database is not None and set(CASES) <= set(faces), procs.log("dev")
    yield Console(
        procs,
        f"http://127.0.0.1:{console_port}",
        database.group(1),
        faces["leaderboard"][0],
        grpc={name: face[0] for name, face in faces.items()},
        http={name: face[1] for name, face in faces.items() if face[1]},
    )
    procs.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API runs its own event loop while it is open, which
    the asyncio tests run after this module must not find."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("HOURGLASS_REQUIRE_CHROMIUM"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where each page's picture goes: a build artefact (HOURGLASS_SCREENSHOTS, or
    build/console-screenshots in the checkout)."""
    folder = Path(os.environ.get("HOURGLASS_SCREENSHOTS", REPO / "build" / "console-screenshots"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


class Page:
    """A browser tab that records what the Content-Security-Policy blocked."""

    def __init__(self, browser: Any, base: str, *, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.base = base
        self.blocked: list[str] = []
        self.page.on(
            "console",
            lambda message: (
                self.blocked.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def sign_in(self, token: str) -> None:
        page = self.go("/jobs")
        page.wait_for_url("**/signin**")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.base + "/jobs")

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        self.page.evaluate((ASSETS / "axe.min.js").read_text())
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
        return [v for v in result if v["impact"] in ("serious", "critical")]

    def close(self) -> None:
        self.context.close()
