"""What a CronJob user relies on, against a real kube-apiserver, the real kubectl, a real
hourglass API and (where runs must happen) a real producer and worker: the default columns of
`kubectl get sj`, spec.suspend, a trigger by annotation, an outage of the API, and one owner
per job (a forced change is undone; a lost job id is found again with its history)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from hourglass.embedded import EmbeddedEtcd
from hourglass.locks import Etcd
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from tests.integration.helpers import running_service
from tests.k8s.test_kubectl import kubectl  # noqa: F401  # a fixture
from tests.k8s.test_operator import (
    HourglassApi,
    RunningOperator,
    ScheduledJobs,
    _scheduled,
    example,
    ready,
    wait_for,
)

pytest_plugins = ["tests.k8s.test_operator"]

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
RUNS = 60.0  # runs need a producer and a worker on a busy machine


@pytest.fixture
def hourglass_worker(database_url: str, etcd_server: EmbeddedEtcd) -> Iterator[None]:
    """A producer and a worker (local executor) on the API's database, in a thread."""
    started, stopping = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def serve() -> None:
        pool = await db.open_pool(database_url)
        etcd = Etcd(etcd_server.endpoint, f"/sj-{uuid.uuid4().hex[:8]}/")
        try:
            async with running_service(pool, database_url, etcd):
                started.set()
                while not stopping.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except BaseException as error:
            errors.append(error)
            started.set()
            raise
        finally:
            await etcd.close()
            await pool.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="worker", daemon=True)
    thread.start()
    assert started.wait(30) and not errors, errors
    yield
    stopping.set()
    thread.join(60)


