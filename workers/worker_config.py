"""How a worker is set up: its options and their checks, and the name it goes by.

They are read by the command line (hourglass.cli), the dev stack and the tests as much as by
the worker, and they change for reasons of their own (a new knob), so they live apart from
the claim loop in workers/worker.py.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from hourglass.workers import claim_ahead as claim_ahead_module

__all__ = ["WorkerConfig", "default_worker_id"]


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    # Attempts executed at once.
    concurrency: int = 32
    # Runs claimed beyond the free slots at most, each waiting for a slot (None: 8 x
    # `concurrency`; never more than claim_ahead.LEAD seconds of the slots' work), while
    # attempts are short (workers/claim_ahead.py). A freed slot then
    # starts a held run at once instead of waiting for a claim's round trips, and a claim
    # takes at least half this many at once. A held run's attempt is stored not started, so
    # a worker that dies holding it spends none of its attempts (Finisher.mark_started).
    claim_ahead: int | None = None
    # Attempts shorter than this (seconds, on average and running now) are claimed ahead for.
    claim_ahead_below: float = claim_ahead_module.SHORT
    # Seconds etcd keeps this worker's runs after its last heartbeat.
    lease_ttl: int = 10
    # The longest the worker waits without looking for work (fallback for lost notifications).
    max_idle: float = 1.0
    # How long SIGTERM waits for running attempts before handing them back.
    shutdown_grace: float = 30.0
    worker_id: str = field(default_factory=default_worker_id)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_ttl < 2:
            raise ValueError("lease_ttl must be at least 2 seconds")
        if self.claim_ahead is not None and self.claim_ahead < 0:
            raise ValueError("claim_ahead must not be negative")

    @property
    def ahead(self) -> int:
        return 8 * self.concurrency if self.claim_ahead is None else self.claim_ahead
