"""The objects the Kubernetes executor creates, as plain data: an attempt's Job and the Secret
that carries its `secret_env`. Pure functions, so what a job pod may do is decided here and
checked by unit tests that need no server.

A job's code is untrusted: another tenant may have written it. Its pod therefore
- runs under the jobs' own service account (`service_account`, which the chart creates with
  no Role bound to it) and mounts no token (`automountServiceAccountToken: false`), so it
  cannot call the Kubernetes API as anyone;
- gets no hourglass credential: its environment is its task's `env`, its `secret_env` (by
  reference to a Secret of its own, never as text in the Job), and the HOURGLASS_* ids of the
  attempt; nothing of the worker's own environment is copied, and service links are off, so
  not even the addresses of the namespace's Services are announced to it;
- meets the restricted Pod Security profile (non-root user, no privilege escalation, every
  capability dropped, the runtime's default seccomp profile), in every container, including
  the init container that fetches a binary;
- fetches an uploaded binary without the artifact store's credentials (they read every
  tenant's binaries): the init container alone gets a URL signed by the worker for exactly
  that digest, for a short while (hourglass/artifact_urls.py), from the attempt's Secret.

The NetworkPolicies that keep job pods away from PostgreSQL, etcd and the API are the chart's
(charts/hourglass/templates/networkpolicy.yaml); they select job pods by RUN_LABEL.

A Job with a `secret_env` or a binary is created suspended: no pod can start before its
Secret exists.
The executor then creates the Secret, owned by the Job (an ownerReference to the Job's uid, so
the garbage collector deletes it with the Job), and resumes the Job. A worker that dies in
between leaves a suspended Job that the next holder adopts, completing the same two steps.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

from hourglass.artifact_urls import can_sign
from hourglass.artifacts import parse_digest
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_config import KubernetesConfig

JOB_LABEL = "hourglass.io/job"
# The ScheduledJob that owns a Job (with an ownerReference): what `kubectl get jobs -l` and
# the history limits select by.
SCHEDULED_JOB_LABEL = "hourglass.io/scheduledjob"
RUN_LABEL = "hourglass.io/run"
ATTEMPT_LABEL = "hourglass.io/attempt"
TOKEN_ANNOTATION = "hourglass.io/fencing-token"
# The nominal time of the attempt's fire (HOURGLASS_SCHEDULED_AT): orders a ScheduledJob's
# Jobs when they finished within the same second (kube_history).
SCHEDULED_AT_ANNOTATION = "hourglass.io/scheduled-at"
# Set on a Job once an attempt has reported its outcome; such a Job is never adopted.
REPORTED_ANNOTATION = "hourglass.io/reported-by-attempt"
# Set on a Job whose pod reads a Secret (named in the value): the Job is created suspended and
# resumed only once that Secret exists. Only such Jobs are ever resumed by the executor.
SECRET_ANNOTATION = "hourglass.io/secret-env"

TASK_CONTAINER = "task"
FETCH_CONTAINER = "fetch"
BIN_VOLUME = "hourglass-bin"
BIN_DIR = "/hourglass/bin"
BIN_PATH = f"{BIN_DIR}/task"
# What a Secret's data key may be.
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
# The key of the attempt's Secret holding the binary's signed URL (HOURGLASS_BINARY_URL of the
# init container only); a secret_env variable of that name gets a digest key instead.
BINARY_URL_KEY = "hourglass.binary-url"

Manifest = dict[str, Any]


class Refused(Exception):
    """The attempt cannot run, for a reason the error text gives; becomes a FAILED outcome."""


def job_name(prefix: str, attempt: AttemptContext) -> str:
    """The Job of an attempt: deterministic, so that a retried create finds its own Job."""
    return f"{prefix}-{attempt.run_id}-{attempt.attempt}"


def secret_key(variable: str) -> str:
    """The Secret data key holding `variable`: the name itself where Kubernetes allows it as a
    key, else a digest of it (env names may hold any character but '=' and NUL). The same for
    every holder of the run, so an adopter finds the keys the Job refers to."""
    if _SECRET_KEY.fullmatch(variable) and variable != BINARY_URL_KEY:
        return variable
    return "sha256-" + hashlib.sha256(variable.encode()).hexdigest()


def secret_env(attempt: AttemptContext) -> dict[str, str]:
    """The attempt's secret variables, without those that hourglass's own variables override."""
    own = attempt.environment()
    return {name: value for name, value in attempt.task.secret_env.items() if name not in own}


def needs_secret(attempt: AttemptContext) -> bool:
    """Whether the attempt's pod reads a Secret of its own: for its secret_env, or for the
    signed URL of its binary."""
    return bool(secret_env(attempt)) or bool(attempt.task.binary)


def container_security() -> Manifest:
    """The securityContext of every container of a job pod: the restricted profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(config: KubernetesConfig) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def environment(
    attempt: AttemptContext, secret: str, base: list[Manifest] | None = None
) -> list[Manifest]:
    """The task container's env: `base` (a job template's own variables), the task's plain
    variables as values, its secret ones as references to `secret`, then hourglass's own
    variables; each wins over those before it, which are left out."""
    own = attempt.environment()
    secrets = secret_env(attempt)
    later = {*own, *secrets, *attempt.task.env}
    env: list[Manifest] = [item for item in base or () if item.get("name") not in later]
    env.extend(
        {"name": name, "value": value}
        for name, value in attempt.task.env.items()
        if name not in own and name not in secrets
    )
    env.extend(
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key(name)}}}
        for name in secrets
    )
    env.extend({"name": name, "value": value} for name, value in own.items())
    return env


