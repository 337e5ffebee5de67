"""Bad input gets a clean error: generated requests for every RPC of hourglass.v1.JobScheduler.

Hypothesis mixes valid and invalid values for every field of every request (malformed cron
expressions, unknown time zones, absurd durations and timestamps, NUL characters, oversized
env and args, garbage ids and page tokens, reused request ids, enum values out of range, ...)
and sends them to a real API server on a real PostgreSQL. Every answer must be:

- clean: OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, or
  RESOURCE_EXHAUSTED for an upload past its limit; never UNKNOWN or INTERNAL (an unhandled
  exception);
- harmless when refused: jobs, job_revisions, runs, attempts, artifacts and run_logs are
  fingerprinted before and after, and must not have changed;
- precise when INVALID_ARGUMENT: a short message that starts with "<field path>: ", the path
  leading to a field of the request ("spec.schedule.cron.time_zone", "spec.task.env['X']").

A request an example refers to (a job in some state, with runs, attempts and output) is made
by the example itself first. Requests that do not even parse (a string that is not UTF-8,
bytes cut short) go over a raw channel. Each gap these tests found is pinned as a plain case
at the end.

Each RPC's test shares one server and one database across its examples: the server runs in a
thread with its own event loop, and the test calls it over a blocking channel.
HOURGLASS_HYPOTHESIS_PROFILE picks how many requests each RPC gets: `ci` 1000 (the default
when CI is set), `dev` 100 (the default otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hourglass import artifacts
from hourglass.api import server as api_server
from hourglass.api import validation, wire_errors
from hourglass.api.auth import Insecure
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

T = TypeVar("T")

settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
PROFILE = os.environ.get("HOURGLASS_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "dev"
)
PROPERTY = settings(settings.get_profile(PROFILE))

CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
SERVICE = pb.DESCRIPTOR.services_by_name["JobScheduler"]
# The largest upload the test server takes, so that RESOURCE_EXHAUSTED is reachable.
MAX_BINARY = 64 * 1024
KNOWN_BINARY = b"#!/bin/sh\nexit 0\n"
KNOWN_DIGEST = "sha256:" + hashlib.sha256(KNOWN_BINARY).hexdigest()
CALL_TIMEOUT = 30


# --- The server, the database, and the checks every answer must pass ---------------------------

# Every table a request can write. A fingerprint of each is its row count and the newest
# transaction id among its row versions: an insert or an update writes a row version with a
# newer id, a delete lowers the count. Cheaper than hashing the rows (some hold 64 KiB of env),
# and blind to nothing that was committed.
_TABLES = ("jobs", "job_revisions", "runs", "attempts", "artifacts", "run_logs")
_SNAPSHOT = "SELECT " + ", ".join(
    f"(SELECT (count(*), coalesce(max(xmin::text::bigint), 0))::text FROM {table})"
    for table in _TABLES
)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    response: Any = None


@dataclass(frozen=True)
class FreshJob:
    """A job an example makes for itself before its request, in a state of its choosing."""

    kind: str  # every | cron | at | after
    state: str  # active | paused | cancelled | completed
    interval: float = 60.0
    cron: str = "0 * * * *"
    runs: int = 0  # manual runs triggered while it could still be
    finished_run: bool = False  # the first run succeeded, with an attempt and some output
    logs: bytes = b""
    deleted: bool = False  # deleted again: a well-formed id of a job that is gone


class LiveApi:
    """The real API server (JobScheduler, with a local artifact store) in a thread of its own,
    with a blocking channel to it and a connection to its database."""

    def __init__(self, dsn: str, artifacts_dir: Path, clock: Any = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api", daemon=True)
        self._thread.start()
        self._pool = self._run(db.open_pool(dsn))
        self._server = self._run(
            api_server.start(
                self._pool,
                "127.0.0.1:0",
                dsn=dsn,
                auth=Insecure(),
                artifact_store=artifacts.LocalArtifactStore(artifacts_dir),
                max_binary=MAX_BINARY,
                clock=clock,
            )
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self._server.port}")
        self.stub = pb_grpc.JobSchedulerStub(self.channel)
        self.db = psycopg.connect(dsn, autocommit=True)
        # request_id -> (the request it was first accepted with, the job it made)
        self.accepted: dict[str, tuple[bytes, str]] = {}
        self.page_tokens: list[str] = []

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def close(self) -> None:
        self.channel.close()
        self.db.close()
        self._run(self._server.stop(grace=None))
        self._run(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def snapshot(self) -> dict[str, str]:
        """A fingerprint of each table a request can write (see _TABLES)."""
        row = self.db.execute(_SNAPSHOT).fetchone()
        assert row is not None
        return dict(zip(_TABLES, row, strict=True))

    def check(
        self, request_type: Descriptor, call: Callable[[], T], *, upload: bool = False
    ) -> Answer:
        """Makes one call and checks the answer: a clean status; when refused, no row changed;
        when INVALID_ARGUMENT, a short message that starts with a field path of the request.
        RESOURCE_EXHAUSTED is clean only for an upload past its limit: elsewhere it is gRPC
        refusing an answer (such as an error message too long for its metadata)."""
        before = self.snapshot()
        answer = _answer(call)
        assert answer.code in CLEAN, f"{answer.code.name}: {answer.details}"
        _event(answer.code.name)
        if answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert upload, answer.details
        if answer.code != grpc.StatusCode.OK:
            after = self.snapshot()
            changed = [table for table in _TABLES if before[table] != after[table]]
            assert not changed, (
                f"refused ({answer.code.name}: {answer.details}), yet {changed} changed"
            )
        if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert_names_a_field(request_type, answer.details)
            assert len(answer.details) <= 1024, answer.details[:200] + "..."
            _event(f"INVALID_ARGUMENT {answer.details.partition(': ')[0][:40]}")
        return answer

    # Making the jobs and runs an example's request refers to.

    def fresh_job(self, fresh: FreshJob) -> tuple[str, list[str]]:
        """Makes the job (over the API, as a client would); returns its id and its runs."""
        now = datetime.now(UTC)
        spec = pb.JobSpec(name="fresh", task=pb.Task(command=["true"]))
        match fresh.kind:
            case "every":
                spec.schedule.every.interval.FromTimedelta(timedelta(seconds=fresh.interval))
            case "cron":
                spec.schedule.cron.expression = fresh.cron
            case "at":
                spec.schedule.at.FromDatetime(now + timedelta(hours=1))
            case "after":
                spec.schedule.after.FromTimedelta(timedelta(hours=1))
        if fresh.state == "completed":  # its only fires would come after its end
            spec.schedule.end.FromDatetime(now - timedelta(days=1))
        stub = self.stub
        job_id = stub.ScheduleJob(pb.ScheduleJobRequest(spec=spec), timeout=CALL_TIMEOUT).job_id
        runs = [
            stub.TriggerJob(pb.TriggerJobRequest(job_id=job_id), timeout=CALL_TIMEOUT).run.id
            for _ in range(fresh.runs)
        ]
        if runs and fresh.finished_run:
            self._finish(runs[0], fresh.logs)
        if fresh.state == "paused":
            stub.PauseJob(pb.PauseJobRequest(job_id=job_id), timeout=CALL_TIMEOUT)
        elif fresh.state == "cancelled":
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=CALL_TIMEOUT)
        if fresh.deleted:
            stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=CALL_TIMEOUT)
        return job_id, runs

    def _finish(self, run_id: str, logs: bytes) -> None:
        """What a worker would have written for a run that succeeded."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE runs SET state = 'succeeded', finished_at = now() WHERE id = %s", (run_id,)
            )
            self.db.execute(
                "INSERT INTO attempts (run_id, number, state, worker_id, fencing_token,"
                " started_at, finished_at, exit_code, stdout_tail, stderr_tail)"
                " VALUES (%s, 1, 'succeeded', 'worker', 1, now(), now(), 0, 'out', 'err')",
                (run_id,),
            )
            if logs:
                self.db.execute(
                    "INSERT INTO run_logs (run_id, attempt, stream, data)"
                    " VALUES (%s, 1, 1, %s), (%s, 1, 2, %s)",
                    (run_id, logs, run_id, logs[::-1]),
                )

    def job_id(self, ref: tuple[str, Any]) -> str:
        kind, value = ref
        if kind == "fresh":
            return self.fresh_job(value)[0]
        return str(value)

    def run_id(self, ref: tuple[str, Any]) -> str:
        kind, value = ref
        if kind == "fresh":
            fresh, index = value
            return self.fresh_job(fresh)[1][index % fresh.runs]
        return str(value)

    def page_token(self, ref: tuple[str, Any]) -> str:
        kind, value = ref
        if kind == "seen":
            return self.page_tokens[value % len(self.page_tokens)] if self.page_tokens else ""
        return str(value)


