"""Liveness and readiness of a long-running process, served with its metrics.

Every component (api, producer, worker, claimer, operator) serves three paths on its
`--metrics-listen` port, which is what the chart's probes call:

- `/metrics`: Prometheus metrics;
- `/healthz` (liveness): the process's event loop still turns. A monitor task on the loop
  runs the readiness checks every `interval` seconds; when no round has completed for
  `stale_after` seconds the loop is wedged (a blocking call, a deadlock) and only a restart
  helps. An outage of PostgreSQL or etcd is *not* a liveness failure: the components retry on
  their own, and restarting them would not bring the database back;
- `/readyz` (readiness): every check of the last round passed (PostgreSQL answers, etcd
  answers, the worker's lease is held, ...), and that round is recent.

The HTTP server runs in a thread, so a wedged loop cannot stop it from answering: it only
reads what the monitor last wrote. Both paths answer JSON with the reason of each failed check,
HTTP 200 when healthy and 503 when not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when the dependency is fine, raises (any exception, whose text
is the reason) when it is not."""

DEFAULT_INTERVAL = 2.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_STALE_AFTER = 20.0


class NotReady(Exception):
    """A check's plain failure, with the reason as its text."""


@dataclass(frozen=True, slots=True)
class Report:
    healthy: bool
    body: dict[str, Any]


class Health:
    """The checks of one process and the results of their last round."""

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (interval > 0 and timeout > 0 and interval + timeout < stale_after):
            raise ValueError("need interval + timeout < stale_after, all positive")
        self.interval = interval
        self.timeout = timeout
        self.stale_after = stale_after
        self.clock = clock
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()
        self._results: dict[str, str] = {}
        self._round_at: float | None = None
        self._running = False

    def add(self, name: str, check: Check) -> None:
        """Adds (or replaces) a readiness check; it counts from the next round on."""
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    async def run(self) -> None:
        """The monitor: a round of checks every `interval` until cancelled."""
        self._running = True
        try:
            while True:
                await self.check_once()
                await asyncio.sleep(self.interval)
        finally:
            self._running = False

    async def check_once(self) -> None:
        names = list(self._checks)
        outcomes = await asyncio.gather(
            *(self._one(self._checks[name]) for name in names), return_exceptions=True
        )
        results = {
            name: outcome if isinstance(outcome, str) else f"check failed: {outcome!r}"
            for name, outcome in zip(names, outcomes, strict=True)
        }
        with self._lock:
            self._results = results
            self._round_at = self.clock()

    async def _one(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout)
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:  # any failure is a reason, never a crash of the monitor
            return str(exc) or type(exc).__name__
        return "ok"

    def _age(self) -> float | None:
        return None if self._round_at is None else self.clock() - self._round_at

    def liveness(self) -> Report:
        with self._lock:
            age = self._age()
        if age is None:
            # Nothing has completed yet: the monitor is starting (or was never started).
            live = self._running
            return Report(live, {"live": live, "reason": "starting" if live else "no monitor"})
        live = age < self.stale_after
        body: dict[str, Any] = {"live": live, "last_round_seconds_ago": round(age, 3)}
        if not live:
            body["reason"] = f"the event loop has not completed a round for {age:.0f}s"
        return Report(live, body)

    def readiness(self) -> Report:
        with self._lock:
            age = self._age()
            results = dict(self._results)
        if age is None:
            return Report(False, {"ready": False, "reason": "no check has completed yet"})
        stale = age >= self.stale_after
        ready = not stale and all(result == "ok" for result in results.values())
        body: dict[str, Any] = {"ready": ready, "checks": results}
        if stale:
            body["reason"] = f"the last round of checks is {age:.0f}s old"
        return Report(ready, body)


# The process's health, like prometheus_client's default registry: components add their
# checks, and `serve` answers from it.
PROCESS = Health()


def lease_check(name: str, held: Callable[[], bool]) -> Check:
    """A check that a lease (etcd, coordination.k8s.io) is held right now."""

    async def check() -> None:
        if not held():
            raise NotReady(f"{name} not held")

    return check


def pending(reason: str) -> Check:
    """A check that fails with `reason` until it is replaced (say, "connecting")."""

    async def check() -> None:
        raise NotReady(reason)

    return check


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes call every few seconds: no access log line for each."""


def app(health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: /healthz, /readyz, and Prometheus' metrics for the rest."""
    metrics = make_wsgi_app()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            report = health.liveness() if path == "/healthz" else health.readiness()
            body = json.dumps(report.body, sort_keys=True).encode() + b"\n"
            status = "200 OK" if report.healthy else "503 Service Unavailable"
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            start_response(status, headers)
            return [body]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return serve


def serve(listen: str, health: Health = PROCESS) -> int:
    """Serves /metrics, /healthz and /readyz on HOST:PORT in a background thread; returns the
    port (0 picks a free one)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server = make_server(
        host,
        int(port),
        app(health),
        server_class=_Server6 if ":" in host else _Server,
        handler_class=_QuietHandler,
    )
    bound = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz and /readyz", host, bound)
    return bound
