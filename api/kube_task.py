"""Checks a task's `kubernetes` part (hourglass.v1.KubernetesJob): the job template, where
the Job goes and who owns it. Raises job_templates.TemplateError, which validation turns
into INVALID_ARGUMENT naming the field.

With a job template, the template's first container is the task's container: its image,
command, args, working directory and resources are the template's, and the task may only add
`env`, `secret_env` and an uploaded `binary` (with its `args`), which hourglass fills in.
"""

from __future__ import annotations

import re

from hourglass import job_templates
from hourglass.domain import KubernetesJob
from hourglass.job_templates import TemplateError
from hourglass.v1 import scheduler_pb2 as pb

MAX_HISTORY = 1000
MAX_UID = 128
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_UID = re.compile(r"[-0-9a-zA-Z]+")


def kubernetes(task: pb.Task, field: str) -> KubernetesJob:
    """The domain value of `task.kubernetes`; `field` is the task's path."""
    message = task.kubernetes
    where = f"{field}.kubernetes"
    text = ""
    if message.job_template:
        template = job_templates.parse(message.job_template, f"{where}.job_template")
        text = job_templates.canonical(template)
        for name in ("image", "working_dir", "command"):
            if getattr(task, name):
                raise TemplateError(
                    f"{field}.{name}",
                    "must be empty with a job template: set it in its first container",
                )
        if task.HasField("resources") and any(
            getattr(task.resources, name)
            for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
        ):
            raise TemplateError(
                f"{field}.resources",
                "must be empty with a job template: set resources in its first container",
            )
        if task.args and not task.binary:
            raise TemplateError(
                f"{field}.args", "must be empty with a job template unless a binary runs"
            )
        container = job_templates.task_container(template)
        if not task.binary and not str(container.get("image") or "").strip():
            raise TemplateError(
                f"{where}.job_template.spec.template.spec.containers[0].image",
                "is required: the task runs in the first container",
            )
    namespace = message.namespace
    if namespace and (len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace)):
        raise TemplateError(f"{where}.namespace", f"{namespace[:64]!r} is not a namespace name")
    owner = message.owner_name
    if owner and (len(owner) > 253 or not _DNS_SUBDOMAIN.fullmatch(owner)):
        raise TemplateError(f"{where}.owner_name", f"{owner[:64]!r} is not a resource name")
    uid = message.owner_uid
    if bool(owner) != bool(uid):
        raise TemplateError(f"{where}.owner_uid", "owner_name and owner_uid go together")
    if uid and (len(uid) > MAX_UID or not _UID.fullmatch(uid)):
        raise TemplateError(f"{where}.owner_uid", "is not a Kubernetes uid")
    limits: dict[str, int | None] = {}
    for name in ("successful_jobs_history_limit", "failed_jobs_history_limit"):
        value = getattr(message, name) if message.HasField(name) else None
        if value is not None and not 0 <= value <= MAX_HISTORY:
            raise TemplateError(f"{where}.{name}", f"must be between 0 and {MAX_HISTORY}")
        limits[name] = value
    return KubernetesJob(
        job_template=text,
        namespace=namespace,
        owner_name=owner,
        owner_uid=uid,
        successful_jobs_history_limit=limits["successful_jobs_history_limit"],
        failed_jobs_history_limit=limits["failed_jobs_history_limit"],
    )


def to_pb(value: KubernetesJob) -> pb.KubernetesJob:
    return pb.KubernetesJob(
        job_template=value.job_template,
        namespace=value.namespace,
        owner_name=value.owner_name,
        owner_uid=value.owner_uid,
        successful_jobs_history_limit=value.successful_jobs_history_limit,
        failed_jobs_history_limit=value.failed_jobs_history_limit,
    )