def _named(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = example()
    body["metadata"] = {"name": name}
    body["spec"] = spec
    return body


def _every_second(*command: str, **more: Any) -> dict[str, Any]:
    return {"schedule": {"every": {"interval": "1s"}}, "task": {"command": list(command)}, **more}


def columns(kubectl: Kubectl) -> dict[str, dict[str, str]]:  # noqa: F811
    """`kubectl get sj` as the user reads it: name -> column -> cell."""
    listed = kubectl("get", "sj")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    # Cells are aligned under their headers; an empty one is blank.
    starts = [header.index(name) for name in names]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return {
        line[: starts[1]].strip(): {
            name: line[start:end].strip() for name, (start, end) in zip(names, bounds, strict=True)
        }
        for line in rows
    }


def test_kubectl_get_tells_broken_suspended_failing_and_healthy_apart(
    kubectl: Kubectl,  # noqa: F811
    operator: RunningOperator,
    hourglass_worker: None,
    sj: ScheduledJobs,
) -> None:
    sj.create(_named("healthy", _every_second("true")))
    sj.create(_named("failing", _every_second("false")))
    sj.create(_named("suspended", {**_every_second("true"), "suspend": True}))
    # Every field in range, but there is no February 30th: only the API can tell.
    broken = {"schedule": {"cron": {"expression": "0 0 30 2 *"}}, "task": {"command": ["true"]}}
    sj.create(_named("broken", broken))

    def settled() -> dict[str, dict[str, str]] | None:
        table = columns(kubectl)
        done = (
            table.get("healthy", {}).get("LAST RESULT") == "succeeded"
            and table.get("failing", {}).get("REASON") == "RunsFailing"
            and table.get("suspended", {}).get("REASON") == "Suspended"
            and table.get("broken", {}).get("REASON") == "InvalidSpec"
        )
        return table if done else None

    table = wait_for("the four rows to tell their story", settled, timeout=RUNS)
    assert list(next(iter(table.values()))) == [
        "NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "LAST RESULT", "NEXT FIRE",
        "READY", "REASON", "AGE",
    ]  # fmt: skip
    healthy, failing = table["healthy"], table["failing"]
    suspended, wrong = table["suspended"], table["broken"]
    assert healthy["SCHEDULE"] == "every 1s" and healthy["SUSPEND"] == "false"
    assert healthy["READY"] == "True" and healthy["NEXT FIRE"]
    assert healthy["LAST SCHEDULE"]
    assert failing["LAST RESULT"] == "failed" and failing["READY"] == "False"
    assert suspended["SUSPEND"] == "true" and suspended["READY"] == "True"
    assert suspended["NEXT FIRE"] == "" and suspended["LAST RESULT"] == ""
    assert wrong["SCHEDULE"] == "cron 0 0 30 2 *", "a broken spec lists with what it asks for"
    assert wrong["READY"] == "False" and wrong["SUSPEND"] == "false"
    condition = ready(sj.status("failing"))
    assert condition is not None and "the last 3 runs" in condition["message"]
    assert "day-of-month" in (ready(sj.status("broken")) or {}).get("message", "")


def test_suspend_pauses_the_job_and_unsuspend_resumes_it(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    sj.patch("hello", {"spec": {"suspend": True}})
    wait_for(
        "the job paused",
        lambda: hourglass_api.job(job_id).job.state == pb.JOB_STATE_PAUSED,
    )
    status = wait_for("the status", lambda: (s := sj.status("hello"))["state"] == "paused" and s)
    assert "nextFireAt" not in status
    assert (ready(status) or {}).get("reason") == "Suspended"
    sj.patch("hello", {"spec": {"suspend": False}})
    wait_for("the job active", lambda: hourglass_api.job(job_id).job.state == pb.JOB_STATE_ACTIVE)
    wait_for("a next fire again", _scheduled(sj, "hello"))
    assert [j.id for j in hourglass_api.jobs()] == [job_id]
    assert hourglass_api.job(job_id).job.revision == 1  # suspending is no new revision


def _manual_runs(hourglass_api: HourglassApi, job_id: str) -> list[pb.Run]:
    response = hourglass_api.call("ListRuns", pb.ListRunsRequest(job_id=job_id))
    return [run for run in response.runs if run.trigger == pb.RUN_TRIGGER_MANUAL]


def test_the_trigger_annotation_runs_the_job_once_per_value(
    kubectl: Kubectl,  # noqa: F811
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    annotated = kubectl("annotate", "sj", "hello", "hourglass.io/trigger=first")
    assert annotated.returncode == 0, annotated.stderr
    wait_for("one manual run", lambda: len(_manual_runs(hourglass_api, job_id)) == 1)
    event = wait_for(
        "the Triggered event",
        lambda: next((e for e in sj.events("hello") if e.reason == "Triggered"), None),
    )
    assert "hourglass.io/trigger=first" in event.message
    time.sleep(2.5)  # two more refreshes: the same value triggers nothing more
    assert len(_manual_runs(hourglass_api, job_id)) == 1
    again = kubectl("annotate", "--overwrite", "sj", "hello", "hourglass.io/trigger=second")
    assert again.returncode == 0, again.stderr
    wait_for("a second manual run", lambda: len(_manual_runs(hourglass_api, job_id)) == 2)


def test_a_forced_pause_or_update_is_undone_by_the_operator(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    with pytest.raises(grpc.RpcError) as refused:
        hourglass_api.call("PauseJob", pb.PauseJobRequest(job_id=job_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "spec.suspend: true" in refused.value.details()

    hourglass_api.call("PauseJob", pb.PauseJobRequest(job_id=job_id, force=True))
    wait_for("the pause undone", lambda: hourglass_api.job(job_id).job.state == 1)

    other = hourglass_api.job(job_id).job.spec
    other.schedule.every.interval.FromSeconds(45)
    hourglass_api.call("UpdateJob", pb.UpdateJobRequest(job_id=job_id, spec=other, force=True))
    wait_for(
        "the spec put back",
        lambda: hourglass_api.job(job_id).job.spec.schedule.every.interval.seconds == 30,
    )
    assert "Restored" in [event.reason for event in sj.events("hello")]
    assert [j.id for j in hourglass_api.jobs()] == [job_id]


def test_an_operator_that_lost_the_job_id_finds_the_job_and_its_history(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    run = hourglass_api.call("TriggerJob", pb.TriggerJobRequest(job_id=job_id)).run
    sj.patch_status("hello", {"jobId": None})  # a status lost (a restore, a migration)
    wait_for("the status without a job", lambda: "jobId" not in sj.status("hello"))
    sj.patch("hello", {"spec": {"maxAttempts": 5}})  # a new generation: a new request id
    status = wait_for(
        "generation 2 handled",
        lambda: (s := sj.status("hello")).get("observedGeneration") == 2 and s,
    )
    assert status["jobId"] == job_id
    assert [j.id for j in hourglass_api.jobs()] == [job_id]
    assert hourglass_api.job(job_id).job.spec.max_attempts == 5
    runs = hourglass_api.call("ListRuns", pb.ListRunsRequest(job_id=job_id)).runs
    assert run.id in [r.id for r in runs]


def test_while_the_api_is_down_the_next_fire_is_not_shown_stale(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    wait_for("the job", _scheduled(sj, "hello"))
    hourglass_api.stop()

    def unavailable() -> dict[str, Any] | None:
        status = sj.status("hello")
        condition = ready(status) or {}
        return status if condition.get("reason") == "ApiUnavailable" else None

    status = wait_for("Ready=False/ApiUnavailable", unavailable)
    assert (ready(status) or {}).get("status") == "False"
    assert "nextFireAt" not in status
