"""The Kubernetes executor's settings (`hourglass worker --executor kubernetes`), checked as
they are made.

Every part of the executor reads them (the manifests, the choice of template and namespace,
the API calls' timeouts) and the command line builds them, so they live apart from any one of
those; a bad value fails at startup with a message naming it, never at the first attempt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_BINARY_URL_SECONDS", "MAX_ID", "MAX_PREFIX", "RUNNER_UID", "KubernetesConfig"]

# The runner image's user (Dockerfile: HOURGLASS_UID).
RUNNER_UID = 10001

# A run id is a 36-character UUID and an attempt number rarely has more than 5 digits; a Job
# name (copied into its pods' labels) must stay within 63 characters.
MAX_PREFIX = 63 - 1 - 36 - 1 - 5
MAX_ID = 2**31 - 1
MAX_BINARY_URL_SECONDS = 7 * 24 * 3600

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    # Where the Jobs go.
    namespace: str = "default"
    # The image that runs uploaded binaries (and fetches them in the init container); it
    # must hold the `hourglass` command.
    runner_image: str = "hourglass:latest"
    # The artifact store binaries are fetched from: an s3:// store, which signs a URL of the
    # binary for the init container; empty or a folder: binary jobs cannot run.
    artifacts_url: str = ""
    # How long that signed URL stays valid: the pod must start within it.
    binary_url_seconds: int = 3600
    # How long a finished Job (and its pod and log) stays for inspection and adoption; the
    # Jobs of a ScheduledJob are kept by its history limits instead.
    ttl_seconds_after_finished: int = 3600
    # The pods' service account (one with no rights: the chart's <release>-hourglass-job);
    # empty: the namespace's default. Its token is never mounted either way.
    service_account: str = ""
    # The user and group every container of a job pod runs as; never root.
    run_as_user: int = RUNNER_UID
    job_name_prefix: str = "hg"
    # How much of the pod's log becomes the attempt's stdout tail.
    log_tail_bytes: int = 4096
    # More namespaces that Jobs may go to (a task's kubernetes.namespace) besides `namespace`:
    # those where the worker's RBAC lets it create Jobs.
    job_namespaces: frozenset[str] = frozenset()
    # The hourglass namespaces whose jobs may choose a Kubernetes namespace, a job template and
    # an owner (the operator's). A template may name any ServiceAccount, Secret or ConfigMap
    # of its namespace, so only a tenant trusted with those namespaces may send one.
    template_tenants: frozenset[str] = frozenset()
    # How long one watch request lasts before it is renewed.
    watch_timeout_seconds: int = 60
    # How long transient API failures are retried before the attempt fails.
    api_retry_seconds: float = 300.0
    # The read timeout of each short API call.
    request_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if len(self.namespace) > 63 or not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid namespace name")
        if not self.runner_image.strip():
            raise ValueError("runner_image must not be empty")
        if self.ttl_seconds_after_finished < 0:
            raise ValueError("ttl_seconds_after_finished must not be negative")
        if self.service_account and (
            len(self.service_account) > 253 or not _DNS_SUBDOMAIN.fullmatch(self.service_account)
        ):
            raise ValueError(f"service_account {self.service_account!r} is not a valid name")
        if not 0 < self.run_as_user <= MAX_ID:
            raise ValueError(
                f"run_as_user {self.run_as_user} must be a user id from 1 to {MAX_ID}: job "
                "pods never run as root"
            )
        if len(self.job_name_prefix) > MAX_PREFIX or not _DNS_LABEL.fullmatch(self.job_name_prefix):
            raise ValueError(
                f"job_name_prefix {self.job_name_prefix!r} must be at most {MAX_PREFIX} "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        for name in self.job_namespaces:
            if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
                raise ValueError(f"job namespace {name!r} is not a valid namespace name")
        if self.log_tail_bytes < 0:
            raise ValueError("log_tail_bytes must not be negative")
        if self.watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        if self.api_retry_seconds < 0:
            raise ValueError("api_retry_seconds must not be negative")
        if self.request_timeout_seconds <= 0:
            raise ValueError("request_timeout_seconds must be positive")
        if not 0 < self.binary_url_seconds <= MAX_BINARY_URL_SECONDS:
            raise ValueError(
                f"binary_url_seconds must be from 1 to {MAX_BINARY_URL_SECONDS} (S3's limit)"
            )
