"""Claim-check fetching: read item JSON from allow-listed hosts only, with a size cap and bounded time.

Policy (docs/messages.md "Claim check"): the URL must pass :func:`worker.adapters.hosts.item_url_problem` (allow-listed
host, https unless the host is named exactly, no internal addresses unless named exactly); a host name must not
resolve to an internal address unless named exactly; redirects are followed by hand (at most 3) and every hop is
checked again; the body is streamed and cut off at ``max_bytes``; the whole fetch has a deadline.
Error kinds: INVALID for anything the producer got wrong (not allowed, 4xx, not JSON, too large, not an item),
TRANSIENT for 5xx/408/429, network errors and timeouts.

Private blobs: URLs on a ``--storage-host`` host are read by :class:`BlobReader` through ``azure-storage-blob``,
authenticated with a token credential (``DefaultAzureCredential``: workload identity in production) or a SAS token
from the configured SAS providers. The same policy checks run first; redirects are not followed; the download is
a range of at most ``max_bytes + 1`` bytes. A 401/403 is TRANSIENT (``StorageAccessDenied``): it is the worker's
permission, not the producer's input, so the request is retried (and the circuit breaker holds intake) instead
of being dead-lettered.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
import structlog
import urllib3

from worker.adapters.hosts import HostAllowList, is_explicitly_allowed, item_url_problem
from worker.domain.contract import (
    DEFAULT_LIMITS,
    InvalidRequest,
    Limits,
    decode_json,
    validate_item,
)
from worker.domain.errors import InvalidError, TransientError, WorkerError
from worker.domain.secrets import redact

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 64 * 1024


class ItemFetchError(WorkerError):
    """A claim-check fetch failed; the subclass says whether retrying can help. The message holds no secret."""

    code = "ItemFetchFailed"


class ItemRejected(InvalidError, ItemFetchError):
    """The URL or the document behind it is not acceptable (host, size, not JSON, 4xx): the request is wrong."""

    code = "ItemFetchFailed"


class ItemUnavailable(TransientError, ItemFetchError):
    """The host failed in a way worth retrying (5xx, 429, network, storage refusing the worker's credential)."""

    code = "ItemFetchUnavailable"


def _invalid(url: str, reason: str, code: str = "ItemFetchFailed") -> ItemFetchError:
    return ItemRejected(f"{redact(url)}: {reason}", code=code)


def _transient(url: str, reason: str, retry_after: float | None = None) -> ItemFetchError:
    return ItemUnavailable(f"{redact(url)}: {reason}", retry_after=retry_after)


def _resolves_internal(host: str, port: int) -> bool:
    """True when a host name resolves to any non-global address (DNS rebinding / internal names)."""
    try:
        ipaddress.ip_address(host)
        return False  # IP literals were judged by item_url_problem already
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return False  # let the HTTP request report the resolution failure (transient)
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (mapped or ip).is_global:
            return True
    return False


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class BlobReader:
    """Reads blobs on ``hosts`` with ``azure-storage-blob``: ``credential`` (a token credential) or ``sas``
    (``(account, container) -> SAS token``). Thread-safe: a client per call over one shared, pooled transport."""

    def __init__(
        self,
        hosts: HostAllowList,
        *,
        credential: TokenCredential | None = None,
        sas: Callable[[str, str], str] | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (5, 30),
    ) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        if (credential is None) == (sas is None):
            raise ValueError("give exactly one of credential or sas")
        self.hosts = hosts
        self.credential = credential
        self.sas = sas
        self.timeout = timeout
        self._transport = RequestsTransport(session=session or requests.Session(), session_owner=False)

    def handles(self, url: str) -> bool:
        return bool(self.hosts) and self.hosts.allows_url(url)

    def _client(self, url: str) -> Any:
        from azure.core.credentials import AzureSasCredential
        from azure.storage.blob import BlobClient

        from worker.adapters.sas import blob_account_container

        credential: Any = self.credential
        if self.sas is not None:
            key = blob_account_container(url)
            if key is None:
                raise _invalid(url, "not a blob URL (no container)")
            credential = AzureSasCredential(self.sas(*key))
        return BlobClient.from_blob_url(
            url.split("?", 1)[0],
            credential=credential,
            transport=self._transport,
            permit_redirects=False,
            retry_total=1,
            connection_timeout=self.timeout[0],
            read_timeout=self.timeout[1],
        )

    def _call(self, url: str, call: Callable[[Any], Any]) -> Any:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return call(self._client(url))
        except ResourceNotFoundError:
            return None
        except ClientAuthenticationError as exc:  # a 401/403, or no token could be had at all
            what = f"HTTP {exc.status_code}" if exc.status_code else "no token"
            raise ItemUnavailable(
                f"{redact(url)}: storage refused the worker's credential ({what}): check the identity's "
                "role (Storage Blob Data Reader) or the SAS configuration",
                code="StorageAccessDenied",
            ) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            if status in (401, 403):
                raise ItemUnavailable(
                    f"{redact(url)}: storage refused the worker's credential (HTTP {status})",
                    code="StorageAccessDenied",
                ) from None
            if status in _TRANSIENT_STATUS or status >= 500:
                raise _transient(url, f"HTTP {status}") from None
            raise _invalid(url, f"HTTP {status}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(url, f"network error ({type(exc).__name__})") from None

    def read(self, url: str, max_bytes: int) -> bytes | None:
        """The blob's content (at most ``max_bytes``), or ``None`` when it does not exist."""

        def download(client: Any) -> bytes:
            return bytes(client.download_blob(offset=0, length=max_bytes + 1, max_concurrency=1).readall())

        data: bytes | None = self._call(url, download)
        if data is not None and len(data) > max_bytes:
            raise _invalid(url, f"item JSON is larger than the limit of {max_bytes} bytes", code="ItemTooLarge")
        return data

    def exists(self, url: str) -> bool:
        return bool(self._call(url, lambda client: client.get_blob_properties() is not None))


class ItemFetcher:
    """Fetches claim-check item JSON. Thread-safe if the session is (one pooled ``requests.Session`` is).

    With ``blob_reader``, URLs on its storage hosts are read through it (private blobs)."""

    def __init__(
        self,
        session: requests.Session,
        allow: HostAllowList,
        *,
        max_bytes: int = 1_048_576,
        timeout: tuple[float, float] = (5, 30),
        deadline: float = 60.0,
        resolve_check: bool = True,
        blob_reader: BlobReader | None = None,
    ) -> None:
        self.blob_reader = blob_reader
        self.session = session
        self.allow = allow
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.deadline = deadline  # seconds for the whole fetch, redirects included
        self.resolve_check = resolve_check

    def check_url(self, url: str) -> None:
        """Raise ItemFetchError (INVALID) if policy forbids fetching ``url``."""
        problem = item_url_problem(url, self.allow) if isinstance(url, str) else "not a string"
        if problem:
            raise _invalid(url if isinstance(url, str) else repr(url), problem, code="ItemUrlNotAllowed")
        if self.resolve_check:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if not is_explicitly_allowed(self.allow, host, parts.port) and _resolves_internal(host, port):
                raise _invalid(url, "host resolves to an internal address", code="ItemUrlNotAllowed")

    def fetch_bytes(self, url: str) -> bytes:
        """The raw item document (at most ``max_bytes``), after policy checks on every redirect hop."""
        if self.blob_reader is not None and self.blob_reader.handles(url):
            data = self.read_blob(url)
            if data is None:
                raise _invalid(url, "blob not found", code="ItemNotFound")
            return data
        return self._get(url)

    def read_blob(self, url: str) -> bytes | None:
        """Like :meth:`fetch_bytes`, but ``None`` when the document does not exist (404/410)."""
        if self.blob_reader is not None and self.blob_reader.handles(url):
            self.check_url(url)
            return self.blob_reader.read(url, self.max_bytes)
        try:
            return self._get(url)
        except ItemFetchError as exc:
            if exc.code == "ItemNotFound":
                return None
            raise

    def exists(self, url: str) -> bool:
        """Whether the document at ``url`` exists now (a HEAD, or blob properties on a storage host)."""
        self.check_url(url)
        if self.blob_reader is not None and self.blob_reader.handles(url):
            return self.blob_reader.exists(url)
        try:
            response = self.session.head(url, allow_redirects=False, timeout=self.timeout)
        except requests.RequestException as exc:
            raise _transient(url, f"network error ({type(exc).__name__})") from None
        with response:
            status = response.status_code
        if status in (404, 410):
            return False
        if status in _TRANSIENT_STATUS or status >= 500:
            raise _transient(url, f"HTTP {status}", _retry_after(response))
        if status >= 400:
            raise _invalid(url, f"HTTP {status}")
        return True

    def _get(self, url: str) -> bytes:
        started = time.monotonic()
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self.check_url(current)
            try:
                response = self.session.get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout,
                    headers={"Accept": "application/geo+json, application/json", "Accept-Encoding": "identity"},
                )
            except requests.Timeout:
                raise _transient(url, "timed out") from None
            except requests.RequestException as exc:
                raise _transient(url, f"network error ({type(exc).__name__})") from None
            with response:
                status = response.status_code
                if status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _invalid(url, f"HTTP {status} redirect without Location")
                    current = urljoin(current, location)
                    continue
                if status in _TRANSIENT_STATUS:
                    raise _transient(url, f"HTTP {status}", _retry_after(response))
                if status >= 500:
                    raise _transient(url, f"HTTP {status}")
                if status in (404, 410):
                    raise _invalid(url, f"HTTP {status}: not found", code="ItemNotFound")
                if status != 200:
                    raise _invalid(url, f"HTTP {status}")
                return self._read_capped(response, url, started)
        raise _invalid(url, f"more than {MAX_REDIRECTS} redirects")

    def _read_capped(self, response: requests.Response, url: str, started: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _invalid(url, f"item JSON is {declared} bytes, the limit is {self.max_bytes}", code="ItemTooLarge")
        chunks: list[bytes] = []
        total = 0
        raw = response.raw
        try:
            while True:
                # read1 returns what has arrived (one socket read), so a server that drips bytes cannot hold the
                # fetch past the deadline the way a fill-the-buffer read would.
                chunk = raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise _invalid(
                        url, f"item JSON is larger than the limit of {self.max_bytes} bytes", code="ItemTooLarge"
                    )
                if time.monotonic() - started > self.deadline:
                    raise _transient(url, f"took longer than {self.deadline:g} s")
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise _transient(url, f"network error while reading ({type(exc).__name__})") from None
        return b"".join(chunks)

    def fetch(self, url: str) -> dict:
        """The item document as a JSON object (not yet STAC-validated; see :meth:`fetch_item`)."""
        data = self.fetch_bytes(url)
        try:
            value: Any = decode_json(data, field="item")
        except InvalidRequest as exc:
            raise _invalid(url, exc.message, code="ItemNotJson") from None
        if not isinstance(value, dict):
            raise _invalid(url, "not a JSON object", code="ItemNotJson")
        return value

    def fetch_item(self, url: str, collection: str, path: str, limits: Limits = DEFAULT_LIMITS) -> dict:
        """Fetch and validate one claim-check item. ``path`` (e.g. ``item_urls[2]``) becomes the error field.

        Raises ItemFetchError (with ``field=path``) for fetch failures, InvalidRequest for a bad STAC item.
        """
        started = time.monotonic()
        try:
            data = self.fetch_bytes(url)
            try:
                value = decode_json(data, field=path)
            except InvalidRequest as exc:
                raise _invalid(url, exc.message, code="ItemNotJson") from None
        except ItemFetchError as exc:
            exc.field = path
            log.info("item_fetch_failed", field=path, kind=str(exc.kind), code=exc.code, error=str(exc))
            raise
        item = validate_item(value, collection, path, limits, encoded_size=len(data))
        log.debug(
            "item_fetched",
            field=path,
            item_id=item["id"],
            bytes=len(data),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return item
