"""Which finished Jobs of a ScheduledJob to delete, as a CronJob's successfulJobsHistoryLimit
and failedJobsHistoryLimit would: keep the newest few of each outcome. Pure, so the choice is
unit-tested without a server.

Only Jobs that have ended *and* whose outcome an attempt has reported are candidates: a Job
that ended while no worker held it is still waiting to be adopted and reported, and a
running Job is never history.
"""

from __future__ import annotations

from collections.abc import Iterable

from hourglass.workers.executors import kube_status
from hourglass.workers.executors.kube_manifests import SCHEDULED_AT_ANNOTATION, Manifest

# A CronJob's defaults.
SUCCESSFUL_DEFAULT = 3
FAILED_DEFAULT = 1


def finished_at(job: Manifest) -> str:
    """When the Job ended (RFC 3339 text sorts by time), else when it was made."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime") or status.get("completionTime") or "")
    return str(job["metadata"].get("creationTimestamp") or "")


def to_delete(
    jobs: Iterable[Manifest], *, successful: int | None, failed: int | None
) -> list[Manifest]:
    """The reported, finished Jobs beyond the newest `successful` that completed and the newest
    `failed` that failed (None: the CronJob defaults, 3 and 1), oldest first."""
    keep = {
        "Complete": SUCCESSFUL_DEFAULT if successful is None else successful,
        "Failed": FAILED_DEFAULT if failed is None else failed,
    }
    done: dict[str, list[Manifest]] = {"Complete": [], "Failed": []}
    for job in jobs:
        final = kube_status.final_condition(job)
        if final is None or not kube_status.reported(job):
            continue
        if job["metadata"].get("deletionTimestamp"):
            continue
        done[final[0]].append(job)
    doomed: list[Manifest] = []
    for kind, found in done.items():
        found.sort(key=_age, reverse=True)
        doomed.extend(found[keep[kind] :])
    doomed.sort(key=_age)
    return doomed


def _age(job: Manifest) -> tuple[str, str, str]:
    """Newer sorts later: by the end (to the second), then by the fire's nominal time
    (microseconds, the same offset for every Job hourglass makes), then by name."""
    metadata = job["metadata"]
    fire = (metadata.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION, "")
    return finished_at(job), str(fire), str(metadata["name"])
