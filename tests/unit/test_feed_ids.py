"""Snowflake post ids (cases/feed/ids.py): time-ordered, monotonic per worker, unique across
workers, and never repeated when the clock steps back or a worker id changes hands."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hourglass.cases.feed import ids

NOW = ids.EPOCH_MS + 86_400_000 * 400  # some day in 2025


def ready(worker: int, *, floor: int = 0, now: int = NOW) -> ids.Snowflake:
    generator = ids.Snowflake(worker, floor=floor)
    generator.extend(generator.reserve(now))
    return generator


def test_an_id_holds_its_time_worker_and_sequence() -> None:
    generator = ready(7)
    first = generator.next_id(NOW)
    assert ids.parts(first) == (NOW - ids.EPOCH_MS, 7, 0)
    assert ids.unix_ms(first) == NOW
    assert ids.parts(generator.next_id(NOW)) == (NOW - ids.EPOCH_MS, 7, 1)
    assert ids.first_id_at(NOW) <= first < ids.first_id_at(NOW + 1)


def test_a_full_millisecond_borrows_the_next_one() -> None:
    generator = ready(1)
    made = [generator.next_id(NOW) for _ in range(ids.MAX_SEQUENCE + 2)]
    assert made == sorted(set(made))
    assert ids.parts(made[-1]) == (NOW - ids.EPOCH_MS + 1, 1, 0)


def test_a_clock_stepped_back_borrows_then_waits() -> None:
    generator = ready(3)
    before = generator.next_id(NOW)
    after = generator.next_id(NOW - 1000)  # the clock stepped back a second
    assert after > before
    assert ids.parts(after)[0] == NOW - ids.EPOCH_MS  # borrowed the last millisecond
    with pytest.raises(ids.Wait) as waited:
        generator.next_id(NOW - ids.MAX_BORROW_MS - 500)  # far behind: wait, issue nothing
    assert waited.value.ms == 500
    assert generator.next_id(NOW - 1000) > after  # nothing was spent by the refusal


def test_no_id_is_issued_beyond_the_reservation() -> None:
    generator = ids.Snowflake(4)
    with pytest.raises(ids.Wait):
        generator.next_id(NOW)  # nothing reserved yet
    generator.extend(generator.reserve(NOW))
    generator.next_id(NOW)
    with pytest.raises(ids.Wait):
        generator.next_id(NOW + ids.RESERVE_MS)  # the reservation was not extended
    generator.revoke()
    with pytest.raises(ids.Wait):
        generator.next_id(NOW)


def test_the_next_holder_of_a_worker_id_starts_above_the_last_reservation() -> None:
    first = ready(9)
    issued = [first.next_id(NOW + step) for step in range(0, 1500, 3)]
    ceiling = first.reserve(NOW + 1500)
    first.extend(ceiling)
    # The next holder's clock is behind: it borrows up to MAX_BORROW_MS, then waits.
    second = ready(9, floor=ceiling, now=NOW - 2000)
    floor_ms = ceiling + ids.EPOCH_MS
    with pytest.raises(ids.Wait):
        second.next_id(floor_ms - ids.MAX_BORROW_MS - 10)
    later = second.next_id(floor_ms - ids.MAX_BORROW_MS + 1)
    assert later > max(issued)


@given(
    steps=st.lists(st.integers(min_value=-ids.MAX_BORROW_MS, max_value=50), max_size=300),
)
def test_ids_of_two_workers_with_wandering_clocks_never_collide_and_each_only_grows(
    steps: list[int],
) -> None:
    workers = [ready(1), ready(2)]
    clocks = [NOW, NOW]
    seen: set[int] = set()
    last = [0, 0]
    for i, step in enumerate(steps):
        which = i % 2
        clocks[which] += step  # one clock steps back now and then, the other moves on
        workers[which].extend(workers[which].reserve(clocks[which]))
        try:
            made = workers[which].next_id(clocks[which])
        except ids.Wait:
            continue
        assert made > last[which]
        assert made not in seen
        seen.add(made)
        last[which] = made


def test_a_worker_id_outside_ten_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="worker id 1024"):
        ids.Snowflake(1024)
