"""``GeoCatalogEmulator``: the importable emulator, serving on a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from gcw_emulators.geocatalog.app import API_VERSIONS, AppConfig, GeoCatalogApp, RequestStats
from gcw_emulators.geocatalog.catalog import Catalog
from gcw_emulators.geocatalog.faults import FaultSet
from gcw_emulators.geocatalog.operations import DurationSpec
from gcw_emulators.geocatalog.sas import SasAuthority
from gcw_emulators.geocatalog.store import MemoryStore, SqliteStore
from gcw_emulators.tls import LOCAL_HOSTS, self_signed_certificate, server_context

log = structlog.get_logger(__name__)


class GeoCatalogEmulator:
    """The GeoCatalog data-plane + SAS APIs on ``http://host:port``, or ``https://`` with TLS.

    TLS: ``tls_cert``/``tls_key`` (PEM files), or ``tls=True`` to generate a self-signed certificate for the host,
    ``127.0.0.1`` and ``localhost`` under ``tls_dir`` (default: a fresh temporary folder); ``.cert`` is the file a
    client trusts (``REQUESTS_CA_BUNDLE``). ``public_url`` (``https://gc.example``) is the origin every absolute URL
    the emulator writes (``operation-location``, STAC links, next links) starts with, for a TLS proxy in front;
    without it, ``X-Forwarded-Proto``/``X-Forwarded-Host`` on a request win over the socket's scheme and host.

    ``operation_seconds`` is ``"recorded"`` (the live service's timings, the default), a float or a spec
    (``"uniform:1,3"``, ``"exp:2"``); ``faults`` are fault specs
    (see ``faults.py``); ``request_budget`` is calls per second across all clients (429 + Retry-After beyond).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        operation_seconds: float | str = "recorded",
        private_hosts: Iterable[str] = ("privatedemo.blob.core.windows.net",),
        token: str = "dev-token",  # noqa: S107 - the emulator's fixed dev token, not a secret
        sas_expiry_seconds: float = 86400,  # the service's default lifetime: 24 h (SPY)
        faults: Iterable[str] = (),
        seed: int = 0,
        data_dir: str | None = None,
        request_budget: float | None = None,
        *,
        collections: Iterable[str] = (),
        collection_storage: Mapping[str, str] | None = None,
        poll_retry_after: float | None = None,
        max_items_per_post: int = 1000,
        max_body_bytes: int = 10 * 1024 * 1024,
        managed_storage_account: str = "emulatormanaged",
        tls: bool = False,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_dir: str | Path | None = None,
        public_url: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.cert: Path | None = None  # the certificate clients trust (the generated one, or tls_cert)
        self._ssl: ssl.SSLContext | None = None
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key: give both PEM files, or neither")
        if tls_cert is not None and tls_key is not None:
            self.cert, key = Path(tls_cert), Path(tls_key)
        elif tls:
            folder = Path(tls_dir) if tls_dir else Path(tempfile.mkdtemp(prefix="gcw-geocatalog-tls-"))
            self.cert, key = self_signed_certificate(folder, host, stem="geocatalog", extra_hosts=LOCAL_HOSTS)
        if self.cert is not None:
            try:
                self._ssl = server_context(self.cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"tls_cert/tls_key: cannot load {self.cert} and {key}: {exc}") from None
        self.public_url = _check_public_url(public_url)
        self.token = token
        self.api_version = API_VERSIONS[-1]
        self._clock = time.time
        self._faults = FaultSet(self._clock, seed=seed, budget=request_budget)
        self._faults.set(list(faults))
        self._sas = SasAuthority(sas_expiry_seconds, self._clock)
        self._store = SqliteStore(data_dir) if data_dir else MemoryStore()
        self._stats = RequestStats()
        self.catalog = Catalog(
            self._store,
            self._sas,
            self._faults,
            DurationSpec(operation_seconds),
            private_hosts,
            self._clock,
            seed=seed,
            max_items_per_post=max_items_per_post,
            managed_account=managed_storage_account,
        )
        for cid in collections:
            self.catalog.add_collection_now(cid)
        self._app = GeoCatalogApp(
            self.catalog,
            self._sas,
            self._faults,
            self._stats,
            AppConfig(
                token=token,
                collection_storage=dict(collection_storage or {}),
                max_body_bytes=max_body_bytes,
                poll_retry_after=poll_retry_after,
                public_url=self.public_url,
            ),
        )
        self._app.stats_extra = self.stats
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    @property
    def url(self) -> str:
        """Where this process listens (``public_url`` is what the emulator writes into its answers)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header a client needs (the dev token)."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> GeoCatalogEmulator:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="geocatalog-emulator", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._start_error is not None:
            raise RuntimeError(f"GeoCatalog emulator failed to start: {self._start_error}") from self._start_error
        if not self._started.is_set():
            raise RuntimeError("GeoCatalog emulator did not start within 30 s")
        log.info("geocatalog_emulator_started", url=self.url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self._app.build(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        server = site._server
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]
        self.catalog.own_netlocs.update({f"{self.host}:{self.port}", f"localhost:{self.port}"})
        if self.public_url:
            self.catalog.own_netlocs.add(urlsplit(self.public_url).netloc)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._store.close()
        log.info("geocatalog_emulator_stopped", url=self.url)

    def __enter__(self) -> GeoCatalogEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ admin API (same as /_emulator/*)
    def stats(self) -> dict[str, Any]:
        """Requests by route and status, items per collection, operations by status, injected faults."""
        items, ops = self.catalog.counts()
        return {
            "requests": self._stats.snapshot(),
            "requests_total": self._stats.total(),
            "clients": self._stats.clients(),
            "items": items,
            "operations": ops,
            "faults_injected": dict(self._faults.injected),
            "signed_asset_hosts": dict(self.catalog.signed_asset_netlocs),
        }

    def set_faults(self, specs: Iterable[str]) -> None:
        """Replace the active faults; raises ``FaultSpecError`` (a ValueError) on a bad spec."""
        self._faults.set(list(specs))

    def clear_faults(self) -> None:
        self._faults.clear()

    def create_collection(self, collection_id: str, doc: dict[str, Any] | None = None) -> None:
        """Create a collection immediately (no operation)."""
        self.catalog.add_collection_now(collection_id, doc)

    def put_blob(
        self,
        path: str,
        data: bytes,
        *,
        account: str = "emulator",
        container: str = "items",
        content_type: str = "application/json",
    ) -> str:
        """Store ``data`` as blob ``path`` in ``account/container``; return its URL on this emulator."""
        blob = path.lstrip("/")
        if not blob:
            raise ValueError("blob path must not be empty")
        self.catalog.put_blob(f"{account}/{container}/{blob}", data, content_type)
        return f"{self.url}/_blobs/{account}/{container}/{blob}"

    def blob_url(self, href: str) -> str:
        """Where this emulator serves the blob an Azure blob href names (managed-storage hrefs of stored items are
        ``https://<account>.blob.core.windows.net/...``; their bytes are at ``{url}/_blobs/<account>/...``)."""
        parts = urlsplit(href)
        account = (parts.hostname or "").split(".")[0]
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.url}/_blobs/{account}{parts.path}{query}"

    @property
    def managed_account(self) -> str:
        """The catalog's managed storage account (``--managed-storage-account``)."""
        return self.catalog.managed_account

    def issue_sas(self, account: str, container: str, duration_seconds: float | None = None) -> str:
        """A SAS token for ``account/container`` as the SAS API would issue it (for tests)."""
        return self._sas.issue(account, container, duration_seconds)[0]


def _check_public_url(url: str | None) -> str | None:
    """``public_url`` without a trailing slash; a ValueError naming it unless it is ``http(s)://host[:port]``."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise ValueError(f"public_url: {url!r} must be an origin such as https://geocatalog.example (no path)")
    return f"{parts.scheme}://{parts.netloc}"
