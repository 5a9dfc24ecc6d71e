"""Microsoft's Azurite (the local Blob Storage service), installed from npm into a tools folder and run over HTTPS.

Used by the test suite and the demo. ``ensure_azurite()`` installs ``azurite@3.35.0`` (the last release that runs
on Node 20; 3.36+ needs Node 22) with ``npm install --prefix <tools>/azurite-3.35.0`` once, under a file lock, the
way the tests obtain the helm binary. ``Azurite`` runs the blob service only, in memory, on a free loopback port,
with a self-signed certificate for 127.0.0.1 (Azurite's OAuth mode needs HTTPS) and ``--oauth basic``: it accepts
shared-key, SAS and bearer-token requests. ``gcw_emulators.identity.TokenEndpoint`` is a local managed-identity
endpoint that ``DefaultAzureCredential`` uses to get a token in a form Azurite's basic OAuth accepts (it checks
issuer, audience and lifetime, not the signature). The certificate comes from ``gcw_emulators.tls``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from gcw_emulators.tls import self_signed_certificate

AZURITE_VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development account key (public; it only ever opens the local emulator).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


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
        self.cert, key = self_signed_certificate(self.workdir, stem="azurite")
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
