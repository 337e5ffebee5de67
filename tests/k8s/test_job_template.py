"""A ScheduledJob with a CronJob's jobTemplate, end to end against a real kube-apiserver: the
CRD validates the template with Kubernetes' own schema, the operator carries it through the
hourglass API into the store, and the Kubernetes executor makes the Job from it in the
ScheduledJob's namespace, labelled and owned by it, keeping only its history limits.

No controllers run: the test plays the Job controller (finish_job), as test_executor.py does.
A run is made with TriggerJob and taken from the store with the worker's own claim query
(rolled back: no etcd lease is needed to read what a worker would run).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from hourglass.domain import FencingToken, RunState
from hourglass.operator import job_template_schema
from hourglass.store import claims, db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_manifests import SCHEDULED_JOB_LABEL
from hourglass.workers.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from tests.k8s.conftest import KubeApiServer, finish_job
from tests.k8s.test_kubectl import kubectl  # noqa: F401  # a fixture
from tests.k8s.test_operator import (
    HourglassApi,
    RunningOperator,
    ScheduledJobs,
    _scheduled,
    wait_for,
)

pytest_plugins = ["tests.k8s.test_operator"]

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts" / "hourglass" / "crds" / "scheduledjobs.hourglass.io.yaml"

EXAMPLE = REPO / "examples" / "scheduledjob-template.yaml"


def _reporter() -> str:
    """The example, with the rest of what a CronJob's pod template carries."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(
        nodeSelector={"pool": "batch"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
        ],
        imagePullSecrets=[{"name": "registry"}],
    )
    return yaml.safe_dump(document)


REPORTER = _reporter()


