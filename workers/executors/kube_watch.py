"""Watching one Job until it ends, for the Kubernetes executor (kubernetes.py).

The kubernetes client is synchronous and a watch lasts as long as the Job runs, so each watch
runs in a thread of its own (not the event loop's default pool, which many running attempts
would exhaust) and hands its events to the event loop through a queue. Which watch failures
end the watch quietly (an expired resource version, a transient API error: the caller reads
the Job again and watches anew) and which refuse the attempt is decided here, apart from the
executor's following and reporting of the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from hourglass.workers.executors import kube_status
from hourglass.workers.executors.kube_api import api_error, transient
from hourglass.workers.executors.kube_manifests import Manifest

__all__ = ["DELETED", "watch_job"]

# The executor's logger: a failed watch is part of following its attempt.
log = logging.getLogger("hourglass.workers.executors.kubernetes")

DELETED = object()
"""What `watch_job` returns when the Job was deleted."""


async def watch_job(
    batch: k8s.BatchV1Api,
    name: str,
    namespace: str,
    *,
    resource_version: str,
    watch_timeout: int,
    request_timeout: float,
) -> Manifest | object | None:
    """Watches the Job from `resource_version` until it finishes (its manifest), is
    deleted (DELETED) or the watch ends (None)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
    timeout = watch_timeout

    def put(kind: str, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

    def run() -> None:
        try:
            for event in watcher.stream(  # type: ignore[no-untyped-call]
                batch.list_namespaced_job,
                namespace,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=timeout,
                deserialize=False,
                _request_timeout=(request_timeout, timeout + 30),
            ):
                put("event", event)
        except BaseException as exc:  # handed to the event loop
            put("error", exc)
        else:
            put("end", None)

    thread = threading.Thread(target=run, name=f"watch {name}", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return None
            if kind == "error":
                if isinstance(item, k8s.ApiException) and item.status == 410:
                    return None
                if transient(item):
                    reason = api_error("watch", item).detail
                    log.warning("watch of Job %s failed (%s); watching again", name, reason)
                    await asyncio.sleep(1.0)
                    return None
                raise api_error(f"watch Job {name}", item)
            event: Manifest = item
            if event.get("type") == "DELETED":
                return DELETED
            job = event.get("object")
            if (
                event.get("type") in ("ADDED", "MODIFIED")
                and isinstance(job, dict)
                and kube_status.final_condition(job) is not None
            ):
                return job
    finally:
        watcher.stop()  # type: ignore[no-untyped-call]  # ends the thread soon
