"""Bad input gets a clean error: generated requests for every RPC of
hourglass.leaderboard.v1.Leaderboard, and generated queries for its HTTP face.

Hypothesis mixes valid and invalid values for every field (empty, oversized and NUL-bearing
keys and ids, event types outside the alphabet, weights and timestamps of any int64, nanos out
of range, k out of range, unaligned and reversed windows, unknown or repeated query
parameters) and sends them to a real server on a real PostgreSQL and Redis. Every answer
must be:

- clean: OK, INVALID_ARGUMENT or ALREADY_EXISTS over gRPC, 200 or 400 over HTTP; never
  UNKNOWN, INTERNAL or a 5xx (an unhandled exception);
- harmless when refused: the tables are fingerprinted before and after;
- precise: INVALID_ARGUMENT's message starts with "<field path>: ", and a 400's JSON body
  names the field.

The server runs in a thread with its own event loop; the test calls it over a blocking
channel. HOURGLASS_HYPOTHESIS_PROFILE picks the number of examples (`ci` 1000, `dev` 100).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.cases.leaderboard import CASE
from hourglass.cases.leaderboard import server as lb_server
from hourglass.cases.leaderboard.v1 import leaderboard_pb2 as pb
from hourglass.cases.leaderboard.v1 import leaderboard_pb2_grpc as pb_grpc
from hourglass.cli import serve
from hourglass.embedded import EmbeddedRedis

for name, examples in (("dev", 100), ("ci", 1000)):
    settings.register_profile(
        f"lb-{name}",
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
PROFILE = os.environ.get("HOURGLASS_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "dev"
)
PROPERTY = settings(settings.get_profile(f"lb-{PROFILE}"))

NOW = datetime(2025, 3, 3, 13, 37, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
INT64 = st.integers(-(2**63), 2**63 - 1)
RECORD_FIELD = re.compile(
    r"^(batch_id|event_type|events|events\[\d+\]\.(key|weight|timestamp|timestamp\.nanos)): \S"
)
FETCH_FIELD = re.compile(r"^(event_type|k|start|end|start\.nanos|end\.nanos): \S")
HTTP_FIELDS = {"type", "k", "start", "end", "query"}


class FrozenClock:
    def now(self) -> datetime:
        return NOW


class LiveServer:
    def __init__(self, database_url: str, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.name = f"p-{uuid.uuid4().hex[:8]}"
        # What `hourglass serve leaderboard --name <name>` does before the server starts.
        config = serve.settings(
            CASE,
            name=self.name,
            namespace="",
            database_url=database_url,
            redis_url=redis_url,
            etcd_endpoints="",
            listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            metrics_listen=None,
            spec={"retention": "30d"},
        )
        self.call(serve.migrate_case(CASE, database_url=database_url, schema=config.schema))
        self.running = self.call(lb_server.start(config, clock=FrozenClock()))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.stub = pb_grpc.LeaderboardStub(self.channel)
        self.db = psycopg.connect(config.database_url, autocommit=True)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def fingerprint(self) -> tuple[Any, ...]:
        row = self.db.execute(
            "SELECT "
            + ", ".join(
                f"(SELECT (count(*), coalesce(max(xmin::text::bigint), 0))::text FROM {table})"
                for table in ("event_types", "buckets", "counts", "batches", "rollups")
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


@pytest.fixture
def live(database_url: str, tmp_path: Any) -> Iterator[LiveServer]:
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    server = LiveServer(database_url, redis_server.url)
    yield server
    server.close()
    redis_server.stop()


def stamps() -> st.SearchStrategy[Timestamp | None]:
    seconds = st.one_of(
        st.integers(NOW_S - 31 * 86400, NOW_S + 2 * 3600),
        st.integers(NOW_S - 31 * 86400, NOW_S).map(lambda s: s - s % 60),
        INT64,
    )
    nanos = st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1))
    return st.one_of(
        st.none(), st.builds(lambda s, n: Timestamp(seconds=s, nanos=n), seconds, nanos)
    )


texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="abcXYZ019_.:-", min_size=1, max_size=70),
    st.sampled_from(["", "score", "a\0b", "x" * 300, "ü" * 100, "é" * 70]),
)


@st.composite
def events(draw: st.DrawFn) -> pb.Event:
    event = pb.Event(key=draw(texts), weight=draw(st.one_of(st.integers(0, 5), INT64)))
    stamp = draw(stamps())
    if stamp is not None:
        event.timestamp.CopyFrom(stamp)
    return event


@st.composite
def record_requests(draw: st.DrawFn) -> pb.RecordEventsRequest:
    return pb.RecordEventsRequest(
        batch_id=draw(st.one_of(st.uuids().map(str), texts, st.just("again"))),
        event_type=draw(texts),
        events=draw(st.lists(events(), max_size=4)),
    )


@st.composite
def fetch_requests(draw: st.DrawFn) -> pb.FetchLeaderboardRequest:
    request = pb.FetchLeaderboardRequest(
        event_type=draw(texts),
        k=draw(st.one_of(st.integers(-2, 1002), st.integers(-(2**31), 2**31 - 1))),
    )
    for field in ("start", "end"):
        stamp = draw(stamps())
        if stamp is not None:
            getattr(request, field).CopyFrom(stamp)
    return request


def answer(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_record_events_answers_cleanly_and_names_the_field(live: LiveServer) -> None:
    @PROPERTY
    @given(request=record_requests())
    def check(request: pb.RecordEventsRequest) -> None:
        before = live.fingerprint()
        code, details = answer(live.stub.RecordEvents, request)
        assert code in {
            grpc.StatusCode.OK,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.ALREADY_EXISTS,
        }, details
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert RECORD_FIELD.match(details), details
        if code != grpc.StatusCode.OK:
            assert live.fingerprint() == before, details

    check()


def test_fetch_leaderboard_answers_cleanly_and_names_the_field(live: LiveServer) -> None:
    @PROPERTY
    @given(request=fetch_requests())
    def check(request: pb.FetchLeaderboardRequest) -> None:
        before = live.fingerprint()
        code, details = answer(live.stub.FetchLeaderboard, request)
        assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, details
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert FETCH_FIELD.match(details), details
        assert live.fingerprint() == before

    check()


http_values = st.one_of(
    texts,
    st.integers(-(2**70), 2**70).map(str),
    st.integers(NOW_S - 31 * 86400, NOW_S).map(lambda s: str(s - s % 60)),
    st.sampled_from(
        ["2025-03-01T00:00:00Z", "2025-03-01T00:00:00", "2025-03-01T00:00:30+01:00", "1e9", "%ff"]
    ),
)


def test_http_top_answers_200_or_400_naming_the_field(live: LiveServer) -> None:
    port = live.running.http_port

    @PROPERTY
    @given(
        params=st.lists(
            st.tuples(st.sampled_from(["type", "k", "start", "end", "other"]), http_values),
            max_size=5,
        ),
        raw=st.booleans(),
    )
    def check(params: list[tuple[str, str]], raw: bool) -> None:
        query = "&".join(f"{k}={v}" for k, v in params) if raw else urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{port}/top?{urllib.parse.quote(query, safe='=&%')}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read())
        assert status in (200, 400), body
        if status == 400:
            # A raw value may itself hold "&name": then "name" is a parameter of the query.
            sent = set(urllib.parse.parse_qs(query, keep_blank_values=True))
            assert body["field"] in HTTP_FIELDS | {"other"} | sent, body
            assert body["error"].startswith(f"{body['field']}: "), body
        else:
            assert isinstance(body["entries"], list)

    check()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=score&k=%C2%B2", "k"),  # a superscript two: a digit to str.isdigit, not to int
        ("type=score&start=%D9%A3", "start"),
        ("type=score&k=-5", "k"),
        ("type=score&type=other", "type"),
        ("type=score&end=2025-03-01T00:00:00", "end"),
        ("type=score&start=%ff", "query"),
    ],
)
def test_pinned_http_cases(live: LiveServer, query: str, field: str) -> None:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{live.running.http_port}/top?{query}", timeout=30)
    except urllib.error.HTTPError as exc:
        assert (exc.code, json.loads(exc.read())["field"]) == (400, field)
    else:
        raise AssertionError("answered 200")


def test_a_request_that_does_not_parse_is_invalid_argument(live: LiveServer) -> None:
    method = live.channel.unary_unary(
        "/hourglass.leaderboard.v1.Leaderboard/RecordEvents",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    # Field 1 (batch_id), length 2, bytes that are not UTF-8.
    with pytest.raises(grpc.RpcError) as refused:
        method(b"\x0a\x02\xff\xfe", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("request: ")


def test_too_many_events_in_one_batch_are_refused(live: LiveServer) -> None:
    event = pb.Event(key="k", weight=1, timestamp=Timestamp(seconds=NOW_S - 60))
    request = pb.RecordEventsRequest(batch_id="big", event_type="score", events=[event] * 10_001)
    code, details = answer(live.stub.RecordEvents, request)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "events: at most 10000 events per batch",
    )