def _event(name: str) -> None:
    """Counts answers for --hypothesis-show-statistics."""
    if currently_in_test_context():
        event(name)


def _answer(call: Callable[[], Any]) -> Answer:
    try:
        return Answer(grpc.StatusCode.OK, "", call())
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "")


# "<path>: " at the start of a message: names, [index] and ['map key'] (a Python repr).
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_STEP = rf"(?:\.[a-z_][a-z0-9_]*|\[(?:\d+|{_QUOTED})\])"
_PATH = re.compile(rf"(?P<path>[a-z_][a-z0-9_]*{_STEP}*): ", re.DOTALL)
_STEPS = re.compile(rf"(?:^|\.)(?P<name>[a-z_][a-z0-9_]*)|\[(?P<index>\d+|{_QUOTED})\]", re.DOTALL)


def assert_names_a_field(request_type: Descriptor, details: str) -> None:
    """The message starts with "<path>: " and the path leads to a field of the request
    ("request" names the request as a whole)."""
    match = _PATH.match(details)
    assert match, f"INVALID_ARGUMENT without a field path: {details[:200]!r}"
    path = match["path"]
    if path == "request":
        return
    message: Descriptor | None = request_type
    field = None
    awaiting_index = False
    for step in _STEPS.finditer(path):
        if step["name"] is not None:
            assert message is not None and not awaiting_index, f"{path!r}: no field here"
            field = message.fields_by_name.get(step["name"])
            assert field is not None, f"{path!r}: {message.full_name} has no {step['name']!r}"
            awaiting_index = field.is_repeated
            message = None if field.is_repeated else field.message_type
        else:
            assert field is not None and awaiting_index, f"{path!r}: {step[0]} of a non-list"
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                assert step["index"][0] in "'\"", f"{path!r}: a map key must be quoted"
                message = entry.fields_by_name["value"].message_type
            else:
                assert step["index"].isdigit(), f"{path!r}: a list index must be a number"
                message = entry
            awaiting_index = False


# --- Values: valid ones mixed with everything a careless or hostile client might send ----------

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
YEAR = 365 * 86400
DAY = 86400

_ODD = "\x00\t\n\r =/'\"\\[]é€😀\u200b\ufeff\u202e"
_SAFE = st.characters(codec="utf-8", exclude_characters="\x00")


def wild_texts(*typical: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(typical or ("x",)),
        st.text(max_size=20),
        st.text(alphabet=st.sampled_from(_ODD + "ab"), max_size=12),
        st.sampled_from(["", " ", "\x00", "a\x00b", "\t\n", "\x7f", "\ud7ff\ue000"]),
        st.sampled_from([64, 253, 254, 256, 257, 1024, 4096, 4097, 70_000]).map(lambda n: "x" * n),
    )


def safe_texts(max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(alphabet=_SAFE, max_size=max_size)


def uuid_spellings() -> st.SearchStrategy[str]:
    """Well-formed UUIDs written every way uuid.UUID reads them, and almost-UUIDs."""
    return st.uuids().flatmap(
        lambda u: st.sampled_from(
            [
                str(u),
                str(u).upper(),
                u.hex,
                "{" + str(u) + "}",
                "urn:uuid:" + str(u),
                " " + str(u),
                str(u)[:-1],
                str(u) + "0",
                str(u).replace("-", "_"),
                str(u)[:-1] + "g",
                str(u) + "\x00",
            ]
        )
    )


def wild_timestamps() -> st.SearchStrategy[Timestamp]:
    seconds = st.one_of(
        st.sampled_from(
            [
                0,
                -1,
                MIN_SECONDS,
                MIN_SECONDS - 1,
                MIN_SECONDS + DAY,
                MAX_SECONDS,
                MAX_SECONDS + 1,
                MAX_SECONDS - 3600,
                32_503_680_000,  # 3000-01-01
                int(validation.LATEST.timestamp()) - 1,
                int(validation.LATEST.timestamp()),
                -(2**63),
                2**63 - 1,
            ]
        ),
        st.integers(MIN_SECONDS - 10, MAX_SECONDS + 10),
        INT64,
        st.integers(-YEAR, YEAR).map(lambda s: int(time.time()) + s),
    )
    nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9]), INT32)
    return st.builds(Timestamp, seconds=seconds, nanos=nanos)


def near_timestamps(before: int = YEAR, after: int = YEAR) -> st.SearchStrategy[Timestamp]:
    return st.integers(-before, after).map(lambda s: Timestamp(seconds=int(time.time()) + s))


def wild_durations() -> st.SearchStrategy[Duration]:
    seconds = st.one_of(
        st.sampled_from(
            [
                0,
                -1,
                1,
                60,
                3600,
                DAY,
                7 * DAY,
                7 * DAY + 1,
                3650 * DAY,
                3650 * DAY + 1,
                10**12,
                -(10**12),
                315_576_000_000,
                315_576_000_001,
                -(2**63),
                2**63 - 1,
            ]
        ),
        st.integers(-(10**12), 10**12),
        INT64,
    )
    nanos = st.one_of(
        st.just(0),
        st.integers(-999_999_999, 999_999_999),
        st.sampled_from([10**9, -(10**9)]),
        INT32,
    )
    return st.builds(Duration, seconds=seconds, nanos=nanos)


def durations(low: float, high: float) -> st.SearchStrategy[Duration]:
    def make(seconds: float) -> Duration:
        message = Duration()
        message.FromTimedelta(timedelta(seconds=seconds))
        return message

    return st.one_of(st.sampled_from([low, high]), st.floats(low, high)).map(make)


