"""Time buckets, as plain arithmetic on Unix seconds: what a leaderboard query and an ingest
decide before they touch any storage.

A leaderboard keeps counts per bucket, at several sizes (by default 1m, 10m, 1h, 6h, 1d, 7d).
Every size is a multiple of the one before it, and every bucket starts at a multiple of its
size since the Unix epoch, so the buckets of a coarser size are exact unions of finer ones.
That nesting is what lets a window be tiled greedily with the fewest buckets, and lets a
rollup build a coarse bucket by summing the finer ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from hourglass import durations

# Bucket sizes in seconds; the first is the smallest.
Sizes = tuple[int, ...]
# (size, start) of one bucket.
Bucket = tuple[int, int]

DEFAULT_BUCKETS = ("1m", "10m", "1h", "6h", "1d", "7d")
MAX_LEVELS = 8


def parse_sizes(spelled: Sequence[str], field: str = "buckets") -> Sizes:
    """["1m", "1h", "1d"] -> (60, 3600, 86400); ValueError "<field>: ..." when the sizes do not
    nest (each a whole multiple of the previous), are not whole seconds, or are too many."""
    if not spelled:
        raise ValueError(f"{field}: give at least one bucket size, e.g. [1m, 1h, 1d]")
    if len(spelled) > MAX_LEVELS:
        raise ValueError(f"{field}: at most {MAX_LEVELS} sizes")
    sizes: list[int] = []
    for i, text in enumerate(spelled):
        if not isinstance(text, str):
            raise ValueError(f"{field}[{i}]: must be a duration such as 1m")
        try:
            seconds = durations.parse(text).total_seconds()
        except ValueError as exc:
            raise ValueError(f"{field}[{i}]: {exc}") from None
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"{field}[{i}]: must be a whole number of seconds, at least 1s")
        if seconds > 366 * 86400:
            raise ValueError(f"{field}[{i}]: at most 366d")
        if sizes and (seconds <= sizes[-1] or seconds % sizes[-1]):
            raise ValueError(
                f"{field}[{i}]: {text} must be a whole multiple of {spelled[i - 1]}, and larger"
            )
        sizes.append(int(seconds))
    return tuple(sizes)


def spell(size: int) -> str:
    """60 -> "1m": the name of a size in logs, metrics and RPC answers."""
    return durations.format(durations.parse(f"{size}s"))


def floor(instant: int, size: int) -> int:
    return instant - instant % size


def usable(size: int, start: int, *, sizes: Sizes, rolled_until: Mapping[int, int]) -> bool:
    """Whether the bucket (size, start) is complete: the smallest size always is (events are
    counted into it directly); a coarser one once the rollup has passed its end."""
    return size == sizes[0] or start + size <= rolled_until.get(size, 0)


def decompose(
    start: int, end: int, *, sizes: Sizes, rolled_until: Mapping[int, int]
) -> list[Bucket]:
    """The fewest complete, aligned buckets that tile [start, end), in time order.

    Greedy: at each point take the largest size that is aligned there, fits before `end`, and
    is rolled up. Because the sizes nest, any tiling's piece starting at that point is covered
    by the greedy piece together with the pieces after it, so greedy is minimal; a window of
    length W needs at most 2 * (ratio - 1) buckets per level plus W / largest size.
    `start` and `end` must be multiples of the smallest size.
    """
    smallest = sizes[0]
    if start % smallest or end % smallest:
        raise ValueError("start and end must be multiples of the smallest bucket")
    out: list[Bucket] = []
    at = start
    while at < end:
        for size in reversed(sizes):
            if (
                at % size == 0
                and at + size <= end
                and usable(size, at, sizes=sizes, rolled_until=rolled_until)
            ):
                out.append((size, at))
                at += size
                break
    return out


def aggregate(
    events: Iterable[tuple[str, int, int]],
    *,
    sizes: Sizes,
    rolled_until: Mapping[int, int],
) -> dict[Bucket, dict[str, int]]:
    """(key, weight, unix seconds) events -> per bucket, per key, the summed weight.

    Every event counts in its smallest-size bucket. It also counts in each coarser bucket that
    is already rolled up (a late event): the rollup will not visit that bucket again, so the
    ingest keeps it exact itself.
    """
    smallest = sizes[0]
    fine: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, weight, instant in events:
        fine[instant - instant % smallest][key] += weight
    out: dict[Bucket, dict[str, int]] = {}
    for start, counts in fine.items():
        out[(smallest, start)] = dict(counts)
        for size in sizes[1:]:
            coarse = floor(start, size)
            if coarse >= rolled_until.get(size, 0):
                # Coarser sizes are rolled no further than this one (the rollup builds each
                # size from the one below it), so they are not rolled here either.
                break
            into = out.setdefault((size, coarse), {})
            for key, count in counts.items():
                into[key] = into.get(key, 0) + count
    return out


def rollup_targets(
    now: int, *, sizes: Sizes, rolled_until: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Per coarse size, the range [from, to) of bucket starts the next rollup builds: every
    bucket that has ended by `now` and whose finer buckets are complete (for the finer size
    itself rolled, up to its own mark). Sizes with nothing to do are left out."""
    out: dict[int, tuple[int, int]] = {}
    finer_until = now
    for size in sizes[1:]:
        done = rolled_until.get(size, 0)
        target = floor(min(now, finer_until), size)
        if target > done:
            out[size] = (done, target)
        finer_until = max(done, target)
    return out


def horizon(now: int, *, retention: int, sizes: Sizes) -> int:
    """The oldest instant a leaderboard still counts: `now - retention`, rounded down to the
    largest size so that retention removes whole buckets at every size at once."""
    return floor(now - retention, sizes[-1])
