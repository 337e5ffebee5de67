"""workers/slots.py: runs claimed ahead take freed slots in claim order; a cancel ends a wait
without a slot; a wait given up returns the slot it was handed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from hourglass.domain import FencingToken, JobId, RetryPolicy, RunId, Task
from hourglass.store.claims import QueuedRun
from hourglass.workers.slots import Slots

TOKEN = FencingToken(7)


def queued() -> QueuedRun:
    now = datetime.now(UTC)
    return QueuedRun(
        id=RunId(uuid.uuid4()),
        job_id=JobId(uuid.uuid4()),
        namespace="default",
        scheduled_at=now,
        available_at=now,
        attempt=1,
        task=Task(command=("true",)),
        timeout=None,
        retry=RetryPolicy(),
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_freed_slots_go_to_waiting_runs_in_claim_order() -> None:
    slots = Slots(1)
    assert await slots.take(queued(), TOKEN, cancelled=set())
    runs = [queued() for _ in range(3)]
    takes = [asyncio.create_task(slots.take(run, TOKEN, cancelled=set())) for run in runs]
    await settle()
    assert list(slots.waiting) == [run.id for run in runs]
    for i in range(3):
        slots.release()
        await settle()
        assert [take.done() for take in takes] == [j <= i for j in range(3)]
        assert await takes[i]
    assert slots.waiting == {}


async def test_a_cancelled_wait_gets_no_slot_and_the_next_run_does() -> None:
    slots = Slots(1)
    assert await slots.take(queued(), TOKEN, cancelled=set())
    first, second = queued(), queued()
    waits = [
        asyncio.create_task(slots.take(run, TOKEN, cancelled=set())) for run in (first, second)
    ]
    await settle()
    assert slots.cancel(first.id)
    assert await waits[0] is False
    assert not slots.cancel(first.id)  # no longer waiting
    slots.release()
    assert await waits[1] is True


async def test_a_run_cancelled_as_its_slot_comes_gives_the_slot_back() -> None:
    slots = Slots(1)
    run = queued()
    assert not await slots.take(run, TOKEN, cancelled={run.id})
    assert await slots.take(queued(), TOKEN, cancelled=set())  # the slot is free again


async def test_a_wait_given_up_after_its_slot_came_returns_the_slot() -> None:
    slots = Slots(1)
    assert await slots.take(queued(), TOKEN, cancelled=set())
    given_up, next_run = queued(), queued()
    wait = asyncio.create_task(slots.take(given_up, TOKEN, cancelled=set()))
    await settle()
    slots.release()  # handed to `given_up`, which is abandoned before it wakes
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    assert await asyncio.wait_for(slots.take(next_run, TOKEN, cancelled=set()), 1)