def test_the_crds_job_template_schema_is_what_the_generator_makes(
    kube_apiserver: KubeApiServer,
) -> None:
    status, body = kube_apiserver.get(job_template_schema.OPENAPI_PATH)
    assert status == 200, body[:200]
    made = job_template_schema.schema(json.loads(body))
    assert job_template_schema.in_crd(yaml.safe_load(CRD.read_text())) == made, (
        "the CRD's jobTemplate schema is stale: "
        "run python -m hourglass.operator.job_template_schema"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            lambda c: c.pop("name"),
            "spec.jobTemplate.spec.template.spec.containers[0].name",
            "Required value",
        ),
        (
            lambda c: c["env"][0]["valueFrom"]["secretKeyRef"].pop("key"),
            "spec.jobTemplate.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key",
            "Required value",
        ),
        (
            lambda c: c["resources"]["limits"].update(memory="lots"),
            "spec.jobTemplate.spec.template.spec.containers[0].resources.limits.memory",
            "should match",
        ),
        (
            lambda c: c.update(imagePullPolicy="Sometimes"),
            "spec.jobTemplate.spec.template.spec.containers[0].imagePullPolicy",
            'supported values: "Always", "IfNotPresent", "Never"',
        ),
    ],
    ids=["container-name", "secret-key", "quantity", "enum"],
)
def test_kubectl_apply_refuses_a_bad_job_template_naming_the_field(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    crds: list[str],
    change: Callable[[dict[str, Any]], Any],
    field: str,
    words: str,
) -> None:
    document = yaml.safe_load(REPORTER)
    change(document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    assert refused.returncode != 0
    assert field in refused.stderr, refused.stderr
    assert words in refused.stderr, refused.stderr
    assert kubectl("get", "sj", "reporter").returncode != 0  # nothing was stored


def test_a_job_template_with_a_task_command_is_refused(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    crds: list[str],
) -> None:
    document = yaml.safe_load(REPORTER)
    document["spec"]["task"] = {"command": ["true"]}
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    assert refused.returncode != 0
    assert "with a jobTemplate, set command, image, env" in refused.stderr, refused.stderr


def _trigger_and_claim(api: HourglassApi, database_url: str, job_id: str) -> claims.QueuedRun:
    """A run of the job made now, as a worker's claim query reads it."""
    triggered = api.call("TriggerJob", pb.TriggerJobRequest(job_id=job_id)).run.id

    async def claim() -> claims.QueuedRun:
        pool = await db.open_pool(database_url)
        try:
            async with pool.connection() as conn, conn.transaction(force_rollback=True):
                queued = await claims.lock_queued(conn, limit=100, now=datetime.now(UTC))
                (run,) = [run for run in queued if str(run.id) == triggered]
                return run
        finally:
            await pool.close()

    return asyncio.run(claim())


def _jobs(api: client.ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    response: Any = client.BatchV1Api(api).list_namespaced_job(
        namespace, label_selector=selector, _preload_content=False
    )
    return list(json.loads(response.data)["items"])


def _run_attempt(
    api: client.ApiClient,
    config: KubernetesConfig,
    run: claims.QueuedRun,
    *,
    namespace: str,
    token: int,
) -> tuple[dict[str, Any], RunState]:
    """Executes the run's attempt like a worker, finishing its Job once it exists; returns the
    Job as the executor made it and the outcome."""
    attempt = AttemptContext(
        run_id=run.id,
        job_id=run.job_id,
        attempt=run.attempt,
        fencing_token=FencingToken(token),
        scheduled_at=run.scheduled_at,
        task=run.task,
        timeout=run.timeout,
        worker_id="test-worker",
        namespace=run.namespace,
    )

    async def go() -> tuple[dict[str, Any], RunState]:
        executor = KubernetesExecutor(config, api)
        execution = asyncio.create_task(executor.execute(attempt))
        selector = f"hourglass.io/run={run.id}"
        found: list[dict[str, Any]] = []
        for _ in range(200):
            found = await asyncio.to_thread(_jobs, api, namespace, selector)
            if found and not found[0]["spec"].get("suspend"):
                break
            await asyncio.sleep(0.05)
        assert found, f"no Job of run {run.id} in {namespace}"
        await asyncio.to_thread(finish_job, api, namespace, found[0]["metadata"]["name"])
        outcome = await asyncio.wait_for(execution, 30)
        return found[0], outcome.state

    return asyncio.run(go())


def test_a_job_template_becomes_the_job_in_the_scheduled_jobs_namespace(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    database_url: str,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_service_account(k8s_namespace, {"metadata": {"name": "reporter"}})
    core.create_namespaced_secret(
        k8s_namespace, {"metadata": {"name": "db-creds"}, "stringData": {"password": "s3cret"}}
    )
    applied = kubectl("apply", "-f", "-", stdin=REPORTER)
    assert applied.returncode == 0, applied.stderr
    status = wait_for("the job", _scheduled(sj, "reporter"))
    owner = sj.get("reporter")
    assert owner is not None
    uid = owner["metadata"]["uid"]

    # The worker's own namespace is another one: the Job goes to the ScheduledJob's.
    config = KubernetesConfig(
        namespace="default",
        job_namespaces=frozenset({k8s_namespace}),
        template_tenants=frozenset({k8s_namespace}),
        watch_timeout_seconds=5,
        api_retry_seconds=5.0,
    )
    names = []
    for token in (101, 102):
        run = _trigger_and_claim(hourglass_api, database_url, status["jobId"])
        assert run.task.kubernetes is not None
        assert run.task.kubernetes.owner_uid == uid
        job, state = _run_attempt(k8s_client, config, run, namespace=k8s_namespace, token=token)
        assert state == RunState.SUCCEEDED
        names.append(job["metadata"]["name"])

    metadata = job["metadata"]
    assert metadata["namespace"] == k8s_namespace
    assert metadata["labels"][SCHEDULED_JOB_LABEL] == "reporter"
    assert metadata["labels"]["hourglass.io/run"] == str(run.id)
    assert metadata["labels"]["team"] == "billing"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "hourglass.io/v1",
            "kind": "ScheduledJob",
            "name": "reporter",
            "uid": uid,
            "controller": True,
        }
    ]
    assert "ttlSecondsAfterFinished" not in job["spec"]  # the history limits keep them
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["hourglass.io/run"] == str(run.id)
    assert pod["metadata"]["labels"][SCHEDULED_JOB_LABEL] == "reporter"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "reporter"
    assert spec["nodeSelector"] == {"pool": "batch"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["volumes"][0]["configMap"]["name"] == "report-settings"
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["name"] == "report"
    assert container["volumeMounts"] == [{"name": "settings", "mountPath": "/etc/report"}]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "db-creds",
        "key": "password",
    }
    assert env["HOURGLASS_RUN_ID"]["value"] == str(run.id)
    assert env["HOURGLASS_FENCING_TOKEN"]["value"] == "102"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    # successfulJobsHistoryLimit: 1 keeps only the newer Job.
    left = _jobs(k8s_client, k8s_namespace, f"{SCHEDULED_JOB_LABEL}=reporter")
    assert [item["metadata"]["name"] for item in left] == [names[1]]
    # Nothing went to the worker's own namespace.
    assert not _jobs(k8s_client, "default", f"{SCHEDULED_JOB_LABEL}=reporter")


def test_a_worker_refuses_a_job_template_from_a_tenant_it_does_not_trust(
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    database_url: str,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
) -> None:
    document = yaml.safe_load(REPORTER)
    sj.create(document)
    status = wait_for("the job", _scheduled(sj, "reporter"))
    run = _trigger_and_claim(hourglass_api, database_url, status["jobId"])
    attempt = AttemptContext(
        run_id=run.id,
        job_id=run.job_id,
        attempt=1,
        fencing_token=FencingToken(7),
        scheduled_at=run.scheduled_at,
        task=run.task,
        timeout=None,
        worker_id="test-worker",
        namespace=run.namespace,
    )
    config = KubernetesConfig(
        namespace="default", job_namespaces=frozenset({k8s_namespace}), api_retry_seconds=1.0
    )
    outcome = asyncio.run(KubernetesExecutor(config, k8s_client).execute(attempt))
    assert outcome.state == RunState.FAILED
    assert f"hourglass namespace {run.namespace!r} may not choose" in outcome.error
    assert not _jobs(k8s_client, k8s_namespace, f"hourglass.io/run={run.id}")


def test_a_scheduled_job_without_a_template_also_runs_in_its_namespace(
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    database_url: str,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
) -> None:
    sj.create(
        {
            "apiVersion": "hourglass.io/v1",
            "kind": "ScheduledJob",
            "metadata": {"name": "plain"},
            "spec": {
                "schedule": {"every": {"interval": "1h"}},
                "task": {"image": "busybox:1.36", "command": ["true"]},
            },
        }
    )
    status = wait_for("the job", _scheduled(sj, "plain"))
    run = _trigger_and_claim(hourglass_api, database_url, status["jobId"])
    config = KubernetesConfig(
        namespace=f"hg-{uuid.uuid4().hex[:8]}",
        job_namespaces=frozenset({k8s_namespace}),
        template_tenants=frozenset({k8s_namespace}),
        service_account="hg-hourglass-job",
        watch_timeout_seconds=5,
        api_retry_seconds=5.0,
    )
    job, state = _run_attempt(k8s_client, config, run, namespace=k8s_namespace, token=5)
    assert state == RunState.SUCCEEDED
    assert job["metadata"]["labels"][SCHEDULED_JOB_LABEL] == "plain"
    assert job["metadata"]["ownerReferences"][0]["name"] == "plain"
    # The worker's job service account lives in the worker's namespace, not this one.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
