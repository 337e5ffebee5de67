"""The Leaderboard's bucket arithmetic: tiling a window, aggregating a batch, rolling up."""

from __future__ import annotations

import functools
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hourglass.cases.leaderboard import buckets

SIZES = (60, 600, 3600, 21600, 86400, 604800)


def minimal_count(start: int, end: int, sizes: tuple[int, ...], marks: dict[int, int]) -> int:
    """Brute force: the fewest usable aligned buckets tiling [start, end), by dynamic
    programming over every point of the smallest grid."""

    @functools.cache
    def best(at: int) -> int:
        if at == end:
            return 0
        options = [
            1 + best(at + size)
            for size in sizes
            if at % size == 0
            and at + size <= end
            and buckets.usable(size, at, sizes=sizes, rolled_until=marks)
        ]
        return min(options)

    return best(start)


small_sizes = st.sampled_from([(1,), (1, 2), (1, 3, 6), (2, 4, 12, 24), (1, 5, 10, 60)])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), sizes=small_sizes)
def test_decompose_tiles_the_window_with_the_fewest_usable_buckets(
    data: st.DataObject, sizes: tuple[int, ...]
) -> None:
    unit = sizes[0]
    start = data.draw(st.integers(0, 200)) * unit
    end = start + data.draw(st.integers(0, 150)) * unit
    marks = {size: data.draw(st.integers(0, 400 // size)) * size for size in sizes[1:]}
    # Rollup marks never run ahead of the finer size's.
    for finer, size in itertools.pairwise(sizes[1:]):
        marks[size] = min(marks[size], marks[finer] // size * size)
    pieces = buckets.decompose(start, end, sizes=sizes, rolled_until=marks)
    # A tiling: contiguous, aligned, usable, covering exactly [start, end).
    at = start
    for size, piece_start in pieces:
        assert piece_start == at and piece_start % size == 0
        assert buckets.usable(size, piece_start, sizes=sizes, rolled_until=marks)
        at += size
    assert at == end
    assert len(pieces) == minimal_count(start, end, sizes, marks)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 10**6), length=st.integers(1, 31 * 24 * 60))
def test_a_month_needs_few_buckets_when_rolled_up(start: int, length: int) -> None:
    begin = start * 60
    end = begin + length * 60
    marks = dict.fromkeys(SIZES[1:], 10**12)
    pieces = buckets.decompose(begin, end, sizes=SIZES, rolled_until=marks)
    # At most (ratio - 1) per level at each end, plus the weeks in the middle.
    assert len(pieces) <= 2 * (9 + 5 + 5 + 3 + 6) + length * 60 // 604800


def test_decompose_refuses_unaligned_windows() -> None:
    with pytest.raises(ValueError, match="multiples"):
        buckets.decompose(30, 120, sizes=SIZES, rolled_until={})


def test_decompose_uses_only_the_smallest_size_before_any_rollup() -> None:
    assert buckets.decompose(0, 180, sizes=SIZES, rolled_until={}) == [(60, 0), (60, 60), (60, 120)]


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "ü", "x" * 40]),
        st.integers(1, 5),
        st.integers(0, 3 * 86400),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(events=events_strategy, rolled_hours=st.integers(0, 72), rolled_days=st.integers(0, 3))
def test_aggregate_counts_every_event_once_per_size_it_reaches(
    events: list[tuple[str, int, int]], rolled_hours: int, rolled_days: int
) -> None:
    sizes = (60, 3600, 86400)
    marks = {
        3600: rolled_hours * 3600,
        86400: min(rolled_days * 86400, rolled_hours * 3600 // 86400 * 86400),
    }
    grouped = buckets.aggregate(events, sizes=sizes, rolled_until=marks)
    for size in sizes:
        expected: Counter[tuple[int, str]] = Counter()
        for key, weight, instant in events:
            start = instant - instant % size
            if buckets.usable(size, start, sizes=sizes, rolled_until=marks):
                expected[(start, key)] += weight
        got = Counter(
            {
                (start, key): count
                for (s, start), counts in grouped.items()
                if s == size
                for key, count in counts.items()
            }
        )
        assert got == expected


def test_rollup_targets_follow_the_finer_marks() -> None:
    day = 86400
    now = 10 * day + 5 * 3600 + 17 * 60
    targets = buckets.rollup_targets(now, sizes=(60, 3600, day), rolled_until={3600: 0, day: 0})
    assert targets == {3600: (0, 10 * day + 5 * 3600), day: (0, 10 * day)}
    later = buckets.rollup_targets(
        now, sizes=(60, 3600, day), rolled_until={3600: 10 * day + 5 * 3600, day: 10 * day}
    )
    assert later == {}


def test_horizon_is_whole_largest_buckets() -> None:
    assert buckets.horizon(100 * 86400 + 5, retention=30 * 86400, sizes=(60, 86400)) == 70 * 86400


@pytest.mark.parametrize(
    ("spelled", "message"),
    [
        ([], "at least one"),
        (["1m", "90s"], r"buckets\[1\]: 90s must be a whole multiple of 1m"),
        (["1m", "1m"], r"buckets\[1\]"),
        (["0.5s"], r"buckets\[0\]: must be a whole number of seconds"),
        (["1x"], r"buckets\[0\]: invalid duration"),
        (["1m"] * 9, "at most 8"),
    ],
)
def test_bad_bucket_sizes_are_named(spelled: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        buckets.parse_sizes(spelled)


def test_sizes_parse_and_spell() -> None:
    assert buckets.parse_sizes(list(buckets.DEFAULT_BUCKETS)) == SIZES
    assert [buckets.spell(s) for s in SIZES] == ["1m", "10m", "1h", "6h", "1d", "7d"]
