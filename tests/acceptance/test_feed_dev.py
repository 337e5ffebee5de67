"""`hourglass dev --case feed`, as the README tells a newcomer to try the Feed, driven through
the real `hourglass feed` CLI (users, follows, posts with media, unfollow, delete, the
ScheduledJobs' trim and prewarm), with every home timeline checked against a reference
computed from the follow graph alone.

The dev resource gets a spec (`--case-spec feed=FILE`) with hotThreshold 2, so the author
whom three users follow is hot (merged on read, not fanned out) while the others are fanned
out. Midway, Redis is killed outright (SIGKILL of the redis-server that dev started); a post
made while it is down is still acknowledged (it is in PostgreSQL), and its fan-out is queued
by the server's sweep once Redis is back. `hourglass dev` cannot restart its Redis alone, so
the whole dev process is stopped and started on the same --data-dir: Redis replays its
append-only file. Then Redis loses everything (its folder removed before the next start),
and every timeline is rebuilt from PostgreSQL when read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from tests.acceptance.test_leaderboard_dev import Dev

ADDRESS = re.compile(r"feed: gRPC (\S+) \(schema (\w+)\)")
REDIS = re.compile(r"redis:\s+(redis://\S+)")


class FeedDev(Dev):
    """`hourglass dev --case feed --case-spec feed=...` on one data folder, restartable."""

    def start(self) -> str:
        self.runs += 1
        name = f"dev-{self.runs}"
        spec = self.folder / "spec.json"
        spec.write_text(json.dumps({"hotThreshold": 2, "fanoutChunk": 2}))
        self.procs.start(
            name, "dev", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}",
            "--case", "feed", "--case-spec", f"feed={spec}",
        )  # fmt: skip
        self.procs.wait_for_log(name, "hourglass dev: serving hourglass.v1.JobScheduler", 120)
        found = ADDRESS.search(self.procs.log(name))
        assert found, self.procs.log(name)
        assert found.group(2) == "feed_dev"
        self.address = found.group(1)
        url = REDIS.search(self.procs.log(name))
        assert url, self.procs.log(name)
        self.redis_url = url.group(1)
        return self.address

    def log_tail(self, size: int = 8000) -> str:
        """The running dev's output, for a failure's message: what its servers said."""
        return self.procs.log(f"dev-{self.runs}")[-size:]


@pytest.fixture
def dev() -> Iterator[FeedDev]:
    # Not under pytest's temporary tree: PostgreSQL runs as another user there, and a pytest
    # session started meanwhile (another engineer's) resets that tree to mode 0700.
    folder = Path(tempfile.mkdtemp(prefix="hourglass-feed-dev-"))
    folder.chmod(0o755)
    running = FeedDev(folder)
    yield running
    running.procs.stop_all()
    shutil.rmtree(folder, ignore_errors=True)


class World:
    """The CLI against the dev server, and the reference it must agree with."""

    def __init__(self, dev: FeedDev) -> None:
        self.dev = dev
        self.follows: set[tuple[int, int]] = set()
        self.posts: dict[int, int] = {}  # post id -> author
        self.users: list[int] = []
        self.confirmed = 0  # timelines confirmed through the CLI so far

    def cli(self, *args: str, check: bool = True) -> Any:
        return self.dev.procs.cli("feed", *args, "--server", self.dev.address, check=check)

    def user(self, handle: str) -> int:
        made = int(self.cli("user", handle).stdout)
        self.users.append(made)
        return made

    def follow(self, user: int, followee: int) -> None:
        assert self.cli("follow", str(user), str(followee)).stdout.strip() == "changed"
        self.follows.add((user, followee))

    def post(self, author: int, text: str, *media: Path) -> int:
        extra = [arg for path in media for arg in ("--media", str(path))]
        made = int(self.cli("post", str(author), text, *extra).stdout)
        self.posts[made] = author
        return made

    def expected(self, user: int) -> list[int]:
        followed = {b for a, b in self.follows if a == user}
        return sorted((p for p, a in self.posts.items() if a in followed), reverse=True)

    def via_cli(self, user: int) -> list[int]:
        page = json.loads(self.cli("timeline", str(user), "--limit", "200").stdout)
        return [int(p["id"]) for p in page["posts"]]

    def via_grpc(self, user: int) -> list[int]:
        with grpc.insecure_channel(self.dev.address) as channel:
            page = pb_grpc.FeedStub(channel).GetHomeTimeline(
                pb.TimelineRequest(user=user, limit=200), timeout=30, wait_for_ready=True
            )
        return [p.id for p in page.posts]

    def settled(self, what: str, timeout: float = 90) -> None:
        """Waits until every timeline equals the reference (fan-out is asynchronous), then
        confirms two of them through the CLI, the next two each time (every CLI call is a
        Python start, seconds on a loaded machine). A failure says what dev logged."""
        try:
            wait_until(what, lambda: all(self.via_grpc(u) == self.expected(u)
                                         for u in self.users), timeout)  # fmt: skip
            for _ in range(2):
                user = self.users[self.confirmed % len(self.users)]
                self.confirmed += 1
                assert self.via_cli(user) == self.expected(user), (what, user)
        except (AssertionError, grpc.RpcError) as exc:
            raise AssertionError(f"{what}: {exc}\n--- dev ---\n{self.dev.log_tail()}") from exc


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_timelines_match_the_follow_graph_through_dev_and_the_cli_across_redis_loss(
    dev: FeedDev, tmp_path: Path
) -> None:
    dev.start()
    world = World(dev)
    hot, normal, quiet, a, b, c = (world.user(h) for h in ("hot", "normal", "quiet", "a", "b", "c"))
    for user in (a, b, c):
        world.follow(user, hot)  # three followers: more than hotThreshold 2
    world.follow(a, normal)
    world.follow(b, normal)
    world.follow(c, quiet)
    world.follow(hot, quiet)
    taken = world.cli("user", "hot", check=False)
    assert taken.returncode == 2 and "ALREADY_EXISTS" in taken.stderr
    bad = world.cli("post", str(a), "x" * 281, check=False)
    assert bad.returncode == 2 and "text: must be at most 280 characters" in bad.stderr
    for user in world.users:  # each timeline is read once, so Redis holds it from here on
        assert world.via_grpc(user) == []

    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300_000))  # two upload chunks
    for i in range(4):
        for author in (hot, normal, quiet):
            world.post(author, f"{i} from {author}")
    with_media = world.post(normal, "a picture", picture)
    world.settled("the first posts")
    posts = json.loads(world.cli("posts", str(normal), "--limit", "1").stdout)["posts"]
    assert int(posts[0]["id"]) == with_media and posts[0]["media"][0]["size"] == "300008"

    # Unfollow and delete take effect.
    world.cli("unfollow", str(a), str(normal))
    world.follows.discard((a, normal))
    gone = next(p for p, author in world.posts.items() if author == hot)
    world.cli("delete", str(hot), str(gone))
    del world.posts[gone]
    world.settled("unfollow and delete")

    # Redis killed outright. A post while it is away is acknowledged (it is in PostgreSQL);
    # reads fail cleanly.
    os.kill(dev.redis_pid(), signal.SIGKILL)
    world.post(normal, "while redis was away")
    down = world.cli("timeline", str(b), check=False)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    dev.stop()
    dev.start()  # Redis replays its append-only file; the sweep queues the missed fan-out
    world.post(quiet, "after the restart")
    world.settled("the restart of Redis")
    # Crossing the threshold either way: normal turns hot (a third follower), hot turns
    # normal (down to two): their followers' timelines follow.
    world.follow(c, normal)
    world.follow(a, normal)
    world.cli("unfollow", str(c), str(hot))
    world.follows.discard((c, hot))
    world.post(normal, "now hot")
    world.post(hot, "no longer hot")
    world.settled("the threshold crossed both ways")

    # Redis loses everything: the timelines are rebuilt from PostgreSQL on read (the
    # prewarm ScheduledJob would have built the active users' ones ahead).
    dev.stop()
    shutil.rmtree(dev.data / "redis")
    dev.start()
    world.settled("the loss of Redis's data")
    warmed = world.cli("prewarm").stdout
    assert re.fullmatch(r"built \d+ of 6 active users' timelines\n", warmed), warmed
    assert world.cli("trim").stdout.startswith("trimmed ")