CRON_VALID = [
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "*/10 * * * * *",
    "0 0 1 1 *",
    "0 0 29 2 *",
    "0 0 L * *",
    "0 0 * * 5L",
    "0 0 * 2 1#5",
    "0 0 * * MON-FRI",
    "0 0 1 JAN *",
    " 0 0 * * * ",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
    "@midnight",
]
CRON_BAD = [
    "",
    " ",
    "not a cron",
    "* * * *",
    "* * * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "0 0 30 2 *",
    "0 0 31 4 *",
    "@reboot",
    "@every 5m",
    "*/0 * * * *",
    "1-59/0 * * * *",
    "a-b * * * *",
    "\x00 * * * *",
    "* * * * *\x00",
    "99999999999999999999 * * * *",
    "? ? ? ? ?",
    "\u0663 * * * *",
    "* * * * 1#6",
]
_CRON_PIECES = st.one_of(
    st.sampled_from(
        [
            *("*", "*/5", "0", "1-5", "1,2,3", "L", "5L", "1#2", "?", "W", "15W", "LW"),
            *("-1", "60", "MON", "JAN", "*/0", "", "7", "0-59/1", "L-3"),
        ]
    ),
    st.integers(-5, 100).map(str),
    st.text(max_size=4),
)
cron_expressions = st.one_of(
    st.sampled_from(CRON_VALID),
    st.sampled_from(CRON_BAD),
    st.lists(_CRON_PIECES, max_size=8).map(" ".join),
    wild_texts(),
)
ZONES_VALID = [
    "",
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Chatham",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "America/St_Johns",
]
ZONES_BAD = [
    "Mars/Olympus",
    "Nowhere/Atlantis",
    "America",
    "Europe",
    "europe/berlin",
    "Europe/Berlin ",
    "/etc/passwd",
    "../etc/passwd",
    "Europe//Berlin",
    "Europe/Berlin\x00",
    "a" * 300,
    "a/" * 200,
    "zone.tab",
    "tzdata.zi",
    "leapseconds",
    ".",
    "..",
    "Etc/GMT+15",
    "__init__.py",
    "right/UTC",
]
time_zones = st.one_of(st.sampled_from(ZONES_VALID), st.sampled_from(ZONES_BAD), wild_texts())

DIGESTS_BAD = [
    "md5:abc",
    "sha256:",
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha256:" + "G" * 64,
    KNOWN_DIGEST.upper(),
    KNOWN_DIGEST + "\x00",
    " " + KNOWN_DIGEST,
    "sha512:" + "0" * 128,
    KNOWN_DIGEST.replace("sha256:", ""),
    "sha256:" + "0" * 10_000,
]
QUANTITIES = ["", "250m", "1", "0.5", "512Mi", "2Gi", "100k", " 1 ", "1Ki"]
QUANTITIES_BAD = [
    "1e3",
    "-1",
    "1.",
    ".5",
    "abc",
    "1Ki ",
    "\x00",
    "\u0663",
    "\uff11",
    "1" * 1000,
    "m",
]


def env_maps(valid: bool, prefix: str = "") -> st.SearchStrategy[dict[str, str]]:
    if valid:
        names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).map(lambda k: prefix + k)
        return st.dictionaries(names, safe_texts(), max_size=4)
    return st.one_of(
        st.dictionaries(
            wild_texts("PATH", "", "=", "A=B", "A\x00", " "), wild_texts("v"), max_size=4
        ),
        st.sampled_from([256, 257, 300]).map(lambda n: {f"K{i}": "v" for i in range(n)}),
        st.sampled_from([65_530, 65_536, 65_537, 70_000]).map(lambda n: {"BIG": "x" * n}),
        st.sampled_from([20_000, 70_000]).map(lambda n: {"K" * n: "v"}),
    )


