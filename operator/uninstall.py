"""What `helm uninstall` runs around the deletion of a release: its hooks' logic.

Every ScheduledJob and case resource carries the operator's finalizer, so that deleting one
first deletes the job in the API. Deleted together with the release, such a resource hangs in
Terminating forever, because the operator that would drop the finalizer is gone. So, before
Helm deletes anything (pre-delete), `remove_resources` deletes the resources of the watched
namespaces and waits while the still running operator does its work; only if the operator
does not finish in time (it was scaled to zero, or is broken) does it drop the finalizer
itself, naming each resource, so that the uninstall never hangs.

After Helm has deleted the release (post-delete), `remove_lease` waits until no operator pod
is left (a terminating one still renews, and would create the Lease again), then deletes the
operator's Lease: `helm uninstall` leaves nothing behind.

The Kubernetes calls are blocking; time and sleep are parameters, so that a test needs no
waiting of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from hourglass.operator import resources
from hourglass.operator.handlers import FINALIZER

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Found:
    """One custom resource still present."""

    plural: str
    namespace: str
    name: str
    resource_version: str
    finalizers: tuple[str, ...]
    deleting: bool

    def __str__(self) -> str:
        return f"{self.plural}/{self.name} in {self.namespace}"


def _found(plural: str, item: dict[str, Any]) -> Found:
    meta = item["metadata"]
    return Found(
        plural=plural,
        namespace=meta["namespace"],
        name=meta["name"],
        resource_version=meta.get("resourceVersion", ""),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=bool(meta.get("deletionTimestamp")),
    )


class Resources:
    """The hourglass.io resources of some namespaces (None: every namespace)."""

    def __init__(
        self, api: client.ApiClient, *, namespaces: Sequence[str] | None, plurals: Sequence[str]
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespaces = list(namespaces) if namespaces else None
        self.plurals = list(plurals)

    def _list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        answer: Any
        try:
            if namespace is None:
                answer = self.custom.list_cluster_custom_object(
                    resources.GROUP, resources.VERSION, plural, _request_timeout=30
                )
            else:
                answer = self.custom.list_namespaced_custom_object(
                    resources.GROUP, resources.VERSION, namespace, plural, _request_timeout=30
                )
        except client.ApiException as error:
            if error.status == 404:  # that kind's CRD is not installed: nothing of it to delete
                return []
            raise
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    def present(self) -> list[Found]:
        found: list[Found] = []
        targets: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for plural in self.plurals:
            for namespace in targets:
                found.extend(_found(plural, item) for item in self._list(plural, namespace))
        return found

    def delete(self, item: Found) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                resources.GROUP,
                resources.VERSION,
                item.namespace,
                item.plural,
                item.name,
                _request_timeout=30,
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    def drop_finalizer(self, item: Found) -> None:
        """Removes the operator's finalizer, only from the version seen (a conflict: the next
        round sees the newer one)."""
        kept = [name for name in item.finalizers if name != FINALIZER]
        body = {"metadata": {"finalizers": kept, "resourceVersion": item.resource_version}}
        try:
            self.custom.patch_namespaced_custom_object(
                resources.GROUP,
                resources.VERSION,
                item.namespace,
                item.plural,
                item.name,
                body,
                _request_timeout=30,
            )
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise


def remove_resources(
    store: Resources,
    *,
    timeout: float,
    poll: float = 1.0,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> list[Found]:
    """Deletes every resource of `store` and returns once none is left. Those still present
    after `timeout` lose the operator's finalizer; they are returned (empty: the operator
    removed them all)."""
    deadline = clock() + timeout
    forced: dict[tuple[str, str, str], Found] = {}
    announced = False
    while True:
        present = store.present()
        if not present:
            return list(forced.values())
        if not announced:
            log.info("deleting %d resources: %s", len(present), ", ".join(map(str, present)))
            announced = True
        overdue = clock() >= deadline
        for item in present:
            if not item.deleting:
                # Also what appeared meanwhile (a case's ScheduledJobs, say).
                store.delete(item)
            elif overdue and FINALIZER in item.finalizers:
                log.warning("%s: the operator did not finish it; dropping its finalizer", item)
                store.drop_finalizer(item)
                forced[(item.plural, item.namespace, item.name)] = item
        sleep(poll)


def _names(pods: Sequence[client.V1Pod]) -> str:
    return ", ".join(str(pod.metadata.name) if pod.metadata else "?" for pod in pods)


def remove_lease(
    api: client.ApiClient,
    *,
    name: str,
    namespace: str,
    pod_selector: str,
    timeout: float,
    poll: float = 1.0,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> bool:
    """Deletes the Lease once no pod matches `pod_selector` in `namespace`: False when pods
    were still there after `timeout` (the Lease is then deleted anyway, and may come back)."""
    core = client.CoreV1Api(api)
    deadline = clock() + timeout
    gone, waited = True, False
    while pods := core.list_namespaced_pod(
        namespace, label_selector=pod_selector, _request_timeout=30
    ).items:
        if not waited:
            log.info("waiting for operator pods: %s", _names(pods))
            waited = True
        if clock() >= deadline:
            log.warning("operator pods still there: %s", _names(pods))
            gone = False
            break
        sleep(poll)
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease(name, namespace, _request_timeout=30)
        log.info("deleted Lease %s/%s", namespace, name)
    except client.ApiException as error:
        if error.status != 404:
            raise
        log.info("no Lease %s/%s", namespace, name)
    return gone
