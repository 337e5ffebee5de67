"""Group commit (cases/shortener/group.py) on its own: no database, a flush that records the
batches it was given and answers when the test lets it."""

from __future__ import annotations

import asyncio

import pytest

from hourglass.cases.shortener.group import GroupCommit


class Flush:
    """Records each batch and holds it until `release` (one commit in flight at a time)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"item {i}") if i < 0 else i * 10 for i in items]


async def _until(check: object) -> None:
    for _ in range(1000):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("never")


async def test_calls_during_a_flush_share_the_next_and_each_waits_for_its_own() -> None:
    flush = Flush()
    group: GroupCommit[int, int] = GroupCommit(flush, max_batch=3)
    first = asyncio.ensure_future(group.submit(1))
    await _until(lambda: flush.batches)
    rest = [asyncio.ensure_future(group.submit(i)) for i in (2, 3, 4, 5)]
    await asyncio.sleep(0)
    assert not first.done() and not any(f.done() for f in rest)  # nobody answered early
    flush.gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50]
    assert flush.batches == [[1], [2, 3, 4], [5]]  # at most max_batch, in order
    assert group.runner is None  # idle: the next call starts a flush at once


async def test_a_failed_flush_fails_its_callers_only_and_an_item_can_fail_alone() -> None:
    flush = Flush()
    group: GroupCommit[int, int] = GroupCommit(flush)
    flush.fail = OSError("database away")
    held = asyncio.ensure_future(group.submit(1))
    await _until(lambda: flush.batches)
    flush.gate.set()
    with pytest.raises(OSError, match="database away"):
        await held
    flush.fail = None
    answers = await asyncio.gather(group.submit(-1), group.submit(2), return_exceptions=True)
    assert isinstance(answers[0], ValueError) and answers[1] == 20


async def test_closing_cancels_the_waiting_callers() -> None:
    flush = Flush()
    group: GroupCommit[int, int] = GroupCommit(flush)
    held = asyncio.ensure_future(group.submit(1))
    await _until(lambda: flush.batches)
    queued = asyncio.ensure_future(group.submit(2))
    await asyncio.sleep(0)
    await group.close()
    for future in (held, queued):
        with pytest.raises(asyncio.CancelledError):
            await future
