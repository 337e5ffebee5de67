"""Bad input gets a clean error: generated requests for every RPC of hourglass.feed.v1.Feed,
sent to a real server on a real PostgreSQL, Redis and etcd.

Hypothesis mixes valid and invalid values for every field (ids of any int64, known and
unknown users, handles outside the alphabet or too long, texts too long or with control
characters, too many or repeated media, cursors that are not ids, limits out of range,
upload sizes, types, offsets and chunks of any kind). Every answer must be:

- clean: OK or a status the API documents (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  FAILED_PRECONDITION); never UNKNOWN, INTERNAL (an unhandled exception);
- precise: INVALID_ARGUMENT's message starts with "<field>: ";
- harmless when refused: the tables are fingerprinted before and after.

The server runs in a thread with its own event loop; the test calls it over a blocking
channel. HOURGLASS_HYPOTHESIS_PROFILE picks the number of examples (`ci` 1000, `dev` 100).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.cases.feed import CASE
from hourglass.cases.feed import server as feed_server
from hourglass.cases.feed.v1 import feed_pb2 as pb
from hourglass.cases.feed.v1 import feed_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedEtcd, EmbeddedRedis

for name, examples in (("dev", 100), ("ci", 1000)):
    settings.register_profile(
        f"feed-{name}", max_examples=examples, deadline=None, database=None, print_blob=True,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
PROFILE = os.environ.get("HOURGLASS_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "dev"
)
PROPERTY = settings(settings.get_profile(f"feed-{PROFILE}"))
INT64 = st.integers(-(2**63), 2**63 - 1)
FIELD = re.compile(
    r"^(request|user|followee|handle|text|media|media\[\d+\]|post|cursor|limit|upload|size"
    r"|content_type|offset|data|length): \S"
)
CLEAN = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
}  # fmt: skip
TABLES = ("handles", "users", "follows", "followers", "posts", "uploads")
# Columns written by the server's fan-out loop after a call has been answered.
BACKGROUND = "'{active_at,queued}'::text[]"


class LiveServer:
    def __init__(self, database_url: str, redis_url: str, etcd: str, folder: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = serve.settings(
            CASE, name=f"p{uuid.uuid4().hex[:8]}", namespace="", database_url=database_url,
            redis_url=redis_url, etcd_endpoints=etcd, listen="127.0.0.1:0", http_listen=None,
            metrics_listen=None, spec={"maxMediaBytes": 4096}, artifacts=str(folder / "objects"),
        )  # fmt: skip
        self.call(serve.migrate_case(CASE, database_url=database_url, schema=config.schema))
        self.running = self.call(feed_server.start(config))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.stub = pb_grpc.FeedStub(self.channel)
        self.db = psycopg.connect(config.database_url, autocommit=True)
        self.users = [self.stub.CreateUser(pb.CreateUserRequest(handle=h)).id for h in "ab"]

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def fingerprint(self) -> tuple[Any, ...]:
        """Each table's rows, hashed, without the columns the server's fan-out loop writes
        in the background on behalf of earlier calls (users.active_at after a first
        GetHomeTimeline, posts.queued after a CreatePost): those change between any two
        calls, refused or not. (A fingerprint by xmin saw them as a refused call's writes.)"""
        row = self.db.execute(
            "SELECT "
            + ", ".join(
                f"(SELECT count(*) || ':' || md5(coalesce(string_agg(r, ',' ORDER BY r), ''))"
                f" FROM (SELECT (to_jsonb(t) - {BACKGROUND})::text AS r FROM {table} t) s)"
                for table in TABLES
            )
        ).fetchone()
        assert row is not None
        return tuple(row)

    def close(self) -> None:
        self.channel.close()
        self.db.close()
        self.call(self.running.stop(grace=None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(
    postgres_server: Any, etcd_server: EmbeddedEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("feed-properties")
    database = f"feedprops_{uuid.uuid4().hex[:8]}"
    with postgres_server.admin() as admin:
        admin.execute(f"CREATE DATABASE {database}")
    redis_server = EmbeddedRedis(folder / "redis").start()
    server = LiveServer(postgres_server.dsn(database), redis_server.url, etcd_server.endpoint,
                        folder)  # fmt: skip
    yield server
    server.close()
    redis_server.stop()


def users(live: LiveServer) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(live.users), INT64, st.just(0))


TEXTS = st.one_of(st.text(max_size=300), st.just(""), st.just("x" * 281), st.just("a\x00b"))


def requests(live: LiveServer) -> st.SearchStrategy[tuple[str, Any]]:
    u = users(live)
    cursors = st.one_of(st.just(""), st.text(max_size=25), INT64.map(str))
    return st.one_of(
        st.tuples(st.just("CreateUser"), st.builds(pb.CreateUserRequest, handle=st.one_of(
            st.text(max_size=40), st.from_regex(r"[a-z0-9_]{1,40}", fullmatch=True)))),
        st.tuples(st.sampled_from(["Follow", "Unfollow"]),
                  st.builds(pb.FollowRequest, user=u, followee=u)),
        st.tuples(st.just("CreatePost"), st.builds(
            pb.CreatePostRequest, user=u, text=TEXTS, media=st.lists(INT64, max_size=6))),
        st.tuples(st.just("DeletePost"), st.builds(pb.DeletePostRequest, user=u, post=INT64)),
        st.tuples(st.sampled_from(["GetHomeTimeline", "GetUserPosts"]), st.builds(
            pb.TimelineRequest, user=u, cursor=cursors,
            limit=st.integers(-(2**31), 2**31 - 1))),
        st.tuples(st.just("StartUpload"), st.builds(
            pb.StartUploadRequest, user=u, size=INT64,
            content_type=st.one_of(st.just("image/png"), st.text(max_size=20)))),
        st.tuples(st.just("PutChunk"), st.builds(
            pb.PutChunkRequest, user=u, upload=INT64, offset=INT64, data=st.binary(max_size=64))),
        st.tuples(st.just("GetUpload"), st.builds(pb.GetUploadRequest, user=u, upload=INT64)),
        st.tuples(st.just("ReadMedia"), st.builds(
            pb.ReadMediaRequest, user=u, upload=INT64, offset=INT64,
            length=st.integers(-(2**31), 2**31 - 1))),
    )  # fmt: skip


def test_every_rpc_answers_bad_input_cleanly_naming_the_field(live: LiveServer) -> None:
    @PROPERTY
    @given(st.data())
    def check(data: st.DataObject) -> None:
        method, request = data.draw(requests(live))
        before = live.fingerprint()
        try:
            getattr(live.stub, method)(request, timeout=30)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        assert code in CLEAN, (method, request, code, details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert FIELD.match(details), (method, details)
        if code != grpc.StatusCode.OK:
            assert live.fingerprint() == before, (method, request, code, details)

    check()


def test_bytes_that_do_not_parse_get_invalid_argument(live: LiveServer) -> None:
    call = live.channel.unary_unary(
        "/hourglass.feed.v1.Feed/CreatePost",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as refused:
        call(b"\x12\x02\xff\xfe", timeout=30)  # text (field 2) that is not UTF-8
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("request: ")
