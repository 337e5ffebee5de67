"""One owner per job: a job that a manager (the operator, for a ScheduledJob) keeps in step
with a declaration refuses the changes its manager would undo, and says how to make them
where they last.

Plain functions: the API asks `refusal` before it changes a job; the operator names itself
with `scheduled_job`.
"""

from __future__ import annotations

from enum import StrEnum

SCHEDULED_JOB = "ScheduledJob "


class Change(StrEnum):
    UPDATE = "update"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    DELETE = "delete"


def scheduled_job(namespace: str, name: str) -> str:
    """The manager name of a ScheduledJob: "ScheduledJob <namespace>/<name>"."""
    return f"{SCHEDULED_JOB}{namespace}/{name}"


def _kubectl(change: Change, namespace: str, name: str) -> str:
    target = f"scheduledjob {name} -n {namespace}"
    match change:
        case Change.UPDATE:
            return f"edit the ScheduledJob instead: kubectl edit {target}"
        case Change.PAUSE | Change.RESUME:
            value = "true" if change is Change.PAUSE else "false"
            return (
                f"set spec.suspend: {value} instead: kubectl patch {target} --type merge"
                f' -p \'{{"spec":{{"suspend":{value}}}}}\''
            )
        case Change.CANCEL:
            return f"suspend or delete the ScheduledJob instead: kubectl delete {target}"
        case Change.DELETE:
            return f"delete the ScheduledJob instead: kubectl delete {target}"


def refusal(
    *, job_id: str, managed_by: str, manager: str, force: bool, change: Change
) -> str | None:
    """Why `change` of a job managed by `managed_by`, asked by `manager`, is refused; None
    when it may go ahead (no manager, the manager itself, or forced)."""
    if not managed_by or manager == managed_by or force:
        return None
    reason = f"job {job_id} is managed by {managed_by}, which would undo this {change}"
    if managed_by.startswith(SCHEDULED_JOB):
        namespace, _, name = managed_by.removeprefix(SCHEDULED_JOB).partition("/")
        how = _kubectl(change, namespace, name)
    else:
        how = f"change it through {managed_by}"
    if change is Change.DELETE:
        forced = "its runs' history is deleted with it, and the manager schedules a new job"
    else:
        forced = "the manager then puts back what it declares"
    return f"{reason}; {how} (or force the {change}: {forced} at its next reconcile)"
