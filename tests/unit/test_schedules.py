from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hourglass import durations, schedules
from hourglass.domain import RetryPolicy
from hourglass.schedules import After, At, Bounds, Cron, Every

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_one_shots_fire_once() -> None:
    assert At(T0).first(T0 - timedelta(days=1)) == T0
    assert At(T0).next_after(T0) is None
    assert After(timedelta(seconds=90)).first(T0) == T0 + timedelta(seconds=90)
    assert After(timedelta(seconds=90)).next_after(T0) is None


def test_every_is_drift_free_from_the_last_fire() -> None:
    every = Every(timedelta(seconds=2))
    first = every.first(T0)
    assert first == T0 + timedelta(seconds=2)
    assert first is not None
    assert schedules.next_fire(every, first, bounds=Bounds()) == T0 + timedelta(seconds=4)


def test_cron_five_and_six_fields() -> None:
    assert Cron("*/5 * * * *").next_after(T0) == T0 + timedelta(minutes=5)
    assert Cron("*/10 * * * * *").next_after(T0) == T0 + timedelta(seconds=10)
    assert Cron("@hourly").next_after(T0) == T0 + timedelta(hours=1)


def test_cron_in_a_time_zone() -> None:
    # 09:00 in Berlin is 07:00 UTC in summer.
    assert Cron("0 9 * * *", "Europe/Berlin").next_after(T0) == datetime(
        2026, 6, 2, 7, 0, tzinfo=UTC
    )


def test_cron_skipped_local_time_fires_once_after_spring_forward() -> None:
    # 2026-03-29 02:30 does not exist in Berlin (02:00 -> 03:00): fires at 03:00 CEST.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    cron = Cron("30 2 * * *", "Europe/Berlin")
    fire = cron.next_after(start)
    assert fire == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert cron.next_after(fire) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_cron_repeated_local_time_fires_once_at_fall_back() -> None:
    # 2026-10-25 02:30 happens twice in Berlin; the job fires once.
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    cron = Cron("30 2 * * *", "Europe/Berlin")
    fires = [cron.next_after(start)]
    for _ in range(2):
        previous = fires[-1]
        assert previous is not None
        fires.append(cron.next_after(previous))
    assert fires[0] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert fires[1] == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "field", "reason"),
    [
        (Cron("61 * * * *"), "schedule.cron.expression", "Bad minute"),
        (Cron("* * *"), "schedule.cron.expression", "has 3 fields"),
        (Cron("* * * * *", "Mars/Olympus"), "schedule.cron.time_zone", "unknown IANA"),
        (Every(timedelta(milliseconds=1)), "schedule.every.interval", "at least"),
        (After(timedelta(seconds=-1)), "schedule.after", "negative"),
    ],
)
def test_invalid_schedules_name_the_field(
    schedule: schedules.Schedule, field: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        schedules.validate(schedule, now=T0)
    assert str(raised.value).startswith(field + ": ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400), ("1.5s", 1.5)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert durations.parse(text).total_seconds() == seconds
    assert durations.parse(durations.format(durations.parse(text))) == durations.parse(text)


@pytest.mark.parametrize("text", ["", "2", "s", "-1s", "2 s", "1x", "1s2"])
def test_durations_reject_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.parse(text)


def test_retry_backoff_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(
        max_attempts=10, backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=5)
    )
    for attempt, ceiling in [(2, 1), (3, 2), (4, 4), (5, 5), (9, 5)]:
        delays = [policy.delay_before(attempt).total_seconds() for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert max(delays) - min(delays) > 0  # jittered, not lockstep
