"""Who may change a managed job, and what a refusal tells the user to do instead."""

from __future__ import annotations

import pytest

from hourglass import ownership
from hourglass.ownership import Change

MANAGER = ownership.scheduled_job("team", "hello")


def refusal(**kwargs: object) -> str | None:
    arguments: dict[str, object] = {
        "job_id": "j1",
        "managed_by": MANAGER,
        "manager": "",
        "force": False,
        "change": Change.DELETE,
    }
    arguments.update(kwargs)
    return ownership.refusal(**arguments)  # type: ignore[arg-type]


def test_an_unmanaged_job_is_anyones_to_change() -> None:
    assert refusal(managed_by="") is None


def test_its_manager_and_a_forced_request_may_change_it() -> None:
    assert refusal(manager=MANAGER) is None
    assert refusal(force=True) is None


@pytest.mark.parametrize(
    ("change", "how"),
    [
        (Change.DELETE, "kubectl delete scheduledjob hello -n team"),
        (Change.PAUSE, "set spec.suspend: true instead"),
        (Change.RESUME, "set spec.suspend: false instead"),
        (Change.UPDATE, "kubectl edit scheduledjob hello -n team"),
        (Change.CANCEL, "kubectl delete scheduledjob hello -n team"),
    ],
)
def test_anyone_else_is_told_how_to_do_it_with_kubectl(change: Change, how: str) -> None:
    message = refusal(manager="someone", change=change)
    assert message is not None
    assert message.startswith(
        f"job j1 is managed by ScheduledJob team/hello, which would undo this {change}"
    )
    assert how in message
    assert f"or force the {change}" in message


def test_a_forced_delete_says_the_history_goes() -> None:
    message = refusal(change=Change.DELETE)
    assert message is not None and "history is deleted" in message


def test_another_kind_of_manager_is_named_as_it_is() -> None:
    message = refusal(managed_by="terraform", change=Change.UPDATE)
    assert message is not None and "change it through terraform" in message
