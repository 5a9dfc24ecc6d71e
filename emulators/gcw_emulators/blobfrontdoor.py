"""``BlobFrontDoor``: Azure Blob Storage's public endpoints (``https://<account>.blob.core.windows.net/...``) served
from the GeoCatalog emulator's blob store, for unmodified code that downloads a blob by its real URL.

It is an HTTP proxy (``HTTPS_PROXY``): a ``CONNECT <account>.blob.core.windows.net:443`` is answered by terminating
TLS with a self-signed certificate for ``*.blob.core.windows.net`` (``cert``, to trust next to the emulator's) and
serving each ``GET /<container>/<blob>?<query>`` from the emulator's ``/_blobs/<account>/<container>/<blob>``,
SAS checks of private accounts included. Every other destination is refused (403): nothing leaves the machine.
``env()`` gives a child process the proxy variables, with ``NO_PROXY`` keeping local endpoints direct.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from gcw_emulators.tls import self_signed_certificate, server_context

BLOB_SUFFIX = ".blob.core.windows.net"
RELAYED_HEADERS = ("Content-Type", "Content-Length", "ETag", "Last-Modified", "x-ms-error-code")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    door: BlobFrontDoor


class _BlobRequests(BaseHTTPRequestHandler):
    """HTTP requests inside one tunnel to ``account``'s blob endpoint."""

    protocol_version = "HTTP/1.1"
    server: _Server
    account = ""

    def do_GET(self) -> None:
        door = self.server.door
        upstream = f"{door.origin}/_blobs/{self.account}{self.path}"
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=door.client_context)
        )
        try:
            with opener.open(upstream, timeout=30) as response:
                status, headers, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, headers, body = exc.code, exc.headers, exc.read()
        except OSError as exc:
            status, headers, body = (
                502,
                {"Content-Type": "text/plain"},
                f"blob front door: {type(exc).__name__}".encode(),
            )
        door.requests += 1
        self.send_response(status)
        for name in RELAYED_HEADERS:
            value = headers.get(name)
            if value is not None and name != "Content-Length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Tunnels(socketserver.StreamRequestHandler):
    """One proxy connection: ``CONNECT host:443``, then TLS and blob requests for that host."""

    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # the CONNECT request's headers
        target = line[1] if len(line) == 3 else ""
        host, _, port = target.rpartition(":")
        if line[:1] != ["CONNECT"] or not host.lower().endswith(BLOB_SUFFIX) or port != "443":
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        self.wfile.flush()
        try:
            tls = self.server.door.server_context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return
        handler = type("_AccountRequests", (_BlobRequests,), {"account": host.lower()[: -len(BLOB_SUFFIX)]})
        handler(tls, self.client_address, self.server)


class BlobFrontDoor:
    """See the module docstring. ``origin`` is the GeoCatalog emulator's URL, ``origin_cert`` the certificate to
    trust for it (None: the system's)."""

    def __init__(self, origin: str, origin_cert: Path | None, tls_dir: Path, host: str = "127.0.0.1") -> None:
        self.origin = origin.rstrip("/")
        self.cert, key = self_signed_certificate(Path(tls_dir), f"*{BLOB_SUFFIX}", stem="blob-front-door")
        self.server_context = server_context(self.cert, key)
        self.client_context = ssl.create_default_context(cafile=str(origin_cert) if origin_cert else None)
        self.requests = 0  # blob requests served (relayed to the emulator)
        self._server = _Server((host, 0), _Tunnels)
        self._server.door = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Proxy variables for a child process: blob hosts through this door, local endpoints direct."""
        local = "127.0.0.1,localhost,::1"
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url, "NO_PROXY": local, "no_proxy": local}

    def start(self) -> BlobFrontDoor:
        self._thread = threading.Thread(target=self._server.serve_forever, name="blob-front-door", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BlobFrontDoor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