def add_binary(
    config: KubernetesConfig,
    attempt: AttemptContext,
    *,
    pod: Manifest,
    container: Manifest,
    fetch: str,
    secret: str,
) -> None:
    """Makes `container` run the task's uploaded binary, which an init container named
    `fetch` (in the runner image) puts into a volume of the pod first. It fetches the binary
    from the URL signed for it, which it alone reads from the Secret `secret`."""
    binary = attempt.task.binary
    try:
        digest = parse_digest(binary)
    except ValueError as exc:
        raise Refused(f"binary {binary!r} not run: {exc}") from None
    if not config.artifacts_url:
        raise Refused(
            f"binary {digest} not run: this worker has no artifact store configured (artifacts_url)"
        )
    if not can_sign(config.artifacts_url):
        raise Refused(
            f"binary {digest} not run: a job pod fetches its binary through a signed URL, "
            "which only an s3:// artifact store gives (this worker's is a folder, which no "
            "pod can read)"
        )
    mount = {"name": BIN_VOLUME, "mountPath": BIN_DIR}
    container["command"] = [BIN_PATH]
    container["volumeMounts"] = [*container.get("volumeMounts", ()), mount]
    url = {"secretKeyRef": {"name": secret, "key": BINARY_URL_KEY}}
    fetcher = {
        "name": fetch,
        "image": config.runner_image,
        "command": ["hourglass", "fetch-binary", digest, BIN_PATH],
        "env": [{"name": "HOURGLASS_BINARY_URL", "valueFrom": url}],
        "volumeMounts": [mount],
        "securityContext": container_security(),
    }
    pod["initContainers"] = [fetcher, *pod.get("initContainers", ())]
    pod["volumes"] = [*pod.get("volumes", ()), {"name": BIN_VOLUME, "emptyDir": {}}]


def own_annotations(attempt: AttemptContext) -> dict[str, str]:
    return {
        TOKEN_ANNOTATION: str(attempt.fencing_token),
        SCHEDULED_AT_ANNOTATION: attempt.environment()["HOURGLASS_SCHEDULED_AT"],
    }


