"""A local managed-identity token endpoint, so unmodified ``DefaultAzureCredential`` code runs against the emulators.

``TokenEndpoint`` speaks the App Service managed-identity protocol (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``,
api-version 2019-08-01): put ``env()`` into a process's environment and its ``DefaultAzureCredential`` (sync or
async) gets its tokens here. By default the token is a JWT of the shape Entra issues for Azure Storage (what
Azurite's basic OAuth checks); ``TokenEndpoint(token="dev-token")`` hands out that fixed token instead (what the
GeoCatalog emulator accepts), whatever resource is asked for.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

STORAGE_AUDIENCE = "https://storage.azure.com"


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def storage_token(lifetime: float = 3600.0) -> tuple[str, int]:
    """A JWT of the shape Entra issues for storage (issuer, audience, lifetime; an unverifiable signature)."""
    now = int(time.time())
    claims = {
        "aud": STORAGE_AUDIENCE,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + int(lifetime),
        "oid": str(uuid.uuid4()),
        "tid": "00000000-0000-0000-0000-000000000000",
        "appid": "geocatalog-worker-test",
    }
    token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.{_b64({'sig': 'local'})}"
    return token, now + int(lifetime)


class TokenEndpoint:
    """A managed-identity endpoint (App Service protocol, api-version 2019-08-01) on 127.0.0.1.

    Set ``env()`` on a process and its ``DefaultAzureCredential`` gets tokens here; ``requests`` counts them."""

    def __init__(self, token: str | None = None, lifetime: float = 3600.0) -> None:
        self.secret = uuid.uuid4().hex
        self.requests = 0
        self.resources: list[str] = []  # the resource (scope without /.default) of each token request
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("X-IDENTITY-HEADER") != endpoint.secret:
                    self.send_response(401)
                    self.end_headers()
                    return
                endpoint.requests += 1
                resource = parse_qs(urlsplit(self.path).query).get("resource", [STORAGE_AUDIENCE])[0]
                endpoint.resources.append(resource)
                if token is None:
                    access_token, expires = storage_token(lifetime)
                else:
                    access_token, expires = token, int(time.time() + lifetime)
                body = json.dumps(
                    {
                        "access_token": access_token,
                        "expires_on": str(expires),
                        "resource": resource,
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def start(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
