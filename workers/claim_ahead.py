"""How many runs a worker claims beyond its free slots: a pure decision, from how long its
attempts have been taking.

A run claimed ahead is held (running, under the worker's lease and fencing token) until one of
the worker's slots frees, and then starts at once: a short attempt's slot never waits for a
claim's round trips (docs/benchmarks.md: a `/bin/true` slot spent about three quarters of its
time waiting for the next claim). But a held run waits for *this* worker's slots, while
another worker might have run it now. Behind attempts of an hour, that is an hour's wait, so
the worker claims ahead only while its attempts are short: their moving average below `SHORT`,
and none of those running now older than that. A worker that has seen no attempt yet, or whose
attempts are long, claims only for its free slots, as before. (`SHORT` is the default of
WorkerConfig.claim_ahead_below.)

Each claim takes about half the lead at once (Worker.run), so a longer lead means fewer,
larger claims: a claim is a PostgreSQL transaction and an etcd transaction whatever its size.
With 8 x concurrency in place of 4 x, a drain of `/bin/true` made half the claims and spent
13% less CPU per run in all (docs/benchmarks.md); LEAD keeps the wait it adds bounded.

A held run costs nothing if its worker dies: its attempt is stored not started until its slot
comes (Finisher.mark_started, workers/finisher.py), and the claimer hands such a run back to the
queue with its attempt unspent instead of recording it lost.
"""

from __future__ import annotations

from dataclasses import dataclass

# An attempt shorter than this (seconds) frees its slot soon enough to claim ahead for.
SHORT = 1.0
# Weight of the latest attempt in the moving average: a long attempt stops claiming ahead at
# once; it takes a run of short ones to start again.
WEIGHT = 0.2
# At most this many seconds of the slots' work are held ahead (at the recent pace): the
# runs of `/bin/true` fill the whole limit, and the runs of attempts near SHORT hold one
# per slot, so that no held run waits much longer than this for a slot.
LEAD = 1.0


@dataclass(slots=True)
class ClaimAhead:
    # Runs held beyond the slots at most.
    limit: int
    # Attempts shorter than this (seconds) are worth claiming ahead for.
    short: float = SHORT
    # Moving average of attempt durations, in seconds; None before the first.
    recent: float | None = None
    # The worker's slots, for the LEAD cap (0: no cap, `limit` alone).
    slots: int = 0

    def observe(self, seconds: float) -> None:
        """Records how long an attempt took."""
        if self.recent is None:
            self.recent = seconds
        else:
            self.recent += WEIGHT * (seconds - self.recent)

    def runs(self, *, longest_running: float) -> int:
        """How many runs to hold beyond the slots now, given how long the oldest attempt
        running now has been running (seconds)."""
        if self.recent is None or self.recent >= self.short or longest_running >= self.short:
            return 0
        if not self.slots:
            return self.limit
        paced = int(self.slots * LEAD / max(self.recent, 1e-6))
        return min(self.limit, max(self.slots, paced))
