"""GeoCatalog (Microsoft Planetary Computer Pro) REST client on ``requests``.

- Auth: an azure-identity credential (``get_token(scope)``, cached, refreshed ``token_refresh_margin`` seconds
  before expiry; on a 401 or 403 the token is refreshed once and the call retried, then ``AuthError``), or a
  static bearer token (the emulator).
- One pooled ``requests.Session``; (connect, read) timeouts on every call.
- Retries: own loop (see ``worker.adapters.geocatalog.retry`` for why not urllib3/tenacity) for 408/429/5xx
  and connection errors or
  timeouts, full-jitter exponential backoff, honouring ``Retry-After`` / ``retry-after-ms``; bounded attempts
  and total time; every attempt passes the ``RateLimiter`` and feeds its AIMD state.
  Note: a POST whose connection broke after sending may be retried and then create a second operation; the
  second one fails with ``ItemAlreadyExistsInCollection``, which upsert processing resolves with PUT.
- Typed errors (all ``WorkerError``): ``ValidationError`` (invalid), ``NotFound`` (permanent), ``Throttled``,
  ``ServerError``, ``NetworkError``, ``OperationTimeout``, ``Cancelled``, ``CredentialUnavailable`` (transient),
  ``AuthError`` (a ``ConfigurationFault``: the runtime holds intake instead of failing requests).
  Error text is passed through ``redact()`` and never contains the bearer token or a SAS query.
- Writes return the ``Operation`` of the 202 body; ``wait_for_operation`` polls it to a terminal status.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload
from urllib.parse import quote, urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter

from worker import __version__, tracing
from worker.adapters.geocatalog.retry import RetryPolicy, parse_retry_after
from worker.adapters.ratelimit import RateLimiter
from worker.domain.errors import Cancelled, ConfigurationFault, ErrorKind, FaultCause, WorkerError
from worker.domain.secrets import Secret, redact
from worker.observability.metrics import Metrics

__all__ = [
    "DEFAULT_API_VERSION",
    "SCOPE",
    "USER_AGENT",
    "AuthError",
    "Cancelled",
    "CredentialUnavailable",
    "GeoCatalogClient",
    "GeoCatalogError",
    "NetworkError",
    "NotFound",
    "Operation",
    "OperationTimeout",
    "RetryPolicy",
    "ServerError",
    "Throttled",
    "ValidationError",
    "auth_fault_cause",
    "bearer_challenge",
    "operation_finished",
    "scope_for",
]

log = structlog.get_logger(__name__)

DEFAULT_API_VERSION = "2026-04-15"
SCOPE = "https://geocatalog.spatio.azure.com/.default"
# GeoCatalog endpoints end in geocatalog.spatio.azure.<cloud suffix>, and the token audience follows the cloud:
# public Azure and Azure US Government (learn.microsoft.com, "Planetary Computer Pro: US Government cloud").
_SCOPES_BY_SUFFIX = {
    ".geocatalog.spatio.azure.com": SCOPE,
    ".geocatalog.spatio.azure.us": "https://geocatalog.spatio.azure.us/.default",
}
USER_AGENT = (
    f"geocatalog-worker/{__version__} python-requests/{requests.__version__} "
    f"Python/{platform.python_version()} ({platform.system()})"
)
# what Azure support asks for to find a call in the service's logs; logged on every failure and retry
SERVICE_REQUEST_ID_HEADERS = ("x-ms-request-id", "x-request-id", "x-azure-ref", "mise-correlation-id")


def scope_for(base_url: str) -> str | None:
    """The Entra token scope of a GeoCatalog endpoint, when its host names the cloud; else None."""
    host = (urlsplit(base_url).hostname or "").lower()
    return next((scope for suffix, scope in _SCOPES_BY_SUFFIX.items() if host.endswith(suffix)), None)


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def bearer_challenge(header: str) -> dict[str, str]:
    """The parameters of the ``Bearer`` challenge in a ``WWW-Authenticate`` value (RFC 6750 section 3), keys
    lower-cased: ``error``, ``error_description``, ``authorization_uri``, ``resource_id``, ..."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }


def auth_fault_cause(status: int, message: str, www_authenticate: str) -> FaultCause:
    """Which configuration is wrong, from a 401/403 that persisted after a token refresh.

    403: the identity is authenticated but lacks a role on the catalog. 401: the token is rejected; when the
    challenge's ``error_description`` or the error message speak of the audience (Entra-protected Azure APIs say
    "wrong audience" / "Audience validation failed"), the token was asked for the wrong scope."""
    if status == 403:
        return FaultCause.GEOCATALOG_FORBIDDEN
    challenge = bearer_challenge(www_authenticate)
    text = f"{challenge.get('error_description', '')} {message}".lower()
    if "audience" in text:
        return FaultCause.GEOCATALOG_AUDIENCE
    return FaultCause.GEOCATALOG_UNAUTHORIZED


def _service_ids(resp: requests.Response, client_request_id: str) -> dict[str, str]:
    ids = {"client_request_id": client_request_id}
    for name in SERVICE_REQUEST_ID_HEADERS:
        value = resp.headers.get(name)
        if value:
            ids[name.replace("-", "_")] = value[:200]
    return ids


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

ROUTE_ITEMS = "/stac/collections/{collectionId}/items"
ROUTE_ITEM = "/stac/collections/{collectionId}/items/{itemId}"
ROUTE_OPERATION = "/inma/operations/{operationId}"
ROUTE_OPERATIONS = "/inma/operations"
_JSON_BODY = {"Content-Type": "application/json"}  # the header of a body sent as encoded (``data``)
_LOG_FIELDS = {"collectionId": "collection", "itemId": "item_id", "operationId": "operation_id"}
ROUTE_COLLECTIONS = "/stac/collections"
ROUTE_SAS_TOKEN = "/sas/token/{collectionId}"  # noqa: S105 - a route, not a secret


# ---------------------------------------------------------------------------------------------- errors


