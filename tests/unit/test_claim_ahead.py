"""A worker claims ahead of its slots only while its attempts are short."""

from __future__ import annotations

from hourglass.workers.claim_ahead import SHORT, ClaimAhead


def test_no_claim_ahead_before_the_first_attempt() -> None:
    assert ClaimAhead(limit=8).runs(longest_running=0.0) == 0


def test_short_attempts_claim_ahead_up_to_the_limit() -> None:
    pace = ClaimAhead(limit=8)
    for _ in range(3):
        pace.observe(0.002)
    assert pace.runs(longest_running=0.0) == 8


def test_a_long_attempt_stops_claiming_ahead_at_once() -> None:
    pace = ClaimAhead(limit=8)
    for _ in range(100):
        pace.observe(0.002)
    pace.observe(3600)
    assert pace.runs(longest_running=0.0) == 0


def test_claiming_ahead_resumes_after_a_run_of_short_attempts() -> None:
    pace = ClaimAhead(limit=8)
    pace.observe(30)
    pace.observe(0.01)
    assert pace.runs(longest_running=0.0) == 0  # one short attempt is not enough to trust
    for _ in range(30):
        pace.observe(0.01)
    assert pace.recent is not None and pace.recent < SHORT
    assert pace.runs(longest_running=0.0) == 8


def test_a_limit_of_zero_never_claims_ahead() -> None:
    pace = ClaimAhead(limit=0)
    pace.observe(0.001)
    assert pace.runs(longest_running=0.0) == 0


def test_an_attempt_running_long_stops_claiming_ahead_before_it_ends() -> None:
    pace = ClaimAhead(limit=8)
    for _ in range(10):
        pace.observe(0.002)
    assert pace.runs(longest_running=0.5) == 8
    assert pace.runs(longest_running=SHORT + 1) == 0


def test_the_lead_holds_about_a_second_of_the_slots_work_at_most() -> None:
    # /bin/true: the whole limit. Attempts of 0.1 s on 8 slots: 80 runs are about a second.
    # Attempts near SHORT: one per slot, so that a held run waits about one attempt.
    for seconds, held in ((0.002, 256), (0.1, 80), (0.9, 8)):
        pace = ClaimAhead(limit=256, slots=8)
        for _ in range(30):
            pace.observe(seconds)
        assert pace.runs(longest_running=0.0) == held, seconds
