"""The scheduling decisions of hourglass.policies, without a server: catch-up arithmetic,
overlap, exclusivity of claims, requeue, and the namespace quotas."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hourglass import policies, quota_rules, schedules
from hourglass.domain import (
    CatchUp,
    CatchUpPolicy,
    JobId,
    JobSpec,
    Overlap,
    RetryPolicy,
    RunId,
    Task,
)
from hourglass.policies import Active, Candidate
from hourglass.quota_rules import Quota, QuotaExceeded
from hourglass.schedules import After, At, Bounds, Cron, Every, Schedule

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
SEVENTIES = datetime(1976, 1, 1, tzinfo=UTC)


def spec(schedule: Schedule, **options: object) -> JobSpec:
    return JobSpec(name="t", task=Task(command=("true",)), schedule=schedule, **options)  # type: ignore[arg-type]


def run_id() -> RunId:
    return RunId(uuid.uuid4())


# --- catch-up begins at creation ---------------------------------------------------------


def test_a_past_start_anchors_the_grid_but_the_first_fire_is_at_or_after_creation() -> None:
    every = Every(timedelta(milliseconds=100))
    created = T0 + timedelta(milliseconds=1234)
    first = schedules.first_fire(every, created=created, bounds=Bounds(start=SEVENTIES))
    # On the grid of 1976-01-01 + k * 100 ms, and the first such point not before creation.
    assert first == T0 + timedelta(milliseconds=1300)
    assert first is not None and (first - SEVENTIES) % every.interval == timedelta(0)


def test_a_start_exactly_on_creation_fires_at_creation() -> None:
    every = Every(timedelta(seconds=10))
    assert schedules.first_fire(every, created=T0, bounds=Bounds(start=T0)) == T0
    assert schedules.first_fire(
        every, created=T0 + timedelta(seconds=10), bounds=Bounds(start=T0)
    ) == T0 + timedelta(seconds=10)


def test_a_future_start_is_kept() -> None:
    start = T0 + timedelta(hours=1)
    assert schedules.first_fire(Every(timedelta(seconds=7)), created=T0, bounds=Bounds(start)) == (
        start
    )


def test_a_past_start_of_a_cron_job_fires_from_creation() -> None:
    first = schedules.first_fire(
        Cron("*/5 * * * *"), created=T0 + timedelta(seconds=1), bounds=Bounds(start=SEVENTIES)
    )
    assert first == T0 + timedelta(minutes=5)


def test_a_past_start_whose_end_is_past_too_never_fires() -> None:
    bounds = Bounds(start=SEVENTIES, end=datetime(1977, 1, 1, tzinfo=UTC))
    assert schedules.first_fire(Every(timedelta(seconds=1)), created=T0, bounds=bounds) is None


@pytest.mark.parametrize("policy", list(CatchUpPolicy))
def test_catch_up_never_counts_fires_from_before_creation(policy: CatchUpPolicy) -> None:
    """A row whose next fire lies before the job existed (written before this rule, or by
    hand) fires from creation on: half a century of 100 ms fires is neither run nor missed."""
    job = spec(Every(timedelta(milliseconds=100)), catch_up=CatchUp(policy))
    plan = policies.due_fires(
        job, first=SEVENTIES, now=T0 + timedelta(milliseconds=250), created=T0
    )
    since_creation = [T0 + timedelta(milliseconds=ms) for ms in (0, 100, 200)]
    if policy == CatchUpPolicy.LATEST:
        # The two fires since creation that the producer was late for are missed; no others.
        assert (plan.times, plan.missed) == (since_creation[-1:], 2)
    else:
        assert (plan.times, plan.missed) == (since_creation, 0)
    assert plan.next_fire == T0 + timedelta(milliseconds=300)


def test_catch_up_before_creation_jumps_to_the_next_fire_when_none_is_due_yet() -> None:
    job = spec(Every(timedelta(seconds=10)))
    plan = policies.due_fires(job, first=SEVENTIES, now=T0 + timedelta(seconds=1), created=T0)
    # 1976 + k * 10 s: T0 is on that grid; T0 itself is at or after creation.
    assert plan.times == [T0]
    plan = policies.due_fires(
        job, first=SEVENTIES, now=T0 + timedelta(seconds=1), created=T0 + timedelta(seconds=1)
    )
    assert plan.times == [] and plan.next_fire == T0 + timedelta(seconds=10)


def test_a_one_shot_in_the_past_still_fires_once() -> None:
    plan = policies.due_fires(spec(At(SEVENTIES)), first=SEVENTIES, now=T0, created=T0)
    assert plan.times == [SEVENTIES] and plan.next_fire is None


def test_catch_up_all_runs_every_fire_after_downtime() -> None:
    job = spec(Every(timedelta(seconds=30)))
    first = T0 + timedelta(seconds=30)
    plan = policies.due_fires(job, first=first, now=T0 + timedelta(minutes=10), created=T0)
    assert len(plan.times) == 20 and plan.missed == 0
    assert plan.next_fire == T0 + timedelta(seconds=630)


def test_catch_up_all_with_a_window_counts_the_rest_missed() -> None:
    job = spec(
        Every(timedelta(seconds=30)), catch_up=CatchUp(CatchUpPolicy.ALL, timedelta(minutes=2))
    )
    plan = policies.due_fires(
        job, first=T0 + timedelta(seconds=30), now=T0 + timedelta(minutes=10), created=T0
    )
    assert [(t - T0).total_seconds() for t in plan.times] == [480, 510, 540, 570, 600]
    assert plan.missed == 15


def test_catch_up_latest_and_skip() -> None:
    latest = spec(Cron("* * * * *"), catch_up=CatchUp(CatchUpPolicy.LATEST))
    plan = policies.due_fires(
        latest,
        first=T0 + timedelta(minutes=1),
        now=T0 + timedelta(minutes=10, seconds=5),
        created=T0,
    )
    assert plan.times == [T0 + timedelta(minutes=10)] and plan.missed == 9
    skip = spec(Every(timedelta(seconds=30)), catch_up=CatchUp(CatchUpPolicy.SKIP))
    plan = policies.due_fires(
        skip, first=T0 + timedelta(seconds=60), now=T0 + timedelta(seconds=635), created=T0
    )
    assert plan.times == [T0 + timedelta(seconds=630)] and plan.missed == 19


def test_one_cycle_records_at_most_its_cap_of_fires() -> None:
    job = spec(Every(timedelta(seconds=1)))
    plan = policies.due_fires(job, first=T0, now=T0 + timedelta(days=1), created=T0)
    assert len(plan.times) == policies.MAX_FIRES_PER_JOB_PER_CYCLE
    assert plan.next_fire == T0 + timedelta(seconds=policies.MAX_FIRES_PER_JOB_PER_CYCLE)


# --- overlap -------------------------------------------------------------------------------


def test_overlap_allow_queues_beside_anything() -> None:
    running = run_id()
    new = run_id()
    verdict = policies.on_fire(Overlap.ALLOW, Active(running=(running,)), new)
    assert verdict.skip_reason == "" and verdict.replaces == ()
    assert verdict.active == Active(queued=(new,), running=(running,))


def test_overlap_skip_skips_while_anything_is_active() -> None:
    assert policies.on_fire(Overlap.SKIP, Active(), run_id()).skip_reason == ""
    verdict = policies.on_fire(Overlap.SKIP, Active(running=(run_id(),)), run_id())
    assert "overlap policy skip" in verdict.skip_reason


def test_overlap_buffer_one_keeps_one_waiting() -> None:
    running, first, second = run_id(), run_id(), run_id()
    verdict = policies.on_fire(Overlap.BUFFER_ONE, Active(running=(running,)), first)
    assert verdict.skip_reason == ""
    verdict = policies.on_fire(Overlap.BUFFER_ONE, verdict.active, second)
    assert "buffer_one" in verdict.skip_reason
    assert verdict.active == Active(queued=(first,), running=(running,))


def test_overlap_replace_cancels_every_active_run() -> None:
    running, queued, new = run_id(), run_id(), run_id()
    verdict = policies.on_fire(Overlap.REPLACE, Active((queued,), (running,)), new)
    assert verdict.skip_reason == ""
    assert set(verdict.replaces) == {queued, running}
    assert verdict.active == Active(queued=(new,))


# --- exclusive claims -----------------------------------------------------------------------


def test_claims_take_one_run_per_exclusive_job_and_only_under_its_lock() -> None:
    solo, busy, unlocked, free = (JobId(uuid.uuid4()) for _ in range(4))
    runs = [run_id() for _ in range(6)]
    candidates = [
        Candidate(runs[0], solo, True),
        Candidate(runs[1], solo, True),  # a second run of the same job: not now
        Candidate(runs[2], busy, True),  # its job runs already (seen under the lock)
        Candidate(runs[3], unlocked, True),  # another worker holds the job's lock
        Candidate(runs[4], free, False),
        Candidate(runs[5], free, False),
    ]
    assert policies.jobs_to_lock(candidates) == [solo, busy, unlocked]
    chosen = policies.claimable(candidates, locked={solo, busy}, running={busy})
    assert chosen == [runs[0], runs[4], runs[5]]


def test_only_buffer_one_and_replace_are_exclusive() -> None:
    assert [o for o in Overlap if policies.exclusive(o)] == [Overlap.BUFFER_ONE, Overlap.REPLACE]


# --- requeue -------------------------------------------------------------------------------


def test_requeue_retries_while_attempts_remain() -> None:
    retry = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=4))
    first = policies.Requeue.decide(retry, attempt=1, now=T0)
    assert first.at is not None and T0 + timedelta(seconds=2) <= first.at <= T0 + timedelta(
        seconds=4
    )
    second = policies.Requeue.decide(retry, attempt=2, now=T0)
    assert second.at is not None and T0 + timedelta(seconds=4) <= second.at <= T0 + timedelta(
        seconds=8
    )
    assert policies.Requeue.decide(retry, attempt=3, now=T0).at is None


# --- quotas --------------------------------------------------------------------------------


def test_quota_defaults_are_documented_constants() -> None:
    assert Quota() == Quota(
        quota_rules.DEFAULT_MAX_JOBS,
        quota_rules.DEFAULT_MAX_QUEUED_RUNS,
        quota_rules.DEFAULT_MAX_FIRES_PER_SECOND,
        quota_rules.DEFAULT_MAX_RUNNING_RUNS,
    )
    with pytest.raises(ValueError, match="max_fires_per_second"):
        Quota(max_fires_per_second=0)
    with pytest.raises(ValueError, match="max_jobs"):
        Quota(max_jobs=-1)


def test_job_and_queue_quotas_name_the_quota_and_its_value() -> None:
    quota = Quota(max_jobs=2, max_queued_runs=5)
    quota_rules.check_jobs(quota, namespace="y", count=2)
    with pytest.raises(QuotaExceeded, match=r"'y' is limited to max_jobs=2") as caught:
        quota_rules.check_jobs(quota, namespace="y", count=3)
    assert caught.value.quota == "max_jobs" and caught.value.limit == 2
    quota_rules.check_queued(quota, namespace="y", count=5)
    with pytest.raises(QuotaExceeded, match="max_queued_runs=5"):
        quota_rules.check_queued(quota, namespace="y", count=6)


def test_max_rate_of_each_schedule_kind() -> None:
    assert quota_rules.max_rate(Every(timedelta(milliseconds=100)), now=T0) == pytest.approx(10)
    assert quota_rules.max_rate(At(T0), now=T0) == 0
    assert quota_rules.max_rate(After(timedelta(0)), now=T0) == 0
    assert quota_rules.max_rate(Cron("*/2 * * * * *"), now=T0) == pytest.approx(0.5)
    assert quota_rules.max_rate(Cron("0-9 * * * * *"), now=T0 + timedelta(seconds=30)) == 1


def test_one_job_may_not_fire_faster_than_its_namespace() -> None:
    quota = Quota(max_fires_per_second=5)
    quota_rules.check_rate(quota, namespace="y", schedule=Every(timedelta(seconds=1)), now=T0)
    quota_rules.check_rate(quota, namespace="y", schedule=Cron("* * * * * *"), now=T0)
    with pytest.raises(QuotaExceeded, match=r"max_fires_per_second=5: .* 10 times a second"):
        quota_rules.check_rate(
            quota, namespace="y", schedule=Every(timedelta(milliseconds=100)), now=T0
        )
    slow = Quota(max_fires_per_second=0.01)
    quota_rules.check_rate(slow, namespace="y", schedule=Cron("0 * * * *"), now=T0)
    with pytest.raises(QuotaExceeded):
        quota_rules.check_rate(slow, namespace="y", schedule=Cron("* * * * *"), now=T0)


def test_fires_within_the_burst_start_on_time_and_the_rest_are_paced() -> None:
    quota = Quota(max_fires_per_second=10)
    due = [T0] * 15
    admitted = quota_rules.admit_fires(due, quota=quota, queued=0, tat=None, now=T0)
    assert admitted.available[:10] == [T0] * 10
    assert admitted.available[10:] == [T0 + timedelta(milliseconds=100 * i) for i in range(1, 6)]
    assert admitted.paced == 5 and admitted.held_back == 0
    # The next cycle, a moment later, continues the same pace.
    later = quota_rules.admit_fires(
        [T0 + timedelta(milliseconds=10)], quota=quota, queued=0, tat=admitted.tat, now=T0
    )
    assert later.available == [T0 + timedelta(milliseconds=600)]


def test_a_steady_rate_within_the_quota_is_never_delayed() -> None:
    quota = Quota(max_fires_per_second=10)
    tat = None
    for step in range(100):
        now = T0 + timedelta(milliseconds=100 * step)
        admitted = quota_rules.admit_fires([now], quota=quota, queued=0, tat=tat, now=now)
        assert admitted.available == [now] and admitted.paced == 0
        tat = admitted.tat


def test_fires_beyond_the_queued_quota_are_held_back_with_a_reason() -> None:
    quota = Quota(max_queued_runs=3)
    admitted = quota_rules.admit_fires([T0] * 5, quota=quota, queued=1, tat=None, now=T0)
    assert admitted.available == [T0, T0, None, None, None]
    assert admitted.held_back == 3
    assert "max_queued_runs=3" in admitted.reason


def test_late_fires_keep_their_own_availability_when_not_paced() -> None:
    past = [T0 - timedelta(seconds=s) for s in (30, 20, 10)]
    admitted = quota_rules.admit_fires(past, quota=Quota(), queued=0, tat=None, now=T0)
    assert admitted.available == past and admitted.paced == 0


# --- fair claims ---------------------------------------------------------------------------


def waiting(namespace: str, running: int, age: int) -> policies.Waiting:
    return policies.Waiting(namespace, running, T0 - timedelta(seconds=age))


def test_every_waiting_namespace_gets_an_equal_share_of_a_claim() -> None:
    shares = policies.claim_shares([waiting("a", 0, 500), waiting("b", 0, 1)], limit=8)
    assert [(s.namespace, s.share) for s in shares] == [("a", 4), ("b", 4)]
    assert policies.claim_shares([waiting("a", 3, 1)], limit=5)[0].share == 5
    assert policies.claim_shares([], limit=5) == []
    assert policies.claim_shares([waiting("a", 0, 1)], limit=0) == []


def test_a_small_claim_goes_to_the_namespaces_running_the_fewest_runs() -> None:
    """A busy worker claims one slot at a time: the namespace with the long backlog (and the
    runs running) does not win every slot just because its runs are older."""
    flood = waiting("a", 32, 5000)
    quiet = waiting("b", 0, 1)
    (share,) = policies.claim_shares([flood, quiet], limit=1)
    assert (share.namespace, share.share) == ("b", 1)
    # Equal load: the one waiting longest.
    (share,) = policies.claim_shares([waiting("a", 1, 5), waiting("b", 1, 9)], limit=1)
    assert share.namespace == "b"


def test_a_namespace_at_its_running_cap_gets_no_share_and_one_near_it_only_its_room() -> None:
    """max_running_runs keeps slots for the others: a namespace running its cap is passed
    over, however old its backlog; one with room for 2 offers 2, not its equal share."""
    capped = policies.Waiting("y", 8, T0 - timedelta(seconds=5000), max_running=8)
    near = policies.Waiting("z", 6, T0 - timedelta(seconds=4000), max_running=8)
    quiet = waiting("x", 0, 1)
    shares = policies.claim_shares([capped, near, quiet], limit=8)
    # z's unused room goes to x: the claim still offers its whole limit.
    assert [(s.namespace, s.share) for s in shares] == [("x", 6), ("z", 2)]
    # Alone at its cap, a namespace gets nothing, even with free slots; a cap of 0 runs none.
    assert policies.claim_shares([capped], limit=8) == []
    zero = policies.Waiting("y", 0, T0, max_running=0)
    assert policies.claim_shares([zero], limit=8) == []
    # Over its cap (two workers filled the same room at once): still nothing.
    over = policies.Waiting("y", 9, T0, max_running=8)
    assert policies.claim_shares([over, quiet], limit=1) == [policies.Share("x", 0, 1)]


def test_capped_namespaces_are_recounted_under_their_lock_or_left_for_later() -> None:
    capped = policies.Waiting("y", 2, T0, max_running=8)
    busy = policies.Waiting("z", 0, T0, max_running=1)
    free = waiting("x", 5, 1)
    assert policies.capped([free, capped, busy]) == ["y", "z"]
    # y's lock was had and 7 of its runs run now; z's lock another claim holds.
    after = policies.recounted([free, capped, busy], capped=["y", "z"], running={"y": 7})
    assert after == [free, policies.Waiting("y", 7, T0, max_running=8)]
    assert policies.capped([waiting("x", 0, 1)]) == []


def test_the_default_running_cap_changes_nothing() -> None:
    assert waiting("a", 0, 1).max_running == quota_rules.DEFAULT_MAX_RUNNING_RUNS
    assert Quota().max_running_runs == quota_rules.DEFAULT_MAX_RUNNING_RUNS >= 100_000
    with pytest.raises(ValueError, match="max_running_runs"):
        Quota(max_running_runs=-1)


def test_a_cron_jobs_fires_before_creation_are_not_caught_up() -> None:
    job = spec(Cron("*/10 * * * * *"))
    plan = policies.due_fires(
        job, first=SEVENTIES, now=T0 + timedelta(seconds=25), created=T0 + timedelta(seconds=5)
    )
    assert plan.times == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    assert plan.missed == 0 and plan.next_fire == T0 + timedelta(seconds=30)
