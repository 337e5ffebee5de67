"""Bad input gets a clean error: generated requests for every RPC of hourglass.v1.Locks.

As for JobScheduler (test_api_properties.py, whose checks and value strategies this reuses):
hypothesis mixes valid and invalid names, TTLs, waits, holders and leases, and sends them to
a real API server on a real etcd. Every answer must be clean (never UNKNOWN or INTERNAL),
harmless when refused (the lock keys in etcd are fingerprinted before and after), and, when
INVALID_ARGUMENT, start with the path of a field of the request. Requests that do not parse
go over a raw channel. HOURGLASS_HYPOTHESIS_PROFILE sets the count: `ci` 1000 per RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.duration_pb2 import Duration
from hypothesis import given
from hypothesis import strategies as st

from hourglass.api import server as api_server
from hourglass.api.auth import Insecure
from hourglass.embedded import EmbeddedEtcd
from hourglass.locks import Etcd
from hourglass.store import db
from hourglass.v1 import locks_pb2 as pb
from hourglass.v1 import locks_pb2_grpc as pb_grpc
from tests.integration.test_api_properties import (
    BAD_UTF8,
    CALL_TIMEOUT,
    CLEAN,
    INT64,
    PROPERTY,
    Answer,
    _answer,
    _event,
    _not_utf8,
    assert_names_a_field,
    wild_durations,
    wild_texts,
)

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["Locks"]
NAMES = ["job", "reports/daily", "a.b-c:d"]
# A wait longer than this on a held lock would hold the example up: it is cut to this.
SHORT_WAIT = 0.2


class LiveLocks:
    """The real API server with Locks in a thread of its own, and a blocking channel to it."""

    def __init__(self, dsn: str, endpoint: str, prefix: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.prefix = prefix
        self._pool = self._run(db.open_pool(dsn))
        self.etcd = Etcd(endpoint, prefix)
        self._server = self._run(
            api_server.start(self._pool, "127.0.0.1:0", dsn=dsn, auth=Insecure(), etcd=self.etcd)
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self._server.port}")
        self.stub = pb_grpc.LocksStub(self.channel)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def close(self) -> None:
        self.channel.close()
        self._run(self._server.stop(grace=None))
        self._run(self.etcd.close())
        self._run(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def snapshot(self) -> tuple[tuple[bytes, int, int], ...]:
        """Every lock key: (key, create revision, lease). A refused call changes none."""
        keys = self._run(self.etcd.client.get_prefix(f"{self.prefix}mutex/".encode()))
        return tuple(sorted((kv.key, kv.create_revision, kv.lease) for kv in keys))

    def hold(self, name: str) -> int:
        """Someone else holds `name`; returns the lease."""
        reply = self.stub.Acquire(
            pb.AcquireRequest(name=name, ttl=Duration(seconds=30)), timeout=CALL_TIMEOUT
        )
        assert reply.acquired
        return int(reply.lease)

    def clear(self) -> None:
        """Ends every lease left, so examples do not see each other's locks."""
        for _, _, lease in self.snapshot():
            with contextlib.suppress(Exception):
                self._run(self.etcd.revoke(lease))

    def check(self, request_type: Descriptor, call: Callable[[], Any]) -> Answer:
        before = self.snapshot()
        answer = _answer(call)
        assert answer.code in CLEAN - {grpc.StatusCode.RESOURCE_EXHAUSTED}, (
            f"{answer.code.name}: {answer.details}"
        )
        _event(answer.code.name)
        if answer.code != grpc.StatusCode.OK:
            assert self.snapshot() == before, f"refused ({answer.details}), yet keys changed"
        if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert_names_a_field(request_type, answer.details)
            assert len(answer.details) <= 1024
            _event(f"INVALID_ARGUMENT {answer.details.partition(': ')[0]}")
        return answer


@pytest.fixture
def live(database_url: str, etcd_server: EmbeddedEtcd, etcd_prefix: str) -> Iterator[LiveLocks]:
    locks = LiveLocks(database_url, etcd_server.endpoint, etcd_prefix)
    yield locks
    locks.close()


names = st.one_of(st.sampled_from(NAMES), wild_texts(*NAMES))
durations_or_none = st.one_of(
    st.none(),
    wild_durations(),
    st.floats(0, 5).map(lambda s: Duration(seconds=int(s), nanos=int((s % 1) * 1e9))),
)


def _seconds(message: Duration | None) -> float:
    return 0.0 if message is None else message.seconds + message.nanos / 1e9


