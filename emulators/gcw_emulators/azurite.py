"""Microsoft's Azurite (the local Blob Storage service), installed from npm into a tools folder and run over HTTPS.

Used by the test suite and the demo. ``ensure_azurite()`` installs ``azurite@3.35.0`` (the last release that runs
on Node 20; 3.36+ needs Node 22) with ``npm install --prefix <tools>/azurite-3.35.0`` once, under a file lock, the
way the tests obtain the helm binary. ``Azurite`` runs the blob service only, in memory, on a free loopback port,
with a self-signed certificate for 127.0.0.1 (Azurite's OAuth mode needs HTTPS) and ``--oauth basic``: it accepts
shared-key, SAS and bearer-token requests. ``TokenEndpoint`` is a local managed-identity endpoint (the App Service
protocol: ``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``) that ``DefaultAzureCredential`` uses to get a token in a
form Azurite's basic OAuth accepts (it checks issuer, audience and lifetime, not the signature).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

AZURITE_VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development account key (public; it only ever opens the local emulator).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STORAGE_AUDIENCE = "https://storage.azure.com"


class AzuriteUnavailable(RuntimeError):
    """Azurite could not be installed or started (no npm/node, no registry)."""


def tools_dir() -> Path:
    """``$GCW_TOOLS_DIR``, else ``.tools`` in the current directory (the repository root for make/pytest)."""
    return Path(os.environ.get("GCW_TOOLS_DIR") or Path.cwd() / ".tools")


def ensure_azurite(tools: Path | None = None) -> Path:
    """The path of Azurite's blob server script, installing the npm package first if needed."""
    root = (tools or tools_dir()) / f"azurite-{AZURITE_VERSION}"
    main = root / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    root.mkdir(parents=True, exist_ok=True)
    with (root.parent / "azurite.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if main.exists():
            return main
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise AzuriteUnavailable("node and npm are needed to install Azurite")
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), f"azurite@{AZURITE_VERSION}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 or not main.exists():
            raise AzuriteUnavailable(f"npm install azurite@{AZURITE_VERSION} failed: {proc.stderr.strip()[-2000:]}")
    return main


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A fresh self-signed certificate (and key) for ``host`` as an IP address SAN; returns (cert, key) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "azurite-cert.pem", directory / "azurite-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """Azurite's blob service on 127.0.0.1 over HTTPS (in memory); ``cert`` is the certificate to trust."""

    def __init__(self, workdir: Path, *, tools: Path | None = None) -> None:
        self.workdir = workdir
        self.tools = tools
        self.port = 0
        self.cert = workdir / "azurite-cert.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The service endpoint without the account (blob URLs are ``<endpoint>/<account>/<container>/<blob>``)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def account_url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT}"

    def start(self, timeout: float = 60.0) -> Azurite:
        main = ensure_azurite(self.tools)
        self.cert, key = self_signed_certificate(self.workdir)
        self.port = _free_port()
        args = ["node", str(main), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)]
        args += ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl"]
        args += ["--oauth", "basic", "--cert", str(self.cert), "--key", str(key), "--silent"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AzuriteUnavailable(f"azurite exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AzuriteUnavailable(f"azurite did not listen on {self.port} within {timeout:g} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- data plane with the account key (what a producer pipeline does) -----------------------------------
    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            self.account_url,
            credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
            connection_verify=str(self.cert),
        )

    def blob_url(self, container: str, blob: str) -> str:
        from urllib.parse import quote

        return f"{self.account_url}/{container}/{quote(blob)}"

    def upload(self, container: str, blob: str, data: bytes | dict[str, Any]) -> str:
        """Upload (replacing) ``data`` (a dict is written as JSON); returns the blob's URL."""
        raw = json.dumps(data).encode() if isinstance(data, dict) else data
        client = self.service().get_blob_client(container, blob)
        client.upload_blob(raw, overwrite=True)
        return self.blob_url(container, blob)

    def delete(self, container: str, blob: str) -> None:
        self.service().get_blob_client(container, blob).delete_blob()

    def create_container(self, name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.service().create_container(name)

    def container_sas(self, container: str, *, hours: float = 2.0) -> str:
        """A read SAS token (query string without ``?``) for ``container``."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            ACCOUNT,
            container,
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(read=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
        )


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

    def __init__(self) -> None:
        self.secret = uuid.uuid4().hex
        self.requests = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("X-IDENTITY-HEADER") != endpoint.secret:
                    self.send_response(401)
                    self.end_headers()
                    return
                endpoint.requests += 1
                token, expires = storage_token()
                body = json.dumps(
                    {
                        "access_token": token,
                        "expires_on": str(expires),
                        "resource": STORAGE_AUDIENCE,
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
