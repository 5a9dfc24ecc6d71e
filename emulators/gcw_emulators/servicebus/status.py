"""A tiny read-only HTTP endpoint: ``GET /`` (or ``/status``) returns per-entity counts as JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BackgroundHTTPServer:
    """A threading HTTP server on a daemon thread: ``start()``, ``url``, ``port``, ``stop()``."""

    scheme = "http"

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self) -> BackgroundHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class StatusServer(BackgroundHTTPServer):
    def __init__(self, host: str, port: int, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path in ("/", "/status"):
                    self._send(200, outer._stats())
                elif path == "/healthz":
                    self._send(200, {"status": "ok"})
                else:
                    self._send(404, {"error": f"unknown path {path!r}; use / or /status"})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, sort_keys=True).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:   # quiet
                return

        super().__init__(host, port, _Handler, "servicebus-status")