@PROPERTY
@given(
    name=names,
    ttl=durations_or_none,
    wait=durations_or_none,
    holder=wild_texts("host:1"),
    held=st.booleans(),
)
def test_acquire(
    live: LiveLocks,
    name: str,
    ttl: Duration | None,
    wait: Duration | None,
    holder: str,
    held: bool,
) -> None:
    try:
        other = live.hold(name) if held and name in NAMES else 0
        if other and SHORT_WAIT < _seconds(wait) <= 3600 and wait is not None:
            wait = Duration(seconds=0, nanos=int(SHORT_WAIT * 1e9))
        request = pb.AcquireRequest(name=name, holder=holder)
        if ttl is not None:
            request.ttl.CopyFrom(ttl)
        if wait is not None:
            request.wait.CopyFrom(wait)
        answer = live.check(
            SERVICE.methods_by_name["Acquire"].input_type,
            lambda: live.stub.Acquire(request, timeout=CALL_TIMEOUT),
        )
        if answer.code == grpc.StatusCode.OK:
            assert answer.response.acquired == (not other)
            if other:
                assert answer.response.holder.lease == other
    finally:
        live.clear()


def _lease_refs() -> st.SearchStrategy[tuple[str, int]]:
    return st.one_of(
        st.tuples(st.just("held"), st.just(0)),
        st.tuples(st.just("other name"), st.just(0)),
        st.tuples(st.just("raw"), st.one_of(st.sampled_from([0, -1, 1, 2**63 - 1]), INT64)),
    )


def _lease_call(method: str) -> Callable[[LiveLocks, str, tuple[str, int]], None]:
    def test(live: LiveLocks, name: str, lease: tuple[str, int]) -> None:
        try:
            kind, value = lease
            if kind == "held" and name in NAMES:
                value = live.hold(name)
            elif kind == "other name":
                value = live.hold("zz-another-lock")
            request = getattr(pb, f"{method}Request")(name=name, lease=value)
            answer = live.check(
                SERVICE.methods_by_name[method].input_type,
                lambda: getattr(live.stub, method)(request, timeout=CALL_TIMEOUT),
            )
            if kind == "held" and name in NAMES:
                assert answer.code == grpc.StatusCode.OK, answer.details
            if kind == "other name" or (kind == "raw" and value > 0):
                assert answer.code in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ), answer
        finally:
            live.clear()

    return test


test_keep_alive = PROPERTY(given(name=names, lease=_lease_refs())(_lease_call("KeepAlive")))
test_release = PROPERTY(given(name=names, lease=_lease_refs())(_lease_call("Release")))


@PROPERTY
@given(name=names, waiters=st.integers(0, 3), held=st.booleans())
def test_describe(live: LiveLocks, name: str, waiters: int, held: bool) -> None:
    try:
        lease = live.hold(name) if held and name in NAMES else 0
        answer = live.check(
            SERVICE.methods_by_name["Describe"].input_type,
            lambda: live.stub.Describe(pb.DescribeRequest(name=name), timeout=CALL_TIMEOUT),
        )
        if answer.code == grpc.StatusCode.OK:
            assert answer.response.holder.lease == lease
            assert answer.response.waiting == 0
    finally:
        live.clear()


def test_every_rpc_has_a_property_test() -> None:
    tested = {
        name.removeprefix("test_").replace("_", "")
        for name, value in globals().items()
        if name.startswith("test_") and callable(value)
    }
    assert {method.name.lower() for method in SERVICE.methods} <= tested


@st.composite
def undecodable(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    """(method, raw request, the field an INVALID_ARGUMENT must name, if one)."""
    method = draw(st.sampled_from(sorted(SERVICE.methods_by_name)))
    request_type = getattr(pb, f"{method}Request")
    valid = request_type(name="job").SerializeToString()
    how = draw(st.sampled_from(["utf8", "cut", "noise", "appended"]))
    if how == "utf8":
        bad = draw(
            st.one_of(
                st.sampled_from(BAD_UTF8),
                st.tuples(st.sampled_from(BAD_UTF8), st.binary(max_size=3))
                .map(b"".join)
                .filter(_not_utf8),
            )
        )
        # A name of the same length as the bad bytes, so that its length prefix fits them.
        placeholder = ("~" * len(bad)).encode()
        spoiled = request_type(name=placeholder.decode()).SerializeToString()
        return method, spoiled.replace(placeholder, bad), "name"
    match how:
        case "cut":
            return method, valid[: draw(st.integers(0, len(valid) - 1))], None
        case "noise":
            return method, draw(st.binary(max_size=64)), None
        case _:
            return method, valid + draw(st.binary(min_size=1, max_size=16)), None


@PROPERTY
@given(case=undecodable())
def test_requests_that_do_not_parse(live: LiveLocks, case: tuple[str, bytes, str | None]) -> None:
    method, payload, field = case
    path = f"/{SERVICE.full_name}/{method}"
    call = live.channel.unary_unary(
        path, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        answer = live.check(
            SERVICE.methods_by_name[method].input_type,
            lambda: call(payload, timeout=CALL_TIMEOUT),
        )
    finally:
        live.clear()
    if field is not None:
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer.details
        assert answer.details.startswith(f"{field}: "), answer.details
