"""Cursors of the run event log and the attempts a change shows: pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hourglass import run_events
from hourglass.domain import Attempt, FencingToken, RunState
from hourglass.run_events import Cursor, Snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["10:10:", "10:20:10,14,19", "10:20:/12:25:21/7", "3:3:/3:9:4,5/123"]
)
def test_a_cursor_reads_back_as_itself(text: str) -> None:
    assert str(Cursor.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "10:20",
        "20:10:",  # xmin above xmax
        "10:20:25",  # in progress beyond xmax
        "10:20:15,12",  # not sorted
        "10:20:12,12",  # repeated
        "0:5:",  # no transaction 0
        "10:20:/9:20:/1",  # the read is older than its base
        "10:20:/12:25:/",
        "10:20:/12:25:/-1",
        "10:20:/12:25:/1/2",
        f"10:{2**64}:",
    ],
)
def test_anything_else_is_not_a_cursor(text: str) -> None:
    with pytest.raises(ValueError):
        Cursor.parse(text)


def test_a_cursor_inside_a_read_names_the_read_and_the_last_id() -> None:
    base = Cursor(Snapshot(10, 20, (12,)))
    inside = base.within(Snapshot(15, 30), 77)
    assert inside == Cursor(Snapshot(10, 20, (12,)), Snapshot(15, 30), 77)
    assert inside.newest_xmax() == 30 and base.newest_xmax() == 20


def test_a_cursor_expires_once_pruning_passes_its_snapshot() -> None:
    cursor = Cursor(Snapshot(100, 110, (105,)))
    assert not run_events.expired(cursor, pruned_below=0)
    assert not run_events.expired(cursor, pruned_below=100)  # every pruned one it has seen
    assert run_events.expired(cursor, pruned_below=101)


def test_a_cursor_past_the_database_is_unknown() -> None:
    cursor = Cursor(Snapshot(100, 110), Snapshot(120, 130), 5)
    assert not run_events.unknown(cursor, xmax_now=130)
    assert run_events.unknown(cursor, xmax_now=125)


def test_events_go_once_older_than_the_retention() -> None:
    assert run_events.prune_before(T0, retention=timedelta(minutes=15)) == T0 - timedelta(
        minutes=15
    )
    with pytest.raises(ValueError, match="positive"):
        run_events.prune_before(T0, retention=timedelta(0))


def attempt(number: int, state: RunState, exit_code: int | None = None) -> Attempt:
    return Attempt(
        number=number,
        state=state,
        worker_id="w",
        fencing_token=FencingToken(number * 10),
        started_at=T0 + timedelta(seconds=number),
        finished_at=None if state == RunState.RUNNING else T0 + timedelta(seconds=number + 1),
        exit_code=exit_code,
        stdout_tail="out" if exit_code is not None else "",
        error="boom" if exit_code else "",
    )


STORED = (attempt(1, RunState.FAILED, 1), attempt(2, RunState.SUCCEEDED, 0))


def test_each_change_shows_the_attempts_as_they_stood_then() -> None:
    first = STORED[0]
    # Queued for attempt 1: nothing had started.
    assert run_events.attempts_at(RunState.QUEUED, 1, STORED) == ()
    # Running attempt 1: only what its start wrote.
    (running,) = run_events.attempts_at(RunState.RUNNING, 1, STORED)
    assert running.state == RunState.RUNNING and running.started_at == first.started_at
    assert running.finished_at is None and running.exit_code is None
    assert running.stdout_tail == "" and running.error == ""
    # Queued again for attempt 2: attempt 1 had ended, as stored.
    assert run_events.attempts_at(RunState.QUEUED, 2, STORED) == (first,)
    # Running attempt 2, then its end.
    assert run_events.attempts_at(RunState.RUNNING, 2, STORED)[0] == first
    assert run_events.attempts_at(RunState.SUCCEEDED, 2, STORED) == STORED


def test_a_run_that_ended_without_an_attempt_shows_none() -> None:
    assert run_events.attempts_at(RunState.SKIPPED, 1, ()) == ()
    assert run_events.attempts_at(RunState.CANCELLED, 1, ()) == ()
