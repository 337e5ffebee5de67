"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go does it.

A candidate takes the Lease when nobody holds it, or when its record has not changed for a
whole lease duration (judged by the candidate's own clock since it last saw the record
change, so clock skew between nodes does not matter). Every write names the resourceVersion
it read, so of two candidates only one wins. The leader renews every `retry_period`; when it
has not renewed for `renew_deadline` (shorter than the lease duration) it steps down before
anyone else can take over. On a clean stop it releases the Lease, so a successor takes over at
once instead of after a lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def own_namespace() -> str:
    """Where the Lease lives by default: $POD_NAMESPACE, else the service account's
    namespace, else "default"."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """$POD_NAME (or the host name) plus a random suffix: unique per process."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}-{uuid.uuid4().hex[:8]}"


def _micro_time(moment: datetime) -> str:
    # MicroTime wants exactly six fractional digits.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaigns for, holds and releases one Lease. The Kubernetes calls are blocking; they
    run in a worker thread."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        # Any: the bodies are plain dicts (MicroTime wants six fractional digits, which the
        # client's own datetime serialization does not always write).
        self.leases: Any = client.CoordinationV1Api(api)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    # -- one attempt ---------------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self.leases.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=5
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def _spec(self, now: datetime, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": _micro_time(acquired),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this candidate holds the Lease afterwards."""
        now = datetime.now(UTC)
        lease = self._read()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                self.leases.create_namespaced_lease(self.namespace, body, _request_timeout=5)
            except client.ApiException as error:
                if error.status == 409:  # another candidate created it first
                    return False
                raise
            self._mark_renewed()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = lease["metadata"]["resourceVersion"]
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = time.monotonic()
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if time.monotonic() - self._observed_at < duration:
                return False  # held, and renewed within its duration as far as we know
            log.info("lease %s/%s of %s expired", self.namespace, self.name, holder)
        if holder == self.identity:
            new_spec = {**spec, **self._spec(now, now, int(spec.get("leaseTransitions") or 0))}
            new_spec["acquireTime"] = spec.get("acquireTime") or new_spec["acquireTime"]
        else:
            new_spec = self._spec(now, now, int(spec.get("leaseTransitions") or 0) + 1)
        lease["spec"] = new_spec
        try:
            self.leases.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=5
            )
        except client.ApiException as error:
            if error.status in (404, 409):  # changed (or deleted) since we read it
                return False
            raise
        self._mark_renewed()
        return True

    def _mark_renewed(self) -> None:
        self._last_renew = time.monotonic()

    def release(self) -> None:
        """Gives the Lease up if this candidate holds it, so a successor need not wait."""
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(datetime.now(UTC)),
            }
            self.leases.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=5
            )
            log.info("released lease %s/%s", self.namespace, self.name)
        except (client.ApiException, OSError) as error:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)

    # -- the loops ------------------------------------------------------------------------------

    async def _attempt(self) -> bool:
        try:
            return await asyncio.to_thread(self.try_acquire_or_renew)
        except (client.ApiException, OSError) as error:
            log.warning("lease %s/%s: %s", self.namespace, self.name, error)
            return False
        except Exception as error:  # urllib3 errors and the like: keep campaigning
            log.warning("lease %s/%s: %r", self.namespace, self.name, error)
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Waits until this candidate leads (True) or `stop` is set (False)."""
        log.info("campaigning for lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if await self._attempt():
                log.info("became leader (lease %s/%s)", self.namespace, self.name)
                return True
            await _wait(stop, self.retry_period)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renews the Lease until `stop` is set, or returns when it could not renew for
        `renew_deadline`: then leadership is lost."""
        while not stop.is_set():
            await _wait(stop, self.retry_period)
            if stop.is_set():
                return
            if await self._attempt():
                continue
            if time.monotonic() - self._last_renew >= self.renew_deadline:
                log.error(
                    "lost lease %s/%s: not renewed for %.0fs",
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                return
            lease = await asyncio.to_thread(self._safe_holder)
            if lease is not None and lease != self.identity:
                log.error("lost lease %s/%s to %s", self.namespace, self.name, lease)
                return

    def _safe_holder(self) -> str | None:
        try:
            lease = self._read()
        except Exception:
            return None
        if lease is None:
            return ""
        return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
