"""Which job templates hourglass runs (hourglass.job_templates) and how the API refuses the
others: INVALID_ARGUMENT naming the field, before anything is stored. No server needed."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from hourglass import job_templates
from hourglass.api import validation
from hourglass.v1 import scheduler_pb2 as pb

NOW = datetime(2026, 11, 30, tzinfo=UTC)
FIELD = "spec.task.kubernetes.job_template"
POD = f"{FIELD}.spec.template.spec"
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "billing"}},
    "spec": {
        "template": {
            "spec": {
                "serviceAccountName": "reporter",
                "containers": [
                    {
                        "name": "report",
                        "image": "busybox:1.36",
                        "env": [
                            {
                                "name": "DB_PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}},
                            }
                        ],
                        "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
                    }
                ],
                "volumes": [{"name": "settings", "configMap": {"name": "report"}}],
            }
        }
    },
}


def _spec(template: Any, **task: Any) -> pb.JobSpec:
    return pb.JobSpec(
        name="reporter",
        task=pb.Task(
            kubernetes=pb.KubernetesJob(
                job_template=json.dumps(template),
                namespace="team-a",
                owner_name="reporter",
                owner_uid="0b6e2f6c-7c1c-4a53-9a55-3d2b7f1e5b11",
                successful_jobs_history_limit=2,
            ),
            **task,
        ),
        schedule=pb.Schedule(cron=pb.Cron(expression="0 * * * *")),
    )


def test_a_cronjob_shaped_template_is_accepted_and_kept_canonical() -> None:
    spec = validation.job_spec(_spec(TEMPLATE, env={"REGION": "eu"}), now=NOW)
    kubernetes = spec.task.kubernetes
    assert kubernetes is not None
    assert json.loads(kubernetes.job_template) == TEMPLATE
    assert kubernetes.job_template == job_templates.canonical(TEMPLATE)
    assert (kubernetes.namespace, kubernetes.owner_name) == ("team-a", "reporter")
    assert kubernetes.successful_jobs_history_limit == 2
    assert kubernetes.failed_jobs_history_limit is None
    assert spec.task.command == ()


def _changed(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    template = copy.deepcopy(TEMPLATE)
    change(template)
    return template


def _pod(template: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = template["spec"]["template"]["spec"]
    return pod


def _first(template: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(template)["containers"][0]
    return container


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda t: _pod(t).update(hostNetwork=True), f"{POD}.hostNetwork", "must not be true"),
        (
            lambda t: _pod(t)["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
            f"{POD}.volumes[1].hostPath",
            "only configMap",
        ),
        (
            lambda t: _first(t)["securityContext"].update(privileged=True),
            f"{POD}.containers[0].securityContext.privileged",
            "must not be true",
        ),
        (
            lambda t: _first(t)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN"),
            f"{POD}.containers[0].securityContext.capabilities.add[1]",
            "'SYS_ADMIN' may not be added",
        ),
        (
            lambda t: _pod(t).update(securityContext={"runAsUser": 0}),
            f"{POD}.securityContext.runAsUser",
            "never run as root",
        ),
        (
            lambda t: _first(t).update(ports=[{"containerPort": 80, "hostPort": 80}]),
            f"{POD}.containers[0].ports[0].hostPort",
            "must not be set",
        ),
        (
            lambda t: _pod(t).update(restartPolicy="OnFailure"),
            f"{POD}.restartPolicy",
            "hourglass owns retries",
        ),
        (lambda t: t["spec"].update(backoffLimit=6), f"{FIELD}.spec.backoffLimit", "maxAttempts"),
        (
            lambda t: t["spec"].update(activeDeadlineSeconds=60),
            f"{FIELD}.spec.activeDeadlineSeconds",
            "timeout",
        ),
        (lambda t: t["spec"].update(suspend=True), f"{FIELD}.spec.suspend", "must not be set"),
        (lambda t: t["spec"].update(parallelism=3), f"{FIELD}.spec.parallelism", "one pod"),
        (
            lambda t: t["metadata"]["labels"].update({"hourglass.io/run": "x"}),
            f"{FIELD}.metadata.labels['hourglass.io/run']",
            "hourglass's own",
        ),
        (
            lambda t: _first(t)["env"].append({"name": "HOURGLASS_RUN_ID", "value": "x"}),
            f"{POD}.containers[0].env[1].name",
            "hourglass's own",
        ),
        (
            lambda t: _pod(t)["volumes"].append({"name": "hourglass-bin", "emptyDir": {}}),
            f"{POD}.volumes[1].name",
            "hourglass's own",
        ),
        (lambda t: _pod(t).update(containers=[]), f"{POD}.containers", "is required"),
        (lambda t: _first(t).pop("image"), f"{POD}.containers[0].image", "is required"),
        (lambda t: t.update(kind="Job"), f"{FIELD}.kind", "unknown field"),
    ],
)
def test_a_template_hourglass_does_not_run_is_refused_naming_the_field(
    change: Callable[[dict[str, Any]], Any], field: str, words: str
) -> None:
    with pytest.raises(validation.Invalid) as refused:
        validation.job_spec(_spec(_changed(change)), now=NOW)
    assert refused.value.field == field
    assert words in refused.value.reason


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"command": ["true"]}, "spec.task.command"),
        ({"image": "busybox"}, "spec.task.image"),
        ({"args": ["x"]}, "spec.task.args"),
        ({"resources": pb.Resources(cpu_limit="1")}, "spec.task.resources"),
    ],
)
def test_what_the_template_sets_is_refused_in_the_task(task: dict[str, Any], field: str) -> None:
    with pytest.raises(validation.Invalid) as refused:
        validation.job_spec(_spec(TEMPLATE, **task), now=NOW)
    assert refused.value.field == field
    assert "first container" in refused.value.reason or "binary" in refused.value.reason


def test_a_template_too_long_or_not_json_is_refused() -> None:
    huge = _changed(lambda t: t["metadata"]["labels"].update(big="x" * job_templates.MAX_BYTES))
    with pytest.raises(validation.Invalid, match="longer than 256 KiB"):
        validation.job_spec(_spec(huge), now=NOW)
    message = _spec(TEMPLATE)
    message.task.kubernetes.job_template = "{not json"
    with pytest.raises(validation.Invalid, match="is not JSON") as refused:
        validation.job_spec(message, now=NOW)
    assert refused.value.field == FIELD


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda k: setattr(k, "namespace", "Team_A"), "spec.task.kubernetes.namespace"),
        (lambda k: setattr(k, "owner_uid", ""), "spec.task.kubernetes.owner_uid"),
        (lambda k: setattr(k, "owner_name", "a/b"), "spec.task.kubernetes.owner_name"),
        (
            lambda k: setattr(k, "failed_jobs_history_limit", -1),
            "spec.task.kubernetes.failed_jobs_history_limit",
        ),
    ],
)
def test_where_the_job_goes_is_checked(
    change: Callable[[pb.KubernetesJob], Any], field: str
) -> None:
    message = _spec(TEMPLATE)
    change(message.task.kubernetes)
    with pytest.raises(validation.Invalid) as refused:
        validation.job_spec(message, now=NOW)
    assert refused.value.field == field


def test_a_task_without_a_command_still_needs_one_without_a_template() -> None:
    message = pb.JobSpec(
        name="plain",
        task=pb.Task(kubernetes=pb.KubernetesJob(namespace="team-a")),
        schedule=pb.Schedule(cron=pb.Cron(expression="0 * * * *")),
    )
    with pytest.raises(validation.Invalid) as refused:
        validation.job_spec(message, now=NOW)
    assert refused.value.field == "spec.task.command"
