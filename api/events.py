"""Fan-out of database change notifications to the streams that wait for them.

One LISTEN connection per API process, on the channels the store's triggers and writers
notify: `hourglass_events` (payload: ids of jobs whose row changed, or whose runs wrote
run events) and `hourglass_logs` (payload: a run id that got output). Each WatchJob or
GetRunLogs stream subscribes to the id it follows and is woken when that id is named. A
notification only wakes: what changed is read from the tables (for WatchJob, the events
after its cursor), so a lost notification delays a stream by its poll, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from hourglass.store import db, runs

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "hourglass_events"


class Subscription:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Returns when the followed id changed, or after `timeout` (a safety poll)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class Hub:
    def __init__(self, dsn: str) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._listeners = [
            db.Wakeups(dsn, EVENTS_CHANNEL, on_payload=self._notified),
            db.Wakeups(dsn, runs.LOGS_CHANNEL, on_payload=self._notified),
        ]

    async def start(self) -> None:
        for listener in self._listeners:
            await listener.start()

    async def stop(self) -> None:
        for listener in self._listeners:
            await listener.stop()

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[Subscription]:
        subscription = Subscription()
        self._subscribers[key].add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers[key].discard(subscription)
            if not self._subscribers[key]:
                del self._subscribers[key]

    def _notified(self, payload: str) -> None:
        for key in payload.split(","):
            for subscription in self._subscribers.get(key, ()):
                subscription.event.set()
