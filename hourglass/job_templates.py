"""Which batch/v1 job templates hourglass accepts: plain decisions on plain data, shared by the
API (which refuses a bad template before anything is stored) and the Kubernetes executor
(which checks again before it creates a Job, since a row may predate a rule).

The CRD's schema (Kubernetes' own JobTemplateSpec) already judges types and required fields
of a ScheduledJob; these rules add what hourglass owns and what a tenant's untrusted code may
not have:
- hourglass owns retries, timeouts, suspension and the Job's selection: `backoffLimit`
  other than 0, `backoffLimitPerIndex`, `podFailurePolicy`, `successPolicy`,
  `activeDeadlineSeconds` (use the job's timeout), `suspend`, `selector`, `manualSelector`,
  `managedBy`, more than one completion or pod at once, and a `restartPolicy` other than
  Never are refused; so are labels and annotations under `hourglass.io/`, names starting
  with `hourglass-` (the init container and volume of an uploaded binary) and `HOURGLASS_*`
  variables;
- the pod must keep to the restricted Pod Security profile, whatever the namespace enforces:
  no privileged container, no privilege escalation, no added capability but
  NET_BIND_SERVICE, no root user, no Unconfined seccomp or AppArmor profile, no host
  namespaces, ports or paths, and only the volume types that profile allows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# A job template as JSON may be at most this long (a CronJob's whole object must stay under
# etcd's 1.5 MiB; a template is rarely above a few KiB).
MAX_BYTES = 256 * 1024
OWNED_PREFIX = "hourglass.io/"
OWNED_NAME_PREFIX = "hourglass-"
OWNED_ENV_PREFIX = "HOURGLASS_"
# The volume types the restricted Pod Security profile allows.
VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
_JOB_OWNED = {
    "suspend": "hourglass suspends a Job itself while its secrets are written",
    "activeDeadlineSeconds": "set the job's timeout instead",
    "backoffLimitPerIndex": "hourglass owns retries: set maxAttempts instead",
    "maxFailedIndexes": "hourglass owns retries: set maxAttempts instead",
    "podFailurePolicy": "hourglass owns retries: set maxAttempts instead",
    "successPolicy": "hourglass judges an attempt by its one pod",
    "selector": "hourglass selects a Job's pods by its own labels",
    "manualSelector": "hourglass selects a Job's pods by its own labels",
    "managedBy": "the Job controller must run hourglass's Jobs",
}
_POD_HOST = ("hostNetwork", "hostPID", "hostIPC")
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class TemplateError(ValueError):
    """A refused template; `field` is the path of the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def canonical(template: Mapping[str, Any]) -> str:
    """One spelling per template: equal templates give equal text."""
    return json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse(text: str, field: str) -> dict[str, Any]:
    """The template that `text` holds, checked; raises TemplateError."""
    if len(text.encode()) > MAX_BYTES:
        raise TemplateError(field, f"is longer than {MAX_BYTES // 1024} KiB")
    try:
        template = json.loads(text)
    except ValueError as exc:
        raise TemplateError(field, f"is not JSON: {exc}") from None
    check(template, field)
    return dict(template)


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TemplateError(field, "must be an object")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TemplateError(field, "must be a list")
    return value


def _metadata(value: Any, field: str) -> None:
    metadata = _object(value, field)
    extra = sorted(set(metadata) - {"labels", "annotations"})
    if extra:
        raise TemplateError(f"{field}.{extra[0]}", "only labels and annotations may be set")
    for kind in ("labels", "annotations"):
        for key, item in _object(metadata.get(kind), f"{field}.{kind}").items():
            if str(key).startswith(OWNED_PREFIX):
                raise TemplateError(
                    f"{field}.{kind}[{key!r}]", f"keys under {OWNED_PREFIX} are hourglass's own"
                )
            if not isinstance(item, str):
                raise TemplateError(f"{field}.{kind}[{key!r}]", "must be a string")


def _job_spec(spec: Mapping[str, Any], field: str) -> None:
    for name, why in _JOB_OWNED.items():
        if name in spec and spec[name] not in (None, False):
            raise TemplateError(f"{field}.{name}", f"must not be set: {why}")
    if spec.get("backoffLimit") not in (None, 0):
        raise TemplateError(
            f"{field}.backoffLimit", "must be 0 or unset: hourglass owns retries (maxAttempts)"
        )
    for name in ("completions", "parallelism"):
        if spec.get(name) not in (None, 1):
            raise TemplateError(
                f"{field}.{name}", "must be 1 or unset: an attempt is one pod run to its end"
            )
    if spec.get("completionMode") not in (None, "NonIndexed"):
        raise TemplateError(f"{field}.completionMode", "must be NonIndexed or unset")