def labels_of(attempt: AttemptContext) -> dict[str, str]:
    """hourglass's labels of an attempt's Job and pod."""
    labels = {
        JOB_LABEL: str(attempt.job_id),
        RUN_LABEL: str(attempt.run_id),
        ATTEMPT_LABEL: str(attempt.attempt),
    }
    kubernetes = attempt.task.kubernetes
    if kubernetes is not None and kubernetes.owner_name:
        labels[SCHEDULED_JOB_LABEL] = label_value(kubernetes.owner_name)
    return labels


def label_value(name: str) -> str:
    """A resource name as a label value: itself when it fits in 63 characters, else a digest."""
    if len(name) <= 63:
        return name
    return "sha256-" + hashlib.sha256(name.encode()).hexdigest()[:56]


def task_container(job: Manifest) -> str:
    """The name of the container whose exit code and log are the attempt's: the first."""
    containers = job["spec"]["template"]["spec"].get("containers") or [{}]
    return str(containers[0].get("name") or TASK_CONTAINER)


def job_manifest(config: KubernetesConfig, attempt: AttemptContext) -> Manifest:
    """The batch/v1 Job for an attempt; raises Refused for a task that cannot run here."""
    task = attempt.task
    name = job_name(config.job_name_prefix, attempt)
    labels = labels_of(attempt)
    container: Manifest = {
        "name": TASK_CONTAINER,
        "env": environment(attempt, name),
        "securityContext": container_security(),
    }
    pod: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(config),
        "containers": [container],
    }
    if task.binary:
        container["image"] = config.runner_image
        add_binary(
            config, attempt, pod=pod, container=container, fetch=FETCH_CONTAINER, secret=name
        )
    else:
        if not task.image:
            raise Refused(
                "the task has no container image: the Kubernetes executor runs a command "
                "only in an image (set the task's image) or an uploaded binary"
            )
        container["image"] = task.image
        if task.command:
            container["command"] = list(task.command)
    if task.args:
        container["args"] = list(task.args)
    if task.working_dir:
        container["workingDir"] = task.working_dir
    resources = _resources(attempt)
    if resources:
        container["resources"] = resources
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    spec: Manifest = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    if attempt.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.timeout.total_seconds()))
    annotations = own_annotations(attempt)
    if needs_secret(attempt):
        spec["suspend"] = True
        annotations[SECRET_ANNOTATION] = name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def secret_manifest(job: Manifest, attempt: AttemptContext, *, binary_url: str = "") -> Manifest:
    """The Secret holding `attempt`'s secret_env, and the signed URL of its binary, for `job`
    (as the API server returned it: its uid is the owner): named as the Job names it,
    immutable, deleted with the Job."""
    metadata = job["metadata"]
    name = (metadata.get("annotations") or {}).get(SECRET_ANNOTATION) or metadata["name"]
    values = {secret_key(variable): value for variable, value in secret_env(attempt).items()}
    if binary_url:
        values[BINARY_URL_KEY] = binary_url
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {
                key: value
                for key, value in (metadata.get("labels") or {}).items()
                if key in (JOB_LABEL, RUN_LABEL, ATTEMPT_LABEL)
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "type": "Opaque",
        "immutable": True,
        "data": data,
    }


def secret_of(job: Manifest) -> str:
    """The name of the Secret a Job's pod reads its secret_env from; '' if it reads none."""
    return str((job["metadata"].get("annotations") or {}).get(SECRET_ANNOTATION) or "")


def waits_for_secret(job: Manifest) -> str:
    """The Secret a suspended Job of ours waits for before it may be resumed; '' for any other
    Job (a Job suspended by someone else, e.g. a queueing controller, is left alone)."""
    if not (job.get("spec") or {}).get("suspend"):
        return ""
    return secret_of(job)


def _resources(attempt: AttemptContext) -> Manifest:
    wanted = attempt.task.resources
    requests = {
        key: value
        for key, value in (("cpu", wanted.cpu_request), ("memory", wanted.memory_request))
        if value
    }
    limits = {
        key: value
        for key, value in (("cpu", wanted.cpu_limit), ("memory", wanted.memory_limit))
        if value
    }
    resources: Manifest = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources
