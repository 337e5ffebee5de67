"""The Job of a ScheduledJob as the Kubernetes executor builds it (kube_template): the user's
template kept, hourglass's parts filled in, in the ScheduledJob's namespace and owned by it;
and where a worker refuses to put it. tests/k8s/test_job_template.py shows the same Job
accepted by a real API server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hourglass import job_templates
from hourglass.domain import FencingToken, JobId, KubernetesJob, RunId, RunState, Task
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_config import KubernetesConfig
from hourglass.workers.executors.kube_manifests import (
    SECRET_ANNOTATION,
    Refused,
    label_value,
    task_container,
)
from hourglass.workers.executors.kube_template import job_for, namespace_of
from hourglass.workers.executors.local import LocalExecutor

DIGEST = "sha256:" + "cd" * 32
UID = "0b6e2f6c-7c1c-4a53-9a55-3d2b7f1e5b11"
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "billing"}, "annotations": {"note": "hi"}},
    "spec": {
        "ttlSecondsAfterFinished": 600,
        "template": {
            "metadata": {"labels": {"app": "report"}},
            "spec": {
                "serviceAccountName": "reporter",
                "automountServiceAccountToken": True,
                "securityContext": {"runAsUser": 3000, "fsGroup": 3000},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "containers": [
                    {
                        "name": "report",
                        "image": "busybox:1.36",
                        "env": [
                            {"name": "REGION", "value": "from-template"},
                            {
                                "name": "DB_PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}},
                            },
                        ],
                        "securityContext": {"readOnlyRootFilesystem": True},
                    },
                    {"name": "sidecar", "image": "busybox:1.36"},
                ],
                "volumes": [{"name": "settings", "configMap": {"name": "report"}}],
            },
        },
    },
}
CONFIG = KubernetesConfig(
    namespace="hgjobs",
    job_namespaces=frozenset({"team-a"}),
    template_tenants=frozenset({"ops"}),
    artifacts_url="s3://bin",
    service_account="hg-hourglass-job",
)


def _attempt(
    *, template: dict[str, Any] | None = TEMPLATE, tenant: str = "ops", **task: Any
) -> AttemptContext:
    kubernetes = KubernetesJob(
        job_template=job_templates.canonical(template) if template else "",
        namespace="team-a",
        owner_name="reporter",
        owner_uid=UID,
    )
    task.setdefault("command", ())
    return AttemptContext(
        run_id=RunId(uuid.uuid4()),
        job_id=JobId(uuid.uuid4()),
        attempt=2,
        fencing_token=FencingToken(7),
        scheduled_at=datetime(2026, 11, 29, tzinfo=UTC),
        task=Task(kubernetes=kubernetes, **task),
        timeout=timedelta(seconds=90),
        worker_id="w",
        namespace=tenant,
    )


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container["env"]}


def test_the_template_is_kept_and_hourglass_fills_in_only_its_own_parts() -> None:
    attempt = _attempt(env={"REGION": "from-task"})
    job = job_for(CONFIG, attempt)
    metadata = job["metadata"]
    assert metadata["labels"] == {
        "team": "billing",
        "hourglass.io/job": str(attempt.job_id),
        "hourglass.io/run": str(attempt.run_id),
        "hourglass.io/attempt": "2",
        "hourglass.io/scheduledjob": "reporter",
    }
    assert metadata["annotations"]["note"] == "hi"
    assert metadata["annotations"]["hourglass.io/fencing-token"] == "7"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "hourglass.io/v1",
            "kind": "ScheduledJob",
            "name": "reporter",
            "uid": UID,
            "controller": True,
        }
    ]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 90
    assert spec["ttlSecondsAfterFinished"] == 600  # the template's own
    assert "suspend" not in spec
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pod_labels["app"] == "report" and pod_labels["hourglass.io/run"] == str(attempt.run_id)
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "reporter"  # not the worker's job account
    assert pod["automountServiceAccountToken"] is True  # the template asked for it
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {
        "runAsUser": 3000,
        "fsGroup": 3000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["tolerations"] == TEMPLATE["spec"]["template"]["spec"]["tolerations"]
    assert pod["volumes"] == TEMPLATE["spec"]["template"]["spec"]["volumes"]
    first, sidecar = pod["containers"]
    assert task_container(job) == "report"
    env = _env(first)
    assert env["REGION"] == {"name": "REGION", "value": "from-task"}  # the task wins
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "pw"}
    assert env["HOURGLASS_FENCING_TOKEN"]["value"] == "7"
    assert "env" not in sidecar
    for container in (first, sidecar):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["runAsNonRoot"] is True
    assert first["securityContext"]["readOnlyRootFilesystem"] is True
    # The template itself is not changed by building from it.
    assert json.loads(attempt.task.kubernetes.job_template) == TEMPLATE  # type: ignore[union-attr]


def test_secret_env_suspends_the_job_and_reaches_the_first_container_by_reference() -> None:
    job = job_for(CONFIG, _attempt(secret_env={"TOKEN": "t0p"}))
    assert job["spec"]["suspend"] is True
    name = job["metadata"]["name"]
    assert job["metadata"]["annotations"][SECRET_ANNOTATION] == name
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "TOKEN"}
    assert "t0p" not in json.dumps(job)


def test_an_uploaded_binary_runs_in_the_first_container_after_hourglass_fetches_it() -> None:
    job = job_for(CONFIG, _attempt(binary=DIGEST, args=("--fast",)))
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "hourglass-fetch"
    assert fetch["command"] == ["hourglass", "fetch-binary", DIGEST, "/hourglass/bin/task"]
    url = {"secretKeyRef": {"name": job["metadata"]["name"], "key": "hourglass.binary-url"}}
    assert fetch["env"] == [{"name": "HOURGLASS_BINARY_URL", "valueFrom": url}]
    assert job["spec"]["suspend"] is True
    first = pod["containers"][0]
    assert first["image"] == "busybox:1.36"  # the template's image, not the runner's
    assert first["command"] == ["/hourglass/bin/task"] and first["args"] == ["--fast"]
    assert {"name": "hourglass-bin", "mountPath": "/hourglass/bin"} in first["volumeMounts"]
    assert {"name": "hourglass-bin", "emptyDir": {}} in pod["volumes"]
    assert {"name": "settings", "configMap": {"name": "report"}} in pod["volumes"]


def test_a_scheduled_job_without_a_template_is_owned_and_kept_by_its_history() -> None:
    job = job_for(CONFIG, _attempt(template=None, command=("true",), image="busybox:1.36"))
    assert job["metadata"]["labels"]["hourglass.io/scheduledjob"] == "reporter"
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "ttlSecondsAfterFinished" not in job["spec"]
    # The worker's job service account exists in its own namespace, not in team-a.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_a_plain_task_still_goes_to_the_workers_namespace_with_its_ttl() -> None:
    attempt = _attempt(template=None, command=("true",), image="busybox:1.36")
    plain = dataclasses.replace(
        attempt, task=Task(command=("true",), image="busybox:1.36"), namespace="anyone"
    )
    assert namespace_of(CONFIG, plain) == "hgjobs"
    job = job_for(CONFIG, plain)
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "hg-hourglass-job"
    assert "ownerReferences" not in job["metadata"]


def test_a_worker_puts_jobs_only_where_it_may_and_for_tenants_it_trusts() -> None:
    assert namespace_of(CONFIG, _attempt()) == "team-a"
    with pytest.raises(Refused, match="hourglass namespace 'mallory' may not choose"):
        job_for(CONFIG, _attempt(tenant="mallory"))
    elsewhere = KubernetesConfig(namespace="hgjobs", template_tenants=frozenset({"ops"}))
    with pytest.raises(Refused, match="does not create Jobs in namespace 'team-a'"):
        job_for(elsewhere, _attempt())


def test_the_executor_checks_the_template_again() -> None:
    bad = json.loads(json.dumps(TEMPLATE))
    bad["spec"]["template"]["spec"]["hostPID"] = True
    attempt = _attempt()
    kubernetes = KubernetesJob(
        job_template=json.dumps(bad), namespace="team-a", owner_name="r", owner_uid=UID
    )
    forged = dataclasses.replace(attempt, task=Task(command=(), kubernetes=kubernetes))
    with pytest.raises(Refused, match=r"jobTemplate\.spec\.template\.spec\.hostPID"):
        job_for(CONFIG, forged)


def test_a_long_owner_name_becomes_a_valid_label_value() -> None:
    assert label_value("reporter") == "reporter"
    long = "a" * 200
    value = label_value(long)
    assert len(value) == 63 and value.startswith("sha256-")
    assert value == label_value(long)


def test_a_local_worker_fails_a_job_template_saying_why() -> None:
    outcome = asyncio.run(LocalExecutor().execute(_attempt()))
    assert outcome.state == RunState.FAILED
    assert "only a worker with the kubernetes executor runs it" in outcome.error
