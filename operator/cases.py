"""The one generic reconcile of every case's custom resource (group hourglass.io, version
v1alpha1), found through `hourglass.cases.every()`.

- create, update (of spec) and resume: the case's pure `objects(resource, platform)`, stamped
  by `owned.prepare`, applied one by one with server-side apply (field manager
  `hourglass-operator`, conflicts forced: the operator owns these fields). Objects under the
  resource's owner label that the case no longer returns are deleted. Then the status:
  conditions Ready / Progressing / Degraded, `observedGeneration`, `endpoints`.
- a timer mirrors the owned Deployments' availability into the conditions (a Deployment is
  available when its pods pass their readiness probe: the case's health check).
- delete: every owned object is deleted explicitly, under kopf's finalizer. In a cluster the
  garbage collector would also remove them through their ownerReferences; deleting them here
  makes removal immediate and ordered, and works where no garbage collector runs.

A spec the case refuses (`objects` raises ValueError) or an object the API server refuses as
invalid (HTTP 400/422) is permanent until the spec changes: Degraded=True with the message,
and a Warning event. Anything else is retried.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client

from hourglass import cases
from hourglass.operator import owned

log = logging.getLogger(__name__)

RETRY_DELAY = 5.0
# API answers that retrying cannot fix: the object itself is wrong.
PERMANENT_STATUS = {400, 422}


class Kube:
    """The few REST calls of the reconcile, on the kubernetes client, off the event loop."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        body: Any = None,
    ) -> Any:
        """One request; the answer's JSON, or ApiException for anything but a 2xx."""
        method, url, headers, payload, form = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, url, header_params=headers, body=payload, post_params=form,
            _request_timeout=30,
        )  # fmt: skip
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise client.ApiException(http_resp=response)
        return json.loads(response.data or b"{}")

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        kind = owned.kind_of(body)
        metadata = body["metadata"]
        path = f"{kind.collection(metadata['namespace'])}/{metadata['name']}"
        result: dict[str, Any] = await asyncio.to_thread(
            self._call,
            "PATCH",
            path,
            query=[("fieldManager", owned.FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
            body=dict(body),
        )
        return result

    async def items(self, kind: owned.Kind, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await asyncio.to_thread(
            self._call,
            "GET",
            kind.collection(namespace),
            query=[("labelSelector", selector)],
        )
        items: list[dict[str, Any]] = result.get("items") or []
        for item in items:  # a list's items carry neither
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def delete(self, manifest: Mapping[str, Any]) -> bool:
        """Deletes this very object (its uid as a precondition); False when it was gone."""
        kind = owned.kind_of(manifest)
        metadata = manifest["metadata"]
        body = {"preconditions": {"uid": metadata["uid"]}, "propagationPolicy": "Background"}
        try:
            await asyncio.to_thread(
                self._call,
                "DELETE",
                f"{kind.collection(metadata['namespace'])}/{metadata['name']}",
                body=body,
            )
        except client.ApiException as error:
            if error.status in (404, 409):  # gone, or a new object of that name: not ours
                return False
            raise
        return True

    async def owned(self, owner: owned.Owner) -> list[dict[str, Any]]:
        """Every object under the owner's label that the owner controls, kind by kind."""
        found = []
        for kind in owned.KINDS:
            for item in await self.items(kind, owner.namespace, owner.selector):
                if owned.owned_by(item, owner.uid):
                    found.append(item)
        return found


def _reason(error: client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)


class CaseReconciler:
    """The handlers of one case's kind."""

    def __init__(self, case: cases.Case, platform: cases.Platform, kube: Kube) -> None:
        self.case = case
        self.platform = platform
        self.kube = kube

    def _owner(self, name: str, namespace: str, uid: str) -> owned.Owner:
        return owned.Owner(self.case.kind, name, namespace, uid, self.case.name)

    def _degrade(
        self, body: kopf.Body, status: Mapping[str, Any], patch: kopf.Patch, generation: int,
        *, reason: str, message: str,
    ) -> None:  # fmt: skip
        patch.status["conditions"] = owned.conditions(
            status.get("conditions"), generation=generation, deployments=(), error=(reason, message)
        )
        patch.status["observedGeneration"] = generation
        kopf.warn(body, reason=reason, message=message)

    async def reconcile(
        self,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        uid: str,
        namespace: str | None,
        name: str | None,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        generation = int(meta.get("generation") or 1)
        resource = cases.Resource(
            name=name or "",
            namespace=namespace or "",
            uid=uid,
            generation=generation,
            spec=copy.deepcopy(dict(spec)),
        )
        owner = self._owner(resource.name, resource.namespace, uid)
        try:
            desired = owned.prepare(self.case.objects(resource, self.platform), owner)
        except ValueError as error:  # owned.CaseError is one too
            reason = "InvalidObjects" if isinstance(error, owned.CaseError) else "InvalidSpec"
            message = f"{self.case.kind} {resource.name}: {error}"
            self._degrade(body, status, patch, generation, reason=reason, message=message)
            raise kopf.PermanentError(message) from None

        applied: list[dict[str, Any]] = []
        for manifest in desired:
            try:
                applied.append(await self.kube.apply(manifest))
            except client.ApiException as error:
                what = f"{manifest['kind']} {manifest['metadata']['name']}"
                message = f"applying {what}: HTTP {error.status}: {_reason(error)}"
                if error.status in PERMANENT_STATUS:
                    self._degrade(
                        body, status, patch, generation, reason="ApplyRefused", message=message
                    )
                    raise kopf.PermanentError(message) from None
                patch.status["conditions"] = owned.conditions(
                    status.get("conditions"),
                    generation=generation,
                    deployments=(),
                    error=("ApplyFailed", message),
                )
                raise kopf.TemporaryError(f"{message}; retrying", delay=RETRY_DELAY) from None

        pruned = []
        for manifest in owned.stale(await self.kube.owned(owner), desired, uid):
            if await self.kube.delete(manifest):
                pruned.append(f"{manifest['kind']} {manifest['metadata']['name']}")
        if pruned:
            logger.info("deleted what the case no longer returns: %s", ", ".join(pruned))

        deployments = [item for item in applied if item.get("kind") == "Deployment"]
        services = [item for item in applied if item.get("kind") == "Service"]
        patch.status["conditions"] = owned.conditions(
            status.get("conditions"), generation=generation, deployments=deployments
        )
        patch.status["observedGeneration"] = generation
        patch.status["endpoints"] = owned.endpoints(services)
        kopf.info(
            body,
            reason="Applied",
            message=f"generation {generation}: {len(applied)} object(s) applied"
            + (f", {len(pruned)} deleted" if pruned else ""),
        )

    async def refresh(
        self,
        *,
        status: kopf.Status,
        uid: str,
        namespace: str | None,
        name: str | None,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        """Mirrors the Deployments' availability; leaves a failed apply's status alone."""
        generation = status.get("observedGeneration")
        if not generation:
            return  # never applied yet
        previous = status.get("conditions") or []
        degraded: dict[str, Any] = next((c for c in previous if c.get("type") == "Degraded"), {})
        if degraded.get("status") == "True" and degraded.get("reason") != "DeploymentFailed":
            return  # the apply failed: the next reconcile, not a refresh, clears that
        owner = self._owner(name or "", namespace or "", uid)
        kind = next(k for k in owned.KINDS if k.kind == "Deployment")
        try:
            found = await self.kube.items(kind, owner.namespace, owner.selector)
        except client.ApiException as error:
            logger.warning("listing Deployments: HTTP %s: %s", error.status, _reason(error))
            return
        deployments = [item for item in found if owned.owned_by(item, uid)]
        fresh = owned.conditions(previous, generation=int(generation), deployments=deployments)
        if fresh != previous:
            patch.status["conditions"] = fresh

    async def delete(
        self, *, uid: str, namespace: str | None, name: str | None, logger: kopf.Logger, **_: Any
    ) -> None:
        owner = self._owner(name or "", namespace or "", uid)
        try:
            deleted = [
                item for item in await self.kube.owned(owner) if await self.kube.delete(item)
            ]
        except client.ApiException as error:
            raise kopf.TemporaryError(
                f"deleting owned objects: HTTP {error.status}: {_reason(error)}; retrying",
                delay=RETRY_DELAY,
            ) from None
        if deleted:
            logger.info(
                "deleted %s",
                ", ".join(f"{item['kind']} {item['metadata']['name']}" for item in deleted),
            )


def register(
    registry: kopf.OperatorRegistry,
    kube: Kube,
    platform: cases.Platform,
    *,
    refresh_interval: float,
) -> list[str]:
    """Adds the handlers of every case in the registry; returns their plurals."""
    plurals = []
    for case in cases.every():
        reconciler = CaseReconciler(case, platform, kube)
        resource = (owned.GROUP, owned.VERSION, case.plural)
        kopf.on.create(*resource, id="create", registry=registry, backoff=10)(reconciler.reconcile)
        kopf.on.update(*resource, id="update", field="spec", registry=registry, backoff=10)(
            reconciler.reconcile
        )
        kopf.on.resume(*resource, id="resume", registry=registry, backoff=10)(reconciler.reconcile)
        kopf.on.delete(*resource, id="delete", registry=registry, backoff=10)(reconciler.delete)
        kopf.timer(*resource, id="refresh", interval=refresh_interval, registry=registry)(
            reconciler.refresh
        )
        plurals.append(case.plural)
    return plurals
