"""The plain decisions of the lock recipe: which names, TTLs and waits are accepted, and how a
lock's name becomes its etcd key prefix, so that no two locks ever share keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hourglass import mutex


@pytest.mark.parametrize("name", ["a", "deploy", "reports/daily", "a.b-c:d_e", "x" * 253])
def test_names_accepted(name: str) -> None:
    assert mutex.check_name(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is required"),
        ("x" * 254, "must be at most 253 characters"),
        ("a b", "may hold only"),
        ("a%2Fb", "may hold only"),
        ("é", "may hold only"),
        ("a\x00", "may hold only"),
        ("٣", "may hold only"),  # a Unicode digit is not an ASCII digit
    ],
)
def test_names_refused(name: str, reason: str) -> None:
    assert reason in (mutex.check_name(name) or "")


@pytest.mark.parametrize(
    ("seconds", "ok"), [(1.99, False), (2, True), (10, True), (3600, True), (3600.5, False)]
)
def test_ttl_range(seconds: float, ok: bool) -> None:
    assert (mutex.check_ttl(seconds) is None) == ok


@pytest.mark.parametrize(
    ("seconds", "ok"), [(-0.001, False), (0, True), (3600, True), (3601, False)]
)
def test_wait_range(seconds: float, ok: bool) -> None:
    assert (mutex.check_wait(seconds) is None) == ok


def test_a_fraction_of_a_second_rounds_up() -> None:
    assert mutex.lease_seconds(2.001) == 3
    assert mutex.lease_seconds(2.0) == 2


valid_names = st.text(alphabet="ab/.:-_%", min_size=1, max_size=8).filter(
    lambda n: mutex.check_name(n) is None
)
namespaces = st.text(min_size=1, max_size=8)


@given(first=st.tuples(namespaces, valid_names), second=st.tuples(namespaces, valid_names))
def test_one_locks_keys_are_never_under_anothers_prefix(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """A lock's keys are its prefix plus a lease id; with any other (namespace, name), neither
    prefix starts with the other, so a range over one lock never sees the other's keys."""
    a = mutex.lock_prefix("/hg/", namespace=first[0], name=first[1])
    b = mutex.lock_prefix("/hg/", namespace=second[0], name=second[1])
    if first == second:
        assert a == b
    else:
        assert not a.startswith(b) and not b.startswith(a)
