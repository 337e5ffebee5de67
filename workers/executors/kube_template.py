"""An attempt's Job when its task says how to shape it (hourglass.v1.KubernetesJob): in which
namespace, owned by which ScheduledJob, from which batch/v1 job template. Pure functions.

A job template is the user's Job: hourglass keeps everything it does not own and fills in
only
- its labels (`hourglass.io/job`, `hourglass.io/run`, `hourglass.io/attempt`,
  `hourglass.io/scheduledjob`) and annotations (the fencing token, the Secret of
  `secret_env`) on the Job and its pod;
- in the first container (the task's): the task's `env`, its `secret_env` as references to
  the attempt's Secret, the `HOURGLASS_*` variables, and for an uploaded binary the command,
  an init container that fetches it and the volume it lands in;
- `backoffLimit: 0`, `restartPolicy: Never`, the timeout as `activeDeadlineSeconds`, and
  `suspend` while the Secret is written;
- where the template leaves them unset: no service account token, no service links, and the
  restricted Pod Security profile in every container (non-root, no privilege escalation,
  every capability dropped, RuntimeDefault seccomp). What would break that profile is
  refused (hourglass.job_templates), and checked here again before the Job is made.

Which namespaces a Job may go to, and which tenants may choose one, is the worker's
configuration (KubernetesConfig.job_namespaces, .template_tenants): a template may name any
ServiceAccount, Secret or ConfigMap of its namespace, so the choice is as strong as the right
to create pods there.
"""

from __future__ import annotations

import copy
import math

from hourglass import job_templates
from hourglass.domain import KubernetesJob
from hourglass.workers.executors.base import AttemptContext
from hourglass.workers.executors.kube_config import KubernetesConfig
from hourglass.workers.executors.kube_manifests import (
    SECRET_ANNOTATION,
    Manifest,
    Refused,
    add_binary,
    container_security,
    environment,
    job_manifest,
    job_name,
    labels_of,
    needs_secret,
    own_annotations,
)

OWNER_API_VERSION = "hourglass.io/v1"
OWNER_KIND = "ScheduledJob"
TEMPLATE_FETCH_CONTAINER = "hourglass-fetch"
TEMPLATE_FIELD = "jobTemplate"


def _shaped(attempt: AttemptContext) -> KubernetesJob | None:
    kubernetes = attempt.task.kubernetes
    if kubernetes is None:
        return None
    if not (kubernetes.job_template or kubernetes.namespace or kubernetes.owner_name):
        return None
    return kubernetes


def namespace_of(config: KubernetesConfig, attempt: AttemptContext) -> str:
    """Where the attempt's Job goes; raises Refused where this worker may not put it."""
    kubernetes = _shaped(attempt)
    if kubernetes is None:
        return config.namespace
    if attempt.namespace not in config.template_tenants:
        raise Refused(
            f"jobs of hourglass namespace {attempt.namespace!r} may not choose a Kubernetes "
            "namespace, owner or job template on this worker (its template_tenants are "
            f"{sorted(config.template_tenants)})"
        )
    namespace = kubernetes.namespace or config.namespace
    if namespace != config.namespace and namespace not in config.job_namespaces:
        raise Refused(
            f"this worker does not create Jobs in namespace {namespace!r}: it may in "
            f"{sorted({config.namespace, *config.job_namespaces})} (its job_namespaces)"
        )
    return namespace


def owner_reference(kubernetes: KubernetesJob) -> Manifest:
    """The ScheduledJob as the Job's controller: `kubectl get job` shows who made it, and the
    garbage collector deletes the Job with it. No blockOwnerDeletion: that would need the
    right to set the ScheduledJob's finalizers."""
    return {
        "apiVersion": OWNER_API_VERSION,
        "kind": OWNER_KIND,
        "name": kubernetes.owner_name,
        "uid": kubernetes.owner_uid,
        "controller": True,
    }


def job_for(config: KubernetesConfig, attempt: AttemptContext) -> Manifest:
    """The batch/v1 Job for an attempt, shaped by its task's kubernetes part when it has one;
    raises Refused for a task that cannot run here."""
    namespace = namespace_of(config, attempt)
    kubernetes = _shaped(attempt)
    if kubernetes is not None and kubernetes.job_template:
        manifest = _from_template(config, attempt, kubernetes.job_template)
    else:
        manifest = job_manifest(config, attempt)
        if kubernetes is not None and kubernetes.owner_name:
            # The history limits keep a ScheduledJob's finished Jobs, not a TTL.
            manifest["spec"].pop("ttlSecondsAfterFinished", None)
        if namespace != config.namespace:
            # The chart makes the jobs' service account in the worker's namespace only; in
            # the ScheduledJob's, the pod gets that namespace's default, as a CronJob's does.
            manifest["spec"]["template"]["spec"].pop("serviceAccountName", None)
    if kubernetes is not None and kubernetes.owner_name:
        manifest["metadata"]["ownerReferences"] = [owner_reference(kubernetes)]
    return manifest


def _secured(container: Manifest) -> None:
    security = container.setdefault("securityContext", {})
    for key, value in container_security().items():
        security.setdefault(key, value)
    security["capabilities"].setdefault("drop", ["ALL"])


def _from_template(config: KubernetesConfig, attempt: AttemptContext, text: str) -> Manifest:
    try:
        template = job_templates.parse(text, TEMPLATE_FIELD)
    except job_templates.TemplateError as error:
        raise Refused(f"job template refused: {error}") from None
    template = copy.deepcopy(template)
    name = job_name(config.job_name_prefix, attempt)
    labels = labels_of(attempt)
    spec: Manifest = template["spec"]
    pod_template: Manifest = spec["template"]
    pod: Manifest = pod_template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    pod.setdefault("automountServiceAccountToken", False)
    pod.setdefault("enableServiceLinks", False)
    security = pod.setdefault("securityContext", {})
    security.setdefault("runAsNonRoot", True)
    security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    if "runAsUser" not in security:
        security["runAsUser"] = config.run_as_user
        security.setdefault("runAsGroup", config.run_as_user)
    container: Manifest = pod["containers"][0]
    container["env"] = environment(attempt, name, container.get("env"))
    if attempt.task.binary:
        container.setdefault("image", config.runner_image)
        if attempt.task.args:
            container["args"] = list(attempt.task.args)
        add_binary(
            config,
            attempt,
            pod=pod,
            container=container,
            fetch=TEMPLATE_FETCH_CONTAINER,
            secret=name,
        )
    for kind in ("initContainers", "containers"):
        for each in pod.get(kind) or ():
            _secured(each)
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    spec["backoffLimit"] = 0
    kubernetes = attempt.task.kubernetes
    if not (kubernetes and kubernetes.owner_name):
        spec.setdefault("ttlSecondsAfterFinished", config.ttl_seconds_after_finished)
    if attempt.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.timeout.total_seconds()))
    meta = template.get("metadata") or {}
    annotations = {**(meta.get("annotations") or {}), **own_annotations(attempt)}
    if needs_secret(attempt):
        spec["suspend"] = True
        annotations[SECRET_ANNOTATION] = name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {**(meta.get("labels") or {}), **labels},
            "annotations": annotations,
        },
        "spec": spec,
    }