oversized_argv = st.sampled_from(
    [
        (validation.MAX_ARGV_ITEMS, 1),
        (validation.MAX_ARGV_ITEMS + 1, 1),
        (1, validation.MAX_ARGV_BYTES),
        (1, validation.MAX_ARGV_BYTES + 1),
        (2, validation.MAX_ARGV_BYTES // 2 + 1),
    ]
).map(lambda shape: ["x" * shape[1]] * shape[0])

# Which parts of a spec an example makes wild; the others get valid values.
SPEC_PARTS = (
    "name",
    "task",
    "command",
    "args",
    "env",
    "secret_env",
    "image",
    "working_dir",
    "binary",
    "resources",
    "schedule",
    "at",
    "after",
    "cron",
    "every",
    "bounds",
    "max_attempts",
    "timeout",
    "retry_backoff",
    "overlap",
    "catch_up",
)
_KINDS = ("at", "after", "cron", "every")


@st.composite
def job_specs(draw: st.DrawFn) -> pb.JobSpec:
    """A spec whose parts are valid but for up to three wild ones."""
    wild = draw(st.frozensets(st.sampled_from(SPEC_PARTS), max_size=3))

    def part(name: str, valid: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> T:
        return draw(bad if name in wild else valid)

    spec = pb.JobSpec()
    spec.name = part("name", st.one_of(st.just(""), safe_texts(40)), wild_texts())
    if "task" not in wild:
        task = spec.task
        task.command.extend(
            part(
                "command",
                st.lists(st.sampled_from(["true", "echo", "/bin/sh", "-c", "ls"]), min_size=1),
                st.one_of(st.lists(wild_texts("true"), max_size=4), oversized_argv),
            )
        )
        task.args.extend(
            part(
                "args",
                st.lists(safe_texts(), max_size=4),
                st.one_of(st.lists(wild_texts(), max_size=4), oversized_argv),
            )
        )
        task.env.update(part("env", env_maps(True), env_maps(False)))
        if "secret_env" in wild:
            secret = draw(
                st.one_of(
                    env_maps(False),
                    st.sampled_from(sorted(task.env) or ["A"]).map(lambda k: {k: "s"}),
                )
            )
        else:
            secret = draw(env_maps(True, prefix="SECRET_"))
        task.secret_env.update(secret)
        task.image = part("image", st.sampled_from(["", "alpine:3", "busybox"]), wild_texts())
        task.working_dir = part("working_dir", st.sampled_from(["", "/tmp", "."]), wild_texts())
        if "binary" in wild:
            task.binary = draw(
                st.one_of(
                    st.sampled_from(DIGESTS_BAD),
                    st.binary(max_size=8).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest()),
                    st.just(KNOWN_DIGEST),
                    wild_texts(),
                )
            )
            if draw(st.booleans()):
                del task.command[:]
        elif draw(st.integers(0, 4)) == 0:
            task.binary = KNOWN_DIGEST
            del task.command[:]
        if "resources" in wild or draw(st.booleans()):
            quantity = part(
                "resources",
                st.sampled_from(QUANTITIES),
                st.one_of(st.sampled_from(QUANTITIES + QUANTITIES_BAD), wild_texts()),
            )
            name = draw(
                st.sampled_from(["cpu_request", "cpu_limit", "memory_request", "memory_limit"])
            )
            setattr(task.resources, name, quantity)
    if "schedule" in wild:
        if draw(st.booleans()):
            spec.schedule.SetInParent()  # a schedule of no kind
    else:
        _schedule(draw, spec.schedule, wild)
    spec.max_attempts = part(
        "max_attempts",
        st.integers(0, validation.MAX_ATTEMPTS),
        st.one_of(st.sampled_from([-1, 101, -(2**31), 2**31 - 1]), INT32),
    )
    if "timeout" in wild or draw(st.booleans()):
        spec.timeout.CopyFrom(part("timeout", durations(0.001, 7 * DAY), wild_durations()))
    if "retry_backoff" in wild or draw(st.booleans()):
        spec.retry_backoff.CopyFrom(part("retry_backoff", durations(0, 3600), wild_durations()))
    spec.overlap = part("overlap", st.integers(0, 4), st.one_of(st.integers(-2, 7), INT32))
    if "catch_up" in wild:
        spec.catch_up.policy = draw(st.one_of(st.integers(-2, 6), INT32, st.integers(0, 3)))
        if draw(st.booleans()):
            spec.catch_up.window.CopyFrom(draw(wild_durations()))
    elif draw(st.booleans()):
        spec.catch_up.policy = draw(st.integers(0, 3))
        if draw(st.booleans()):
            spec.catch_up.window.CopyFrom(draw(durations(0.001, 30 * DAY)))
    return spec


def _schedule(draw: st.DrawFn, schedule: pb.Schedule, wild: frozenset[str]) -> None:
    kinds = [kind for kind in _KINDS if kind in wild] or list(_KINDS)
    kind = draw(st.sampled_from(kinds))
    bad = kind in wild
    match kind:
        case "at":
            schedule.at.CopyFrom(draw(wild_timestamps() if bad else near_timestamps(DAY, YEAR)))
        case "after":
            schedule.after.CopyFrom(draw(wild_durations() if bad else durations(0, 30 * DAY)))
        case "cron":
            if bad:
                schedule.cron.expression = draw(cron_expressions)
                schedule.cron.time_zone = draw(time_zones)
            else:
                schedule.cron.expression = draw(st.sampled_from(CRON_VALID))
                schedule.cron.time_zone = draw(st.sampled_from(ZONES_VALID))
        case "every":
            if bad:
                if draw(st.booleans()):
                    schedule.every.interval.CopyFrom(draw(wild_durations()))
                else:
                    schedule.every.SetInParent()
                if draw(st.booleans()):
                    schedule.every.jitter.CopyFrom(draw(wild_durations()))
            else:
                interval = draw(st.floats(0.1, DAY))
                schedule.every.interval.FromTimedelta(timedelta(seconds=interval))
                if draw(st.booleans()):
                    jitter = interval * draw(st.floats(0, 1))
                    schedule.every.jitter.FromTimedelta(timedelta(seconds=jitter))
    if "bounds" in wild:
        for bound in ("start", "end"):
            if draw(st.booleans()):
                getattr(schedule, bound).CopyFrom(draw(wild_timestamps()))
    elif kind in ("cron", "every") and draw(st.booleans()):
        start = draw(near_timestamps(30 * DAY, 30 * DAY))
        schedule.start.CopyFrom(start)
        if draw(st.booleans()):
            schedule.end.seconds = start.seconds + draw(st.integers(1, YEAR))


@st.composite
def fresh_jobs(draw: st.DrawFn, *, min_runs: int = 0) -> FreshJob:
    kind = draw(st.sampled_from(_KINDS))
    states = ["active", "paused", "cancelled"] + (
        ["completed"] if kind in ("cron", "every") else []
    )
    runs = draw(st.integers(min_runs, 3))
    return FreshJob(
        kind=kind,
        state=draw(st.sampled_from(states)),
        interval=draw(st.sampled_from([0.1, 1.0, 60.0, 3600.0, 3650 * DAY])),
        cron=draw(st.sampled_from(CRON_VALID)),
        runs=runs,
        finished_run=runs > 0 and draw(st.booleans()),
        logs=draw(st.binary(max_size=64)),
        deleted=draw(st.integers(0, 5)) == 0,
    )


def _ids_or(existing: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    """Half the time something that exists (or did), else any id at all."""
    other = {
        "uuid": st.uuids().map(lambda u: ("id", u)),
        "spelling": uuid_spellings().map(lambda text: ("id", text)),
        "text": wild_texts("", "nope").map(lambda text: ("id", text)),
    }
    return st.sampled_from(["existing"] * 3 + list(other)).flatmap(
        lambda kind: existing if kind == "existing" else other[kind]
    )


def job_refs() -> st.SearchStrategy[tuple[str, Any]]:
    return _ids_or(fresh_jobs().map(lambda fresh: ("fresh", fresh)))


def run_refs() -> st.SearchStrategy[tuple[str, Any]]:
    return _ids_or(st.tuples(fresh_jobs(min_runs=1), st.integers(0, 2)).map(lambda f: ("fresh", f)))


_OFFSETS = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)


@st.composite
def crafted_tokens(draw: st.DrawFn) -> str:
    """What a client might forge as a page token: base64 of "<instant>|<id>", more or less."""
    zone = draw(st.one_of(st.none(), st.just(UTC), _OFFSETS.map(timezone)))
    instant = draw(
        st.one_of(
            st.datetimes(timezones=st.just(zone) if zone else st.none()).map(
                lambda d: d.isoformat()
            ),
            st.sampled_from(["", "0001-01-01", "9999-12-31T23:59:59.999999-23:59", "now"]),
            wild_texts(),
        )
    )
    ident = draw(st.one_of(st.uuids().map(str), wild_texts()))
    parts = [instant, ident, *draw(st.lists(wild_texts(), max_size=1))]
    encoded = base64.urlsafe_b64encode("|".join(parts).encode()).decode()
    match draw(st.sampled_from(["as is", "unpadded", "standard", "truncated"])):
        case "unpadded":
            return encoded.rstrip("=")
        case "standard":
            return base64.b64encode("|".join(parts).encode()).decode()
        case "truncated":
            return encoded[: draw(st.integers(0, len(encoded)))]
    return encoded


def page_token_refs() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.just(("text", "")),
        st.integers(0, 100).map(lambda i: ("seen", i)),
        crafted_tokens().map(lambda token: ("text", token)),
        wild_texts("garbage!", "====", "AAAA").map(lambda text: ("text", text)),
    )


request_ids = st.one_of(
    st.just(""), st.sampled_from(["r1", "r2", "r3", "r4"]), wild_texts("retry-me")
)


page_sizes = st.one_of(st.integers(-3, 12), st.sampled_from([500, 501, -(2**31), 2**31 - 1]), INT32)


# --- One test per RPC ---------------------------------------------------------------------------


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[LiveApi]:
    live = LiveApi(database_url, tmp_path / "artifacts")
    try:
        request = pb.UploadBinaryRequest(chunk=KNOWN_BINARY)
        live.stub.UploadBinary(iter([request]), timeout=CALL_TIMEOUT)
        yield live
    finally:
        live.close()


@PROPERTY
@given(spec=job_specs(), request_id=request_ids, replay=st.booleans())
def test_schedule_job(api: LiveApi, spec: pb.JobSpec, request_id: str, replay: bool) -> None:
    request = pb.ScheduleJobRequest(request_id=request_id, spec=spec)
    earlier = api.accepted.get(request_id) if request_id else None
    if replay and earlier is not None:
        request = pb.ScheduleJobRequest.FromString(earlier[0])
    body = request.SerializeToString(deterministic=True)
    answer = api.check(
        pb.ScheduleJobRequest.DESCRIPTOR,
        lambda: api.stub.ScheduleJob(request, timeout=CALL_TIMEOUT),
    )
    if earlier is not None and earlier[0] == body:
        assert answer.code == grpc.StatusCode.OK, answer.details
        assert answer.response.job_id == earlier[1], "a retry made another job"
    elif earlier is not None and answer.code != grpc.StatusCode.INVALID_ARGUMENT:
        assert answer.code == grpc.StatusCode.ALREADY_EXISTS, "request_id reused, body changed"
    if answer.code == grpc.StatusCode.OK and request_id and earlier is None:
        api.accepted[request_id] = (body, answer.response.job_id)


@PROPERTY
@given(
    items=st.lists(st.tuples(job_specs(), request_ids, st.booleans()), max_size=4),
    oversized=st.integers(1, 100).map(lambda n: n == 50),  # rare: such a batch is slow to send
)
def test_schedule_jobs(
    api: LiveApi, items: list[tuple[pb.JobSpec, str, bool]], oversized: bool
) -> None:
    requests = []
    for spec, request_id, replay in items:
        earlier = api.accepted.get(request_id) if request_id else None
        if replay and earlier is not None:
            requests.append(pb.ScheduleJobRequest.FromString(earlier[0]))
        else:
            requests.append(pb.ScheduleJobRequest(request_id=request_id, spec=spec))
    if oversized:  # one more than a batch may hold
        requests = [pb.ScheduleJobRequest(spec=_valid_spec())] * 10_001
    request = pb.ScheduleJobsRequest(requests=requests)
    answer = api.check(
        pb.ScheduleJobsRequest.DESCRIPTOR,
        lambda: api.stub.ScheduleJobs(request, timeout=CALL_TIMEOUT),
    )
    if answer.code != grpc.StatusCode.OK:
        return
    assert len(answer.response.job_ids) == len(requests)
    for item, job_id in zip(requests, answer.response.job_ids, strict=True):
        body = item.SerializeToString(deterministic=True)
        earlier = api.accepted.get(item.request_id) if item.request_id else None
        if earlier is not None:
            assert earlier == (body, job_id), "a retried request_id made another job"
        elif item.request_id:
            api.accepted[item.request_id] = (body, job_id)


def _valid_spec() -> pb.JobSpec:
    spec = pb.JobSpec(name="valid", task=pb.Task(command=["true"]))
    spec.schedule.every.interval.FromSeconds(60)
    return spec


@PROPERTY
@given(job=job_refs(), recent_runs=page_sizes)
def test_get_job_status(api: LiveApi, job: tuple[str, Any], recent_runs: int) -> None:
    request = pb.GetJobStatusRequest(job_id=api.job_id(job), recent_runs=recent_runs)
    answer = api.check(
        pb.GetJobStatusRequest.DESCRIPTOR,
        lambda: api.stub.GetJobStatus(request, timeout=CALL_TIMEOUT),
    )
    if answer.code == grpc.StatusCode.OK:
        assert uuid.UUID(answer.response.job.id) == uuid.UUID(request.job_id)
        assert len(answer.response.recent_runs) <= (recent_runs or 10)


@PROPERTY
@given(fresh=st.lists(fresh_jobs(), max_size=1), page_size=page_sizes, token=page_token_refs())
def test_list_jobs(
    api: LiveApi, fresh: list[FreshJob], page_size: int, token: tuple[str, Any]
) -> None:
    for job in fresh:
        api.fresh_job(job)
    request = pb.ListJobsRequest(page_size=page_size, page_token=api.page_token(token))
    answer = api.check(
        pb.ListJobsRequest.DESCRIPTOR, lambda: api.stub.ListJobs(request, timeout=CALL_TIMEOUT)
    )
    if answer.code == grpc.StatusCode.OK:
        assert len(answer.response.jobs) <= (page_size or 50)
        if answer.response.next_page_token:
            api.page_tokens.append(answer.response.next_page_token)


@PROPERTY
@given(job=job_refs(), spec=job_specs())
def test_update_job(api: LiveApi, job: tuple[str, Any], spec: pb.JobSpec) -> None:
    request = pb.UpdateJobRequest(job_id=api.job_id(job), spec=spec)
    api.check(
        pb.UpdateJobRequest.DESCRIPTOR, lambda: api.stub.UpdateJob(request, timeout=CALL_TIMEOUT)
    )


def _job_call(name: str) -> Callable[[LiveApi, tuple[str, Any]], None]:
    request_type = getattr(pb, f"{name}Request")

    def test(api: LiveApi, job: tuple[str, Any]) -> None:
        request = request_type(job_id=api.job_id(job))
        method = getattr(api.stub, name)
        api.check(request_type.DESCRIPTOR, lambda: method(request, timeout=CALL_TIMEOUT))

    test.__name__ = f"test_{re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}"
    return PROPERTY(given(job=job_refs())(test))


test_pause_job = _job_call("PauseJob")
test_resume_job = _job_call("ResumeJob")
test_trigger_job = _job_call("TriggerJob")
test_cancel_job = _job_call("CancelJob")
test_delete_job = _job_call("DeleteJob")


@st.composite
def backfill_ranges(draw: st.DrawFn) -> tuple[Timestamp | None, Timestamp | None]:
    match draw(st.sampled_from(["near", "near", "wild", "missing"])):
        case "near":
            start = draw(near_timestamps(30 * DAY, DAY))
            end = Timestamp(seconds=start.seconds + draw(st.integers(-DAY, 3 * DAY)))
            return start, end
        case "wild":
            start = draw(st.one_of(wild_timestamps(), near_timestamps()))
            return start, draw(st.one_of(wild_timestamps(), near_timestamps()))
    present = draw(st.one_of(wild_timestamps(), near_timestamps()))
    return (present, None) if draw(st.booleans()) else (None, present)


@PROPERTY
@given(job=job_refs(), bounds=backfill_ranges())
def test_backfill(
    api: LiveApi, job: tuple[str, Any], bounds: tuple[Timestamp | None, Timestamp | None]
) -> None:
    request = pb.BackfillRequest(job_id=api.job_id(job))
    start, end = bounds
    if start is not None:
        getattr(request, "from").CopyFrom(start)
    if end is not None:
        request.to.CopyFrom(end)
    api.check(
        pb.BackfillRequest.DESCRIPTOR, lambda: api.stub.Backfill(request, timeout=CALL_TIMEOUT)
    )


@PROPERTY
@given(job=job_refs(), page_size=page_sizes, token=page_token_refs())
def test_list_runs(
    api: LiveApi, job: tuple[str, Any], page_size: int, token: tuple[str, Any]
) -> None:
    request = pb.ListRunsRequest(
        job_id=api.job_id(job), page_size=page_size, page_token=api.page_token(token)
    )
    answer = api.check(
        pb.ListRunsRequest.DESCRIPTOR, lambda: api.stub.ListRuns(request, timeout=CALL_TIMEOUT)
    )
    if answer.code == grpc.StatusCode.OK and answer.response.next_page_token:
        api.page_tokens.append(answer.response.next_page_token)