class GeoCatalogError(WorkerError):
    """Any GeoCatalog call failure. ``status`` is the HTTP status when there was a response."""

    kind = ErrorKind.PERMANENT
    code = "GeoCatalogError"

    def __init__(
        self, message: str, *, status: int | None = None, request_ids: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        if request_ids:
            # the service's request ids go into the message, so they reach the failure result and its log line
            message = f"{message} [" + ", ".join(f"{k}={v}" for k, v in request_ids.items()) + "]"
        super().__init__(redact(message), **kwargs)
        self.status = status
        self.request_ids: dict[str, str] = dict(request_ids or {})


class ValidationError(GeoCatalogError):
    """400/413/422: the service rejected the request body; ``code`` is the service's error code."""

    kind = ErrorKind.INVALID
    code = "ValidationError"


class NotFound(GeoCatalogError):
    """404 (e.g. the collection does not exist)."""

    kind = ErrorKind.PERMANENT
    code = "NotFound"


class Conflict(GeoCatalogError):
    """409 on a write: the service refused it synchronously because the item (or collection) already exists.

    The live service has been recorded answering a duplicate item POST with 202 and a Failed operation
    (``ItemAlreadyExistsInCollection``); a synchronous 409 is handled the same way (``worker.processing.batching``
    probes the items: ours and identical → succeeded)."""

    kind = ErrorKind.PERMANENT
    code = "ItemAlreadyExistsInCollection"


class AuthError(GeoCatalogError, ConfigurationFault):
    """401 still after one token refresh (or with a static token), or 403: a configuration fault, never the
    request's. ``cause`` comes from what the service sends: the status and its ``WWW-Authenticate`` Bearer
    challenge (RFC 6750 ``error``/``error_description``; Entra-protected Azure APIs name the audience there and
    in the error message when the token was issued for another resource), never from an error code only the
    emulator is known to send."""

    kind = ErrorKind.CONFIGURATION
    code = "AuthenticationFailed"


class CredentialUnavailable(GeoCatalogError):
    """The credential could not produce a token (IMDS or the workload identity endpoint unreachable, ...)."""

    kind = ErrorKind.TRANSIENT
    code = "CredentialUnavailable"


class Throttled(GeoCatalogError):
    """429 still after the retries (or a Retry-After too long to wait in-process)."""

    kind = ErrorKind.TRANSIENT
    code = "Throttled"


class ServerError(GeoCatalogError):
    """5xx (or 408) still after the retries."""

    kind = ErrorKind.TRANSIENT
    code = "ServerError"


class NetworkError(GeoCatalogError):
    """Connection error or timeout still after the retries."""

    kind = ErrorKind.TRANSIENT
    code = "NetworkError"


class OperationTimeout(GeoCatalogError):
    """The operation was not terminal by the caller's deadline (it may still finish on the service)."""

    kind = ErrorKind.TRANSIENT
    code = "OperationTimeout"


# ---------------------------------------------------------------------------------------------- operation


@dataclass(frozen=True)
class Operation:
    id: str
    status: str  # Pending | Running | Succeeded | Failed | Canceled | Canceling
    type: str | None = None
    collection_id: str | None = None
    error_code: str | None = None  # from error.error.code
    error_message: str | None = None  # from error.error.message
    additional_information: Mapping[str, str] = field(default_factory=dict)
    retry_after: float | None = None  # the poll interval the service asked for, if any
    submitted_at: float | None = None  # time.monotonic() when this client received the 202 (additive)
    # the service's own timestamps (RFC 3339, as sent): creationTime always, finishTime once an item operation
    # is terminal (geocatalog_recordings.md items 14 and 21); parsed only when asked (``server_seconds``)
    creation_time: str | None = None
    finish_time: str | None = None

    @property
    def server_seconds(self) -> float | None:
        """How long the service took (``finishTime`` - ``creationTime``), when both are given and parse."""
        if self.creation_time is None or self.finish_time is None:
            return None
        try:
            seconds = datetime.fromisoformat(self.finish_time) - datetime.fromisoformat(self.creation_time)
        except ValueError:
            return None
        return max(0.0, seconds.total_seconds())

    @property
    def terminal(self) -> bool:
        return self.status.lower() in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status.lower() == "succeeded"

    @classmethod
    def from_json(
        cls, body: Mapping[str, Any], *, retry_after: float | None = None, submitted_at: float | None = None
    ) -> Operation:
        """Parse the service's Operation JSON (``error`` is doubly nested: ``error.error.{code,message}``)."""
        if not isinstance(body, Mapping) or not isinstance(body.get("id"), str) or not body.get("id"):
            raise GeoCatalogError("operation body has no string 'id'", code="MalformedOperation")
        status = body.get("status")
        if not isinstance(status, str) or not status:
            raise GeoCatalogError(f"operation {body['id']} has no string 'status'", code="MalformedOperation")
        code = message = None
        err = body.get("error")
        if isinstance(err, Mapping):
            inner = err.get("error") if isinstance(err.get("error"), Mapping) else err
            code = inner.get("code") if isinstance(inner.get("code"), str) else None
            message = inner.get("message") if isinstance(inner.get("message"), str) else None
        if code is None and status.lower() in ("failed", "canceled"):
            # Fall back to the last history entry's errorCode/errorMessage.
            history = body.get("statusHistory")
            if isinstance(history, list) and history and isinstance(history[-1], Mapping):
                last = history[-1]
                code = last.get("errorCode") if isinstance(last.get("errorCode"), str) else None
                message = message or (last.get("errorMessage") if isinstance(last.get("errorMessage"), str) else None)
        info = body.get("additionalInformation")
        additional = {str(k): str(v) for k, v in info.items()} if isinstance(info, Mapping) else {}
        return cls(
            id=body["id"],
            status=status,
            type=body.get("type") if isinstance(body.get("type"), str) else None,
            collection_id=body.get("collectionId") if isinstance(body.get("collectionId"), str) else None,
            error_code=code,
            error_message=redact(message) if message else message,
            additional_information=additional,
            retry_after=retry_after,
            submitted_at=submitted_at,
            creation_time=_text(body.get("creationTime")),
            finish_time=_text(body.get("finishTime")),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------- items


def encode_item(item: Mapping[str, Any]) -> bytes:
    """One item as it is POSTed: compact UTF-8 JSON (its length is what the batcher counts against its bytes)."""
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class EncodedItems(Sequence[dict]):
    """The items of one ItemCollection POST, each one's JSON encoded once (``encode_item``): the batcher encodes
    an item when it is submitted, counts its bytes, and the client sends those same bytes."""

    __slots__ = ("_encoded", "_items")

    def __init__(self, items: Sequence[dict], encoded: Sequence[bytes] | None = None) -> None:
        self._items = list(items)
        self._encoded = list(encoded) if encoded is not None else [encode_item(i) for i in self._items]
        if len(self._encoded) != len(self._items):
            raise ValueError("EncodedItems: one encoding per item")

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> dict: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...
    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        return self._items[index]

    def __iter__(self) -> Iterator[dict]:
        return iter(self._items)

    def body(self) -> bytes:
        """The ItemCollection (``{"type": "FeatureCollection", "features": [...]}``) as JSON bytes."""
        return b'{"type":"FeatureCollection","features":[' + b",".join(self._encoded) + b"]}"


# ---------------------------------------------------------------------------------------------- client


class _Auth:
    """Bearer token source: static, or an azure-identity credential with refresh before expiry."""

    def __init__(self, credential: Any, static_token: Secret | None, scope: str, margin: float) -> None:
        if credential is None and static_token is None:
            raise ValueError("GeoCatalogClient needs a credential or a static_token")
        self._credential = credential
        self._static = static_token
        self._scope = scope
        self._margin = margin
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._expires_on = 0.0
        self.refreshes = 0

    @property
    def refreshable(self) -> bool:
        return self._credential is not None

    def header(self, *, force_refresh: bool = False, stale: Secret | None = None) -> tuple[str, Secret]:
        if self._credential is None:
            assert self._static is not None
            return "Bearer " + self._static.reveal(), self._static
        with self._lock:
            now = time.time()
            lifetime_margin = self._margin
            need = self._token is None or now >= self._expires_on - lifetime_margin
            # A forced refresh after a 401 only if nobody refreshed since that request took its token.
            if force_refresh and (stale is None or self._token == stale):
                need = True
            if need:
                try:
                    access = self._credential.get_token(self._scope)
                except Exception as exc:  # azure-identity raises ClientAuthenticationError and friends
                    raise CredentialUnavailable(
                        f"could not get an Entra token for {self._scope}: {type(exc).__name__}: {exc}"
                    ) from None
                self._token = Secret(access.token)
                self._expires_on = float(access.expires_on)
                self.refreshes += 1
            assert self._token is not None
            return "Bearer " + self._token.reveal(), self._token


def _error_from_body(resp: requests.Response) -> tuple[str | None, str]:
    """(code, message) from the Azure error envelope ``{"error": {"code", "message"}}`` or the header."""
    code = resp.headers.get("x-ms-error-code")
    message = ""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            if isinstance(err.get("error"), Mapping):  # tolerate the doubly nested shape too
                err = err["error"]
            code = err.get("code") if isinstance(err.get("code"), str) else code
            message = err.get("message") if isinstance(err.get("message"), str) else ""
            details = err.get("details")
            if isinstance(details, list):
                parts = [
                    f"{d.get('target') or d.get('code')}: {d.get('message')}"
                    for d in details[:5]
                    if isinstance(d, Mapping)
                ]
                if parts:
                    message = f"{message} ({'; '.join(parts)})"
            target = err.get("target")
            if isinstance(target, str) and target and target not in message:
                message = f"{target}: {message}"
    if not message:
        message = (resp.text or resp.reason or "").strip()[:500]
    return code, message[:2000]


class GeoCatalogClient:
    def __init__(
        self,
        base_url: str,
        *,
        credential: Any = None,
        static_token: Secret | None = None,
        api_version: str = DEFAULT_API_VERSION,
        pool_size: int = 64,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, immutable default
        rate_limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        scope: str = SCOPE,
        token_refresh_margin: float = 300.0,
        poll_initial: float = 1.0,  # 2 polls for a 2 s operation, 4 for 5 s (benchmarks: docs/benchmarks.md)
        poll_factor: float = 1.2,
        poll_max: float = 5.0,
        poll_max_rate: float = 1.2,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(static_token, str):
            static_token = Secret(static_token)
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"GeoCatalog base_url must be an http(s) URL, got {redact(base_url)!r}")
        self.api_version = api_version
        self.timeout = timeout
        self.retry = retry
        self.rate_limiter = rate_limiter
        self.metrics = metrics
        self.poll_initial = poll_initial
        self.poll_factor = poll_factor
        self.poll_max = poll_max
        self.poll_max_rate = poll_max_rate
        self._auth = _Auth(credential, static_token, scope, token_refresh_margin)
        self._rng = rng or random.Random()
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> GeoCatalogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ core

    def _url(self, route: str, **params: str) -> str:
        path = route.format(**{k: quote(v, safe="") for k, v in params.items()})
        return self.base_url + path

    def request(
        self,
        method: str,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        ok: Sequence[int] = (200, 201, 202, 204),
        allow_404: bool = False,
        cancel: threading.Event | None = None,
    ) -> requests.Response:
        """One logical call: rate limit, auth, retries; returns the response or raises a ``GeoCatalogError``.

        ``route`` is the template (also the metrics label); ``path_params`` fill it (URL-quoted). The body is
        ``json`` (encoded by ``requests``) or ``data``, JSON already encoded.
        """
        url = self._url(route, **(path_params or {}))
        query = {"api-version": self.api_version, **(params or {})}
        policy = self.retry
        started = time.monotonic()
        deadline = started + policy.total_timeout
        attempt = 0
        auth_refreshed = False
        ctx = {"method": method, "route": route, **{_LOG_FIELDS.get(k, k): v for k, v in (path_params or {}).items()}}
        where = f"{method} {route}" + (
            " (" + ", ".join(f"{k}={v}" for k, v in (path_params or {}).items()) + ")" if path_params else ""
        )
        while True:
            attempt += 1
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{where} cancelled")
            if self.rate_limiter is not None:
                self.rate_limiter.acquire(cancel)
            header, token_used = self._auth.header()
            client_request_id = str(uuid.uuid4())
            t0 = time.perf_counter()
            error: GeoCatalogError | None = None
            retry_after: float | None = None
            try:
                with tracing.http_span(method, route, url, attempt) as call:
                    resp = self.session.request(
                        method,
                        url,
                        params=query,
                        json=json,
                        data=data,
                        headers={
                            "Authorization": header,
                            "Accept": "application/json",
                            **(_JSON_BODY if data is not None else {}),
                            "User-Agent": USER_AGENT,
                            "x-ms-client-request-id": client_request_id,
                            **call.headers,  # traceparent while tracing
                        },
                        timeout=self.timeout,
                    )
                    call.response(resp.status_code, functools.partial(_service_ids, resp, client_request_id))
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._observe(method, route, "error", t0)
                error = NetworkError(
                    f"{where}: {type(exc).__name__}",
                    code="Timeout" if isinstance(exc, requests.Timeout) else "ConnectionError",
                    request_ids={"client_request_id": client_request_id},
                )
                log.warning(
                    "geocatalog_network_error",
                    attempt=attempt,
                    error=type(exc).__name__,
                    client_request_id=client_request_id,
                    **ctx,
                )
            except requests.RequestException as exc:
                self._observe(method, route, "error", t0)
                raise GeoCatalogError(f"{where}: {type(exc).__name__}: {exc}", code="RequestError") from None
            else:
                status = resp.status_code
                self._observe(method, route, str(status), t0)
                if status in ok or (allow_404 and status == 404):
                    if self.rate_limiter is not None:
                        self.rate_limiter.on_success()
                    return resp
                retry_after = parse_retry_after(resp.headers)
                if status == 429:
                    if self.rate_limiter is not None:
                        self.rate_limiter.on_throttle(retry_after)
                elif self.rate_limiter is not None:
                    self.rate_limiter.on_success()
                code, message = _error_from_body(resp)
                ids = _service_ids(resp, client_request_id)
                if status in (401, 403) and self._auth.refreshable and not auth_refreshed:
                    auth_refreshed = True
                    log.info("geocatalog_token_refresh", status=status, attempt=attempt, **ids, **ctx)
                    self._auth.header(force_refresh=True, stale=token_used)
                    continue
                error = self._status_error(where, status, code, message, retry_after, ids)
                if isinstance(error, AuthError):
                    error.cause = auth_fault_cause(status, message, resp.headers.get("WWW-Authenticate", ""))
                    expected = bearer_challenge(resp.headers.get("WWW-Authenticate", "")).get("resource_id")
                    if expected and expected not in error.message:
                        error.message = redact(f"{error.message} (the service expects tokens for {expected})")
                if status not in policy.statuses:
                    log.warning("geocatalog_call_failed", status=status, code=error.code, **ids, **ctx)
                    raise error
            # retryable failure
            now = time.monotonic()
            delay = retry_after if retry_after is not None else policy.backoff(attempt, self._rng)
            if attempt >= policy.max_attempts:
                error.message = redact(f"{error.message} (gave up after {attempt} attempts)")
                raise error
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise error
            if now + delay > deadline:
                error.message = redact(f"{error.message} (gave up after {attempt} attempts, {now - started:.1f}s)")
                if error.retry_after is None:
                    error.retry_after = delay
                raise error
            log.info(
                "geocatalog_retry",
                attempt=attempt,
                status=error.status,
                code=error.code,
                delay=round(delay, 3),
                **error.request_ids,
                **ctx,
            )
            if delay > 0:
                if cancel is not None:
                    if cancel.wait(delay):
                        raise Cancelled(f"{where} cancelled while backing off")
                else:
                    time.sleep(delay)

    @staticmethod
    def _status_error(
        where: str,
        status: int,
        code: str | None,
        message: str,
        retry_after: float | None,
        request_ids: Mapping[str, str] | None = None,
    ) -> GeoCatalogError:
        text = f"{where} returned {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        cls: type[GeoCatalogError]
        if status in (400, 413, 422):
            cls = ValidationError
        elif status == 404:
            cls = NotFound
        elif status == 409:
            cls = Conflict
        elif status in (401, 403):
            cls = AuthError
        elif status == 429:
            cls = Throttled
        elif status >= 500 or status == 408:
            cls = ServerError
        else:
            return GeoCatalogError(
                text, status=status, code=code or f"HTTP{status}", retry_after=retry_after, request_ids=request_ids
            )
        return cls(text, status=status, code=code or cls.code, retry_after=retry_after, request_ids=request_ids)

    def _observe(self, method: str, route: str, status: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.geocatalog_requests.labels(method, route, status).observe(time.perf_counter() - t0)

    def _operation_from_write(self, resp: requests.Response, cancel: threading.Event | None) -> Operation:
        submitted = time.monotonic()
        retry_after = parse_retry_after(resp.headers)
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = None
        if isinstance(body, Mapping) and body.get("id"):
            return Operation.from_json(body, retry_after=retry_after, submitted_at=submitted)
        location = resp.headers.get("operation-location") or resp.headers.get("location")
        if not location:
            raise ServerError(
                f"write returned {resp.status_code} without an operation body or operation-location",
                status=resp.status_code,
                code="MissingOperation",
            )
        # Never follow the header to another host with our bearer token: take the id, GET it on our base URL.
        op_id = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
        if not op_id:
            raise ServerError(f"unusable operation-location {redact(location)!r}", code="MissingOperation")
        op = self.get_operation(op_id, cancel=cancel)
        return dataclasses.replace(op, submitted_at=submitted)

    # ------------------------------------------------------------------------------------------ API

    def create_items(
        self, collection: str, items: EncodedItems | Sequence[dict] | dict, *, cancel: threading.Event | None = None
    ) -> Operation:
        """POST one ItemCollection (or the bare Item when given a dict) → the 202's Operation. ``EncodedItems``
        (the batcher's) go as they were encoded; other items are encoded here, the same way."""
        if isinstance(items, Mapping):
            data = encode_item(items)
        else:
            data = (items if isinstance(items, EncodedItems) else EncodedItems(items)).body()
        resp = self.request(
            "POST", ROUTE_ITEMS, path_params={"collectionId": collection}, data=data, ok=(200, 201, 202), cancel=cancel
        )
        return self._operation_from_write(resp, cancel)

    def replace_item(self, collection: str, item: dict, *, cancel: threading.Event | None = None) -> Operation:
        """PUT the full item (create-or-replace) → the 202's Operation."""
        item_id = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(item_id, str) or not item_id:
            raise ValidationError("item has no string 'id'", field="id", code="InvalidItem")
        resp = self.request(
            "PUT",
            ROUTE_ITEM,
            path_params={"collectionId": collection, "itemId": item_id},
            json=item,
            ok=(200, 201, 202),
            cancel=cancel,
        )
        return self._operation_from_write(resp, cancel)

    def delete_item(self, collection: str, item_id: str, *, cancel: threading.Event | None = None) -> Operation:
        """DELETE one item → the 202's Operation (a missing item ends Failed with NoRecordsToDelete)."""
        resp = self.request(
            "DELETE",
            ROUTE_ITEM,
            path_params={"collectionId": collection, "itemId": item_id},
            ok=(200, 202),
            cancel=cancel,
        )
        return self._operation_from_write(resp, cancel)

    def get_item(self, collection: str, item_id: str, *, cancel: threading.Event | None = None) -> dict | None:
        """The item JSON, or None on 404."""
        resp = self.request(
            "GET",
            ROUTE_ITEM,
            path_params={"collectionId": collection, "itemId": item_id},
            ok=(200,),
            allow_404=True,
            cancel=cancel,
        )
        if resp.status_code == 404:
            return None
        return self._json(resp, "item")

    def list_collections(self, *, cancel: threading.Event | None = None) -> list[dict]:
        """``GET /stac/collections`` → the collections (the start-up preflight's read: needs only a reader role)."""
        body = self._json(self.request("GET", ROUTE_COLLECTIONS, ok=(200,), cancel=cancel), "collections")
        found = body.get("collections") if isinstance(body, Mapping) else None
        return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []

    def get_operation(self, operation_id: str, *, cancel: threading.Event | None = None) -> Operation:
        resp = self.request("GET", ROUTE_OPERATION, path_params={"operationId": operation_id}, ok=(200,), cancel=cancel)
        return Operation.from_json(self._json(resp, "operation"), retry_after=parse_retry_after(resp.headers))

    def list_operations(
        self, collection: str, *, top: int, skip: int = 0, cancel: threading.Event | None = None
    ) -> tuple[list[Operation], bool]:
        """``GET /inma/operations?collectionId=&$top=&$skip=``: one page, newest first → (operations, more pages).

        Entries that do not parse as an Operation are skipped (the caller reads those by id)."""
        params = {"collectionId": collection, "$top": top, **({"$skip": skip} if skip else {})}
        resp = self.request("GET", ROUTE_OPERATIONS, params=params, ok=(200,), cancel=cancel)
        body = self._json(resp, "operation list")
        entries = body.get("value") if isinstance(body, Mapping) else None
        if not isinstance(entries, list):
            raise ServerError("operation list has no 'value' array", status=resp.status_code, code="BadResponse")
        ops = []
        for entry in entries:
            try:
                ops.append(Operation.from_json(entry))
            except GeoCatalogError:
                continue
        return ops, bool(body.get("nextLink"))

    def get_collection_sas_token(
        self, collection: str, *, duration_minutes: int | None = None, cancel: threading.Event | None = None
    ) -> dict:
        """``GET /sas/token/{collectionId}`` → ``{"msft:expiry", "token"}`` (the token is a secret: wrap it)."""
        params = {"duration": duration_minutes} if duration_minutes else None
        resp = self.request(
            "GET", ROUTE_SAS_TOKEN, path_params={"collectionId": collection}, params=params, ok=(200,), cancel=cancel
        )
        return self._json(resp, "SAS token")

    @staticmethod
    def _json(resp: requests.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ServerError(
                f"{what} response is not JSON (status {resp.status_code})", status=resp.status_code, code="BadResponse"
            ) from None

    def wait_for_operation(self, op: Operation, *, deadline: float, cancel: threading.Event | None = None) -> Operation:
        """Poll ``op`` until terminal; ``deadline`` is a ``time.monotonic()`` value.

        Interval: the service's Retry-After when given, else ``poll_initial`` growing x ``poll_factor`` up to
        ``poll_max``; never more than 1 + ``poll_max_rate`` * elapsed GETs. Raises ``Cancelled`` when
        ``cancel`` is set, ``OperationTimeout`` past the deadline (after a last poll at the deadline).
        """
        cancel = cancel or threading.Event()
        started = time.monotonic()
        submitted = op.submitted_at if op.submitted_at is not None else started
        interval = self.poll_initial
        polls = 0
        while not op.terminal:
            if cancel.is_set():
                raise Cancelled(f"cancelled while waiting for operation {op.id}")
            now = time.monotonic()
            if now >= deadline:
                raise OperationTimeout(
                    f"operation {op.id} still {op.status} after {now - submitted:.1f}s ({polls} polls)",
                    retry_after=max(self.poll_initial, interval),
                )
            delay = op.retry_after if op.retry_after is not None else interval
            next_at = max(now + max(delay, 0.0), started + polls / self.poll_max_rate)
            next_at = min(next_at, deadline)
            if cancel.wait(max(0.0, next_at - now)):
                raise Cancelled(f"cancelled while waiting for operation {op.id}")
            previous = op
            op = self.get_operation(op.id, cancel=cancel)
            polls += 1
            interval = min(self.poll_max, interval * self.poll_factor)
            if op.status != previous.status:
                log.debug("geocatalog_operation_status", operation_id=op.id, status=op.status, polls=polls)
            if not op.terminal and time.monotonic() >= deadline:
                raise OperationTimeout(
                    f"operation {op.id} still {op.status} after {time.monotonic() - submitted:.1f}s ({polls} polls)",
                    retry_after=interval,
                )
        return operation_finished(op, submitted, polls, self.metrics)


def operation_finished(op: Operation, submitted: float, polls: int, metrics: Metrics | None) -> Operation:
    """``op`` (terminal) stamped with ``submitted``; its duration observed and logged."""
    op = dataclasses.replace(op, submitted_at=submitted)
    seconds = time.monotonic() - submitted
    if metrics is not None:
        metrics.operation_duration.labels(op.type or "unknown", op.status).observe(seconds)
    log.info(
        "geocatalog_operation_finished",
        operation_id=op.id,
        type=op.type,
        status=op.status,
        error_code=op.error_code,
        polls=polls,
        seconds=round(seconds, 3),
    )
    return op