def _security(context: Any, field: str, *, pod: bool) -> None:
    security = _object(context, field)
    if security.get("runAsNonRoot") is False:
        raise TemplateError(
            f"{field}.runAsNonRoot", "must not be false: job pods never run as root"
        )
    if security.get("runAsUser") == 0:
        raise TemplateError(f"{field}.runAsUser", "must not be 0: job pods never run as root")
    seccomp = _object(security.get("seccompProfile"), f"{field}.seccompProfile")
    if seccomp.get("type") == "Unconfined":
        raise TemplateError(f"{field}.seccompProfile.type", "must not be Unconfined")
    apparmor = _object(security.get("appArmorProfile"), f"{field}.appArmorProfile")
    if apparmor.get("type") == "Unconfined":
        raise TemplateError(f"{field}.appArmorProfile.type", "must not be Unconfined")
    windows = _object(security.get("windowsOptions"), f"{field}.windowsOptions")
    if windows.get("hostProcess"):
        raise TemplateError(f"{field}.windowsOptions.hostProcess", "must not be true")
    if pod:
        return
    if security.get("privileged"):
        raise TemplateError(f"{field}.privileged", "must not be true")
    if security.get("allowPrivilegeEscalation"):
        raise TemplateError(f"{field}.allowPrivilegeEscalation", "must not be true")
    if security.get("procMount") not in (None, "Default"):
        raise TemplateError(f"{field}.procMount", "must be Default or unset")
    capabilities = _object(security.get("capabilities"), f"{field}.capabilities")
    for index, added in enumerate(_list(capabilities.get("add"), f"{field}.capabilities.add")):
        if added != "NET_BIND_SERVICE":
            raise TemplateError(
                f"{field}.capabilities.add[{index}]",
                f"{str(added)[:32]!r} may not be added; only NET_BIND_SERVICE may",
            )


def _container(container: Any, field: str) -> None:
    spec = _object(container, field)
    name = str(spec.get("name", ""))
    if name.startswith(OWNED_NAME_PREFIX):
        raise TemplateError(
            f"{field}.name", f"names starting with {OWNED_NAME_PREFIX} are hourglass's own"
        )
    _security(spec.get("securityContext"), f"{field}.securityContext", pod=False)
    for index, port in enumerate(_list(spec.get("ports"), f"{field}.ports")):
        if _object(port, f"{field}.ports[{index}]").get("hostPort"):
            raise TemplateError(f"{field}.ports[{index}].hostPort", "must not be set")
    for index, variable in enumerate(_list(spec.get("env"), f"{field}.env")):
        if str(_object(variable, f"{field}.env[{index}]").get("name", "")).startswith(
            OWNED_ENV_PREFIX
        ):
            raise TemplateError(
                f"{field}.env[{index}].name", f"{OWNED_ENV_PREFIX}* variables are hourglass's own"
            )


def _pod(template: Mapping[str, Any], field: str) -> None:
    _metadata(template.get("metadata"), f"{field}.metadata")
    pod = _object(template.get("spec"), f"{field}.spec")
    where = f"{field}.spec"
    if pod.get("restartPolicy") not in (None, "Never"):
        raise TemplateError(
            f"{where}.restartPolicy", "must be Never or unset: hourglass owns retries (maxAttempts)"
        )
    for name in _POD_HOST:
        if pod.get(name):
            raise TemplateError(f"{where}.{name}", "must not be true")
    _security(pod.get("securityContext"), f"{where}.securityContext", pod=True)
    if not _list(pod.get("containers"), f"{where}.containers"):
        raise TemplateError(f"{where}.containers", "is required: give at least one container")
    for kind in _CONTAINER_LISTS:
        for index, container in enumerate(_list(pod.get(kind), f"{where}.{kind}")):
            _container(container, f"{where}.{kind}[{index}]")
    for index, volume in enumerate(_list(pod.get("volumes"), f"{where}.volumes")):
        volume = _object(volume, f"{where}.volumes[{index}]")
        if str(volume.get("name", "")).startswith(OWNED_NAME_PREFIX):
            raise TemplateError(
                f"{where}.volumes[{index}].name",
                f"names starting with {OWNED_NAME_PREFIX} are hourglass's own",
            )
        for kind in sorted(set(volume) - {"name"}):
            if kind not in VOLUME_TYPES:
                raise TemplateError(
                    f"{where}.volumes[{index}].{kind}",
                    f"is not allowed: only {', '.join(VOLUME_TYPES)} volumes may be used "
                    "(the restricted Pod Security profile)",
                )


def check(template: Any, field: str) -> None:
    """Raises TemplateError for a template hourglass does not run."""
    if not isinstance(template, Mapping):
        raise TemplateError(field, "must be an object (a batch/v1 JobTemplateSpec)")
    extra = sorted(set(template) - {"metadata", "spec"})
    if extra:
        raise TemplateError(
            f"{field}.{extra[0]}", "unknown field: a JobTemplateSpec has metadata and spec"
        )
    _metadata(template.get("metadata"), f"{field}.metadata")
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{field}.spec", "is required: give at least spec.template")
    _job_spec(spec, f"{field}.spec")
    pod_template = spec.get("template")
    if not isinstance(pod_template, Mapping):
        raise TemplateError(f"{field}.spec.template", "is required: the pod to run")
    _pod(pod_template, f"{field}.spec.template")


def task_container(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The container that runs the task: the template's first (a checked template has one)."""
    containers: list[Mapping[str, Any]] = template["spec"]["template"]["spec"]["containers"]
    return containers[0]