@PROPERTY
@given(job=job_refs(), updates=st.integers(0, 3), page_size=page_sizes, token=page_token_refs())
def test_list_job_revisions(
    api: LiveApi, job: tuple[str, Any], updates: int, page_size: int, token: tuple[str, Any]
) -> None:
    job_id = api.job_id(job)
    update = pb.UpdateJobRequest(job_id=job_id, spec=_valid_spec())
    for _ in range(updates if job[0] == "fresh" else 0):
        updated = _answer(lambda: api.stub.UpdateJob(update, timeout=CALL_TIMEOUT))
        if updated.code != grpc.StatusCode.OK:
            break  # cancelled or deleted: it keeps the revisions it has
    request = pb.ListJobRevisionsRequest(
        job_id=job_id, page_size=page_size, page_token=api.page_token(token)
    )
    answer = api.check(
        pb.ListJobRevisionsRequest.DESCRIPTOR,
        lambda: api.stub.ListJobRevisions(request, timeout=CALL_TIMEOUT),
    )
    if answer.code != grpc.StatusCode.OK:
        return
    numbers = [revision.revision for revision in answer.response.revisions]
    assert numbers == sorted(set(numbers), reverse=True) and len(numbers) <= (page_size or 50)
    if answer.response.next_page_token:
        api.page_tokens.append(answer.response.next_page_token)


@PROPERTY
@given(run=run_refs())
def test_cancel_run(api: LiveApi, run: tuple[str, Any]) -> None:
    request = pb.CancelRunRequest(run_id=api.run_id(run))
    answer = api.check(
        pb.CancelRunRequest.DESCRIPTOR, lambda: api.stub.CancelRun(request, timeout=CALL_TIMEOUT)
    )
    if answer.code == grpc.StatusCode.OK:
        assert answer.response.run.state not in (pb.RUN_STATE_QUEUED, pb.RUN_STATE_UNSPECIFIED)


def _first_message(api: LiveApi, request: pb.WatchJobRequest) -> pb.WatchJobResponse:
    stream = api.stub.WatchJob(request, timeout=CALL_TIMEOUT)
    try:
        return next(stream)
    finally:
        stream.cancel()


@PROPERTY
@given(job=job_refs())
def test_watch_job(api: LiveApi, job: tuple[str, Any]) -> None:
    request = pb.WatchJobRequest(job_id=api.job_id(job))
    answer = api.check(pb.WatchJobRequest.DESCRIPTOR, lambda: _first_message(api, request))
    if answer.code == grpc.StatusCode.OK:
        assert uuid.UUID(answer.response.job.id) == uuid.UUID(request.job_id)


@PROPERTY
@given(run=run_refs())
def test_get_run_logs(api: LiveApi, run: tuple[str, Any]) -> None:
    request = pb.GetRunLogsRequest(run_id=api.run_id(run), follow=False)
    answer = api.check(
        pb.GetRunLogsRequest.DESCRIPTOR,
        lambda: list(api.stub.GetRunLogs(request, timeout=CALL_TIMEOUT)),
    )
    if answer.code == grpc.StatusCode.OK:
        assert all(chunk.stream in (1, 2) for chunk in answer.response)


@PROPERTY
@given(
    chunks=st.one_of(
        st.lists(st.binary(max_size=4096), max_size=8),
        st.just([KNOWN_BINARY]),
        st.tuples(st.integers(15, 20), st.binary(min_size=4096, max_size=4096)).map(
            lambda shape: [shape[1]] * shape[0]  # around MAX_BINARY
        ),
        st.sampled_from([MAX_BINARY - 1, MAX_BINARY, MAX_BINARY + 1]).map(
            lambda n: [b"\x00" * (n // 2), b"\xff" * (n - n // 2)]
        ),
    )
)
def test_upload_binary(api: LiveApi, chunks: list[bytes]) -> None:
    requests = [pb.UploadBinaryRequest(chunk=chunk) for chunk in chunks]
    answer = api.check(
        pb.UploadBinaryRequest.DESCRIPTOR,
        lambda: api.stub.UploadBinary(iter(requests), timeout=CALL_TIMEOUT),
        upload=True,
    )
    data = b"".join(chunks)
    if len(data) > MAX_BINARY:
        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        assert answer.code == grpc.StatusCode.OK, answer.details
        assert answer.response.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert answer.response.size == len(data)


def test_every_rpc_has_a_property_test() -> None:
    tested = {
        name.removeprefix("test_").replace("_", "")
        for name, value in globals().items()
        if name.startswith("test_") and callable(value)
    }
    assert {method.name.lower() for method in SERVICE.methods} <= tested


# --- Requests that do not even parse -------------------------------------------------------------

# Byte sequences that are not UTF-8: stray continuation and lead bytes, an overlong NUL, a
# surrogate, a code point past U+10FFFF, a sequence cut short.
BAD_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
    b"\xc3",
]


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def _in_spec(setter: Callable[[pb.JobSpec, str], None]) -> Callable[[str], Message]:
    def build(text: str) -> Message:
        spec = _valid_spec()
        setter(spec, text)
        return pb.ScheduleJobRequest(spec=spec)

    return build


_SOME_ID = str(uuid.UUID(int=1))
# For each method: (the path a string in it has, a request with the string there).
STRING_FIELDS: dict[str, list[tuple[str, Callable[[str], Message]]]] = {
    "ScheduleJob": [
        ("request_id", lambda text: pb.ScheduleJobRequest(request_id=text, spec=_valid_spec())),
        ("spec.name", _in_spec(lambda spec, text: setattr(spec, "name", text))),
        ("spec.task.command[1]", _in_spec(lambda spec, text: spec.task.command.append(text))),
        ("spec.task.args[0]", _in_spec(lambda spec, text: spec.task.args.append(text))),
        ("spec.task.env", _in_spec(lambda spec, text: spec.task.env.update({text: "v"}))),
        ("spec.task.env['K']", _in_spec(lambda spec, text: spec.task.env.update(K=text))),
        (
            "spec.task.secret_env['S']",
            _in_spec(lambda spec, text: spec.task.secret_env.update(S=text)),
        ),
        ("spec.task.image", _in_spec(lambda spec, text: setattr(spec.task, "image", text))),
        (
            "spec.task.working_dir",
            _in_spec(lambda spec, text: setattr(spec.task, "working_dir", text)),
        ),
        ("spec.task.binary", _in_spec(lambda spec, text: setattr(spec.task, "binary", text))),
        (
            "spec.task.resources.cpu_limit",
            _in_spec(lambda spec, text: setattr(spec.task.resources, "cpu_limit", text)),
        ),
        (
            "spec.schedule.cron.expression",
            _in_spec(lambda spec, text: setattr(spec.schedule.cron, "expression", text)),
        ),
        (
            "spec.schedule.cron.time_zone",
            _in_spec(lambda spec, text: setattr(spec.schedule.cron, "time_zone", text)),
        ),
    ],
    "ScheduleJobs": [
        (
            "requests[1].spec.name",
            lambda text: pb.ScheduleJobsRequest(
                requests=[
                    pb.ScheduleJobRequest(spec=_valid_spec()),
                    pb.ScheduleJobRequest(spec=pb.JobSpec(name=text)),
                ]
            ),
        ),
        (
            "requests[0].request_id",
            lambda text: pb.ScheduleJobsRequest(requests=[pb.ScheduleJobRequest(request_id=text)]),
        ),
    ],
    "ListJobs": [("page_token", lambda text: pb.ListJobsRequest(page_size=5, page_token=text))],
    "UpdateJob": [
        ("job_id", lambda text: pb.UpdateJobRequest(job_id=text, spec=_valid_spec())),
        (
            "spec.task.command[0]",
            lambda text: pb.UpdateJobRequest(
                job_id=_SOME_ID, spec=pb.JobSpec(task=pb.Task(command=[text]))
            ),
        ),
    ],
    "Backfill": [("job_id", lambda text: pb.BackfillRequest(job_id=text, to=Timestamp(seconds=1)))],
    "ListRuns": [
        ("job_id", lambda text: pb.ListRunsRequest(job_id=text)),
        ("page_token", lambda text: pb.ListRunsRequest(job_id=_SOME_ID, page_token=text)),
    ],
    "ListJobRevisions": [
        ("job_id", lambda text: pb.ListJobRevisionsRequest(job_id=text)),
        (
            "page_token",
            lambda text: pb.ListJobRevisionsRequest(job_id=_SOME_ID, page_token=text),
        ),
    ],
    "CancelRun": [("run_id", lambda text: pb.CancelRunRequest(run_id=text))],
    "GetRunLogs": [("run_id", lambda text: pb.GetRunLogsRequest(run_id=text))],
    **{
        name: [("job_id", lambda text, name=name: getattr(pb, f"{name}Request")(job_id=text))]
        for name in (
            "GetJobStatus",
            "PauseJob",
            "ResumeJob",
            "TriggerJob",
            "CancelJob",
            "DeleteJob",
            "WatchJob",
        )
    },
    "UploadBinary": [],  # bytes only: no string to spoil
}


def _raw_call(api: LiveApi, method: str, payloads: list[bytes]) -> Any:
    """Sends bytes as they are, as a client with another idea of the schema might."""
    path = f"/{SERVICE.full_name}/{method}"
    method_descriptor = SERVICE.methods_by_name[method]

    def identity(data: bytes) -> bytes:
        return data

    if method_descriptor.client_streaming:
        call = api.channel.stream_unary(
            path, request_serializer=identity, response_deserializer=identity
        )
        return call(iter(payloads), timeout=CALL_TIMEOUT)
    if method_descriptor.server_streaming:
        stream = api.channel.unary_stream(
            path, request_serializer=identity, response_deserializer=identity
        )
        responses = stream(payloads[0], timeout=CALL_TIMEOUT)
        try:
            return next(responses, None)  # the first message is enough for WatchJob
        finally:
            responses.cancel()
    call = api.channel.unary_unary(
        path, request_serializer=identity, response_deserializer=identity
    )
    return call(payloads[0], timeout=CALL_TIMEOUT)


@st.composite
def undecodable_requests(draw: st.DrawFn) -> tuple[str, list[bytes], str | None]:
    """(method, the raw request messages, the path an INVALID_ARGUMENT must name or None)."""
    method = draw(st.sampled_from(sorted(SERVICE.methods_by_name)))
    fields = STRING_FIELDS[method]
    how = draw(
        st.sampled_from(
            ["utf8", "cut", "noise", "appended"] if fields else ["cut", "noise", "appended"]
        )
    )
    if how == "utf8":
        path, build = draw(st.sampled_from(fields))
        bad = draw(
            st.tuples(
                st.text("ab", max_size=2),
                st.one_of(
                    st.sampled_from(BAD_UTF8),
                    st.tuples(st.sampled_from(BAD_UTF8), st.binary(max_size=3))
                    .map(b"".join)
                    .filter(_not_utf8),
                ),
                st.text("ab", max_size=2),
            )
        )
        spoiled = bad[0].encode() + bad[1] + bad[2].encode()
        placeholder = "~" * len(spoiled)
        valid = build(placeholder).SerializeToString()
        assume(valid.count(placeholder.encode()) == 1)
        return method, [valid.replace(placeholder.encode(), spoiled)], path
    if fields:
        valid = draw(st.sampled_from(fields))[1](
            draw(st.sampled_from(["", _SOME_ID, "x"]))
        ).SerializeToString()
    else:
        valid = pb.UploadBinaryRequest(chunk=draw(st.binary(max_size=16))).SerializeToString()
    match how:
        case "cut":
            payload = valid[: draw(st.integers(0, max(len(valid) - 1, 0)))]
        case "noise":
            payload = draw(st.binary(max_size=64))
        case _:
            payload = valid + draw(st.binary(min_size=1, max_size=16))
    return method, [valid, payload] if fields == [] else [payload], None


@PROPERTY
@given(case=undecodable_requests())
def test_requests_that_do_not_parse(
    api: LiveApi, case: tuple[str, list[bytes], str | None]
) -> None:
    method, payloads, path = case
    request_type = SERVICE.methods_by_name[method].input_type
    answer = api.check(
        request_type, lambda: _raw_call(api, method, payloads), upload=method == "UploadBinary"
    )
    if path is not None:
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer.details
        assert answer.details.startswith(f"{path}: "), answer.details


# --- Each gap these tests found, pinned as a plain case ------------------------------------------


def _spec(**fields: Any) -> pb.JobSpec:
    spec = _valid_spec()
    for path, value in fields.items():
        *parents, name = path.split("__")
        target: Any = spec
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(value, Message):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)
    return spec


def _cron(expression: str = "* * * * *", zone: str = "", **fields: Any) -> pb.JobSpec:
    spec = _spec(**fields)
    spec.schedule.cron.expression = expression
    spec.schedule.cron.time_zone = zone
    return spec


_MAX_TS = Timestamp(seconds=MAX_SECONDS)
_GAPS: list[tuple[str, pb.ScheduleJobRequest, str]] = [
    # Each was answered UNKNOWN (an unhandled exception), or stored as it came.
    (
        "NUL in request_id: PostgreSQL refused it",
        pb.ScheduleJobRequest(request_id="a\x00", spec=_valid_spec()),
        "request_id",
    ),
    ("NUL in name", pb.ScheduleJobRequest(spec=_spec(name="a\x00b")), "spec.name"),
    (
        "NUL in image",
        pb.ScheduleJobRequest(spec=_spec(task__image="alpine\x00")),
        "spec.task.image",
    ),
    (
        "NUL in working_dir",
        pb.ScheduleJobRequest(spec=_spec(task__working_dir="/\x00")),
        "spec.task.working_dir",
    ),
    (
        "an image of any length",
        pb.ScheduleJobRequest(spec=_spec(task__image="x" * 5000)),
        "spec.task.image",
    ),
    (
        "at after the year 9999: ValueError",
        pb.ScheduleJobRequest(
            spec=_spec(schedule=pb.Schedule(at=Timestamp(seconds=MAX_SECONDS + 1)))
        ),
        "spec.schedule.at",
    ),
    (
        "at with nanos out of range: ValueError",
        pb.ScheduleJobRequest(
            spec=_spec(schedule=pb.Schedule(at=Timestamp(seconds=2_000_000_000, nanos=-1)))
        ),
        "spec.schedule.at.nanos",
    ),
    (
        "start before the year 1: ValueError",
        pb.ScheduleJobRequest(spec=_spec(schedule__start=Timestamp(seconds=MIN_SECONDS - 1))),
        "spec.schedule.start",
    ),
    (
        "a cron start in 9999: OverflowError in cronsim",
        pb.ScheduleJobRequest(spec=_cron(schedule__start=_MAX_TS)),
        "spec.schedule.start",
    ),
    (
        "a cron start in year 1: OverflowError",
        pb.ScheduleJobRequest(
            spec=_cron(zone="America/New_York", schedule__start=Timestamp(seconds=MIN_SECONDS))
        ),
        "spec.schedule.start",
    ),
    (
        "a duration past timedelta's range: OverflowError",
        pb.ScheduleJobRequest(spec=_spec(timeout=Duration(seconds=10**15))),
        "spec.timeout",
    ),
    (
        "duration nanos out of range: silently 3s",
        pb.ScheduleJobRequest(spec=_spec(timeout=Duration(seconds=1, nanos=2 * 10**9))),
        "spec.timeout.nanos",
    ),
    (
        "an interval of 31,700 years: OverflowError",
        pb.ScheduleJobRequest(spec=_spec(schedule__every__interval=Duration(seconds=10**12))),
        "spec.schedule.every.interval",
    ),
    (
        "a time zone that is a folder: IsADirectoryError",
        pb.ScheduleJobRequest(spec=_cron(zone="America")),
        "spec.schedule.cron.time_zone",
    ),
    (
        "a time zone too long for a file name: OSError",
        pb.ScheduleJobRequest(spec=_cron(zone="a" * 300)),
        "spec.schedule.cron.time_zone",
    ),
    (
        "a cron expression of any length",
        pb.ScheduleJobRequest(spec=_cron(expression="*" + " " * 2000 + "* * * *")),
        "spec.schedule.cron.expression",
    ),
    (
        "a non-ASCII digit as a quantity",
        pb.ScheduleJobRequest(spec=_spec(task__resources__cpu_limit="\u0663")),
        "spec.task.resources.cpu_limit",
    ),
    (
        "a digest of any length echoed back",
        pb.ScheduleJobRequest(spec=_spec(task__binary="sha256:" + "0" * 100_000)),
        "spec.task.binary",
    ),
]


@pytest.mark.parametrize(
    ("request_", "field"), [(r, f) for _, r, f in _GAPS], ids=[g[0] for g in _GAPS]
)
def test_gap_is_invalid_argument(api: LiveApi, request_: pb.ScheduleJobRequest, field: str) -> None:
    answer = api.check(
        pb.ScheduleJobRequest.DESCRIPTOR,
        lambda: api.stub.ScheduleJob(request_, timeout=CALL_TIMEOUT),
    )
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer.details
    assert answer.details.startswith(f"{field}: "), answer.details
    assert len(answer.details) < 300


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (Timestamp(seconds=MIN_SECONDS - 1), Timestamp(seconds=0), "from"),  # ValueError
        (Timestamp(seconds=0), Timestamp(seconds=2**62), "to"),  # ValueError
        (Timestamp(seconds=0, nanos=10**9), Timestamp(seconds=1), "from.nanos"),
        # OverflowError: the fire after 9999-12-31T23:00 is past datetime's end.
        (Timestamp(seconds=MAX_SECONDS - 3600), _MAX_TS, "from"),
    ],
)
def test_backfill_gap_is_invalid_argument(
    api: LiveApi, start: Timestamp, end: Timestamp, field: str
) -> None:
    job_id, _ = api.fresh_job(FreshJob(kind="cron", state="active", cron="0 * * * *"))
    request = pb.BackfillRequest(job_id=job_id, to=end)
    getattr(request, "from").CopyFrom(start)
    answer = api.check(
        pb.BackfillRequest.DESCRIPTOR, lambda: api.stub.Backfill(request, timeout=CALL_TIMEOUT)
    )
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer.details
    assert answer.details.startswith(f"{field}: "), answer.details


def test_a_long_default_name_is_cut_to_the_limit(api: LiveApi) -> None:
    spec = _spec(name="")
    spec.task.command[:] = ["/bin/" + "x" * 1000]
    job_id = api.stub.ScheduleJob(pb.ScheduleJobRequest(spec=spec), timeout=CALL_TIMEOUT).job_id
    job = api.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=CALL_TIMEOUT).job
    assert job.spec.name == "x" * validation.MAX_NAME


def test_backfill_of_a_completed_interval_job(api: LiveApi) -> None:
    job_id, _ = api.fresh_job(FreshJob(kind="every", state="completed"))
    request = pb.BackfillRequest(job_id=job_id)
    getattr(request, "from").FromSeconds(int(time.time()) - DAY)
    request.to.FromSeconds(int(time.time()))
    answer = api.check(
        pb.BackfillRequest.DESCRIPTOR, lambda: api.stub.Backfill(request, timeout=CALL_TIMEOUT)
    )
    assert answer.code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION)


class FrozenClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


def test_two_triggers_in_the_same_microsecond(database_url: str, tmp_path: Path) -> None:
    api = LiveApi(database_url, tmp_path / "artifacts", clock=FrozenClock())
    try:
        job_id, _ = api.fresh_job(FreshJob(kind="every", state="active", runs=1))
        request = pb.TriggerJobRequest(job_id=job_id)
        api.check(
            pb.TriggerJobRequest.DESCRIPTOR,
            lambda: api.stub.TriggerJob(request, timeout=CALL_TIMEOUT),
        )
    finally:
        api.close()


@pytest.mark.parametrize(
    ("message", "spoil", "expected"),
    [
        (pb.GetJobStatusRequest(job_id="~"), b"\xff", "job_id: is not valid UTF-8"),
        (
            pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(command=["a", "~"]))),
            b"\xc0",
            "spec.task.command[1]: is not valid UTF-8",
        ),
        (
            pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(env={"K": "~"}))),
            b"\xed",
            "spec.task.env['K']: is not valid UTF-8",
        ),
        (
            pb.ScheduleJobRequest(spec=pb.JobSpec(task=pb.Task(env={"~": "v"}))),
            b"\x80",
            "spec.task.env: has a key that is not valid UTF-8",
        ),
        (
            pb.ScheduleJobsRequest(
                requests=[pb.ScheduleJobRequest(), pb.ScheduleJobRequest(request_id="~")]
            ),
            b"\xfe",
            "requests[1].request_id: is not valid UTF-8",
        ),
    ],
)
def test_undecodable_names_the_field(message: Message, spoil: bytes, expected: str) -> None:
    data = message.SerializeToString().replace(b"~", spoil)
    with pytest.raises(Exception):  # noqa: B017 - the parser's own error type varies
        type(message).FromString(data)
    assert str(wire_errors.undecodable(message.DESCRIPTOR, data)) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x0a\x05ab", "request: is cut short or corrupt"),  # a string longer than the bytes
        (b"\xff\xff\xff", "request: is cut short or corrupt"),  # a tag that never ends
        (b"\x12\x03\x12\x05a", "spec: is cut short or corrupt"),  # inside spec
        (b"\x00", "request: is cut short or corrupt"),  # field number 0
    ],
)
def test_undecodable_bytes_name_the_enclosing_message(data: bytes, expected: str) -> None:
    assert str(wire_errors.undecodable(pb.ScheduleJobRequest.DESCRIPTOR, data)) == expected


def test_the_fingerprint_sees_every_write(api: LiveApi) -> None:
    job_id, runs = api.fresh_job(FreshJob(kind="every", state="active", runs=1))
    writes = [
        ("UPDATE jobs SET name = name WHERE id = %s", job_id),  # the same value, a new version
        ("UPDATE runs SET reason = 'x' WHERE id = %s", runs[0]),
        ("DELETE FROM job_revisions WHERE job_id = %s", job_id),
        ("DELETE FROM jobs WHERE id = %s", job_id),
    ]
    for statement, key in writes:
        before = api.snapshot()
        api.db.execute(statement, (key,))
        assert api.snapshot() != before, statement
