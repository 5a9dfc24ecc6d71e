"""One small HTTP server for liveness, readiness and Prometheus metrics.

- ``GET /healthz``: 200 while the receive loop has shown a heartbeat within ``liveness_timeout`` seconds.
- ``GET /readyz``: 200 while connected to Service Bus, not draining and free of configuration faults, 503
  otherwise; ``failed`` names each failing check (``receive``, ``send_reply``, ``schedule``, ``geocatalog``) with
  its ``cause`` and ``detail``.
- ``GET /metrics``: the Prometheus text exposition of ``Metrics``.
Bodies are small JSON documents that say why, so ``curl`` tells an operator what is wrong.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from worker.observability.metrics import Metrics


class HealthState:
    """What the runtime tells the health server. Thread-safe; the clock is injectable for tests."""

    def __init__(
        self,
        *,
        liveness_timeout: float = 60.0,
        readiness_timeout: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.liveness_timeout = liveness_timeout
        self.readiness_timeout = readiness_timeout  # a loop stuck this long in an SDK call is not ready
        self._beats: dict[str, float] = {}
        self._connected: dict[str, bool] = {}
        self._draining = False
        self._faults: dict[str, dict[str, str]] = {}
        self.details: dict[str, Any] = {}

    def set_fault(self, check: str, cause: str, detail: str) -> str | None:
        """Mark ``check`` failing with a configuration fault; returns the cause it had before (None: none)."""
        with self._lock:
            before = self._faults.get(check, {}).get("cause")
            self._faults[check] = {"cause": cause, "detail": detail}
            return before

    def clear_fault(self, check: str) -> str | None:
        """``check`` passes again; returns the cause it had (None when it had none)."""
        with self._lock:
            fault = self._faults.pop(check, None)
        return fault["cause"] if fault else None

    def faults(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {check: dict(f) for check, f in self._faults.items()}

    def beat(self, loop: str) -> None:
        with self._lock:
            self._beats[loop] = self._clock()

    def forget(self, loop: str) -> None:
        with self._lock:
            self._beats.pop(loop, None)
            self._connected.pop(loop, None)

    def set_connected(self, loop: str, connected: bool) -> None:
        with self._lock:
            self._connected[loop] = connected

    def set_draining(self) -> None:
        with self._lock:
            self._draining = True

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self._clock()
            ages = {name: round(now - at, 3) for name, at in self._beats.items()}
        stale = [name for name, age in ages.items() if age > self.liveness_timeout]
        alive = bool(ages) and not stale
        return alive, {"alive": alive, "loops": ages, "stale": stale}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self._clock()
            stuck = sorted(n for n, at in self._beats.items() if now - at > self.readiness_timeout)
            connected = bool(self._connected) and all(self._connected.values()) and not stuck
            draining = self._draining
            failed = {check: dict(f) for check, f in self._faults.items()}
        ready = connected and not draining and not failed
        body = {"ready": ready, "connected": connected, "draining": draining, "stuck": stuck, "failed": failed}
        return ready, {**body, **self.details}


def _handler_class(state: HealthState, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "geocatalog-worker"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                ok, body = state.liveness()
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            elif path == "/readyz":
                ok, body = state.readiness()
                self._send(200 if ok else 503, json.dumps(body, default=str).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found; try /healthz, /readyz or /metrics"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


class HealthServer:
    """``HealthServer(state, metrics, host, port).start()``; ``.port`` is the bound port (``port=0`` → ephemeral)."""

    def __init__(self, state: HealthState, metrics: Metrics, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_class(state, metrics))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gcw-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
