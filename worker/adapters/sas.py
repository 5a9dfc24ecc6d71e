"""SAS signing of STAC asset hrefs: token providers, a single-flight token cache, href rewriting.

Why not the ``planetary-computer`` package? Its ``sign()`` appends the token with ``?`` even when the href
already has a query (``x.tif?foo=1?se=...``), skips any href with ``st``/``se``/``sp`` as "already signed"
(so an expired SAS is never replaced), signs only ``*.blob.core.windows.net`` with no allow-list, keeps a
module-global cache with a fixed 60 s margin and no single flight, and always calls the open PC API. This module
does the same job with those points fixed; the HTTP parts use ``requests`` + urllib3's ``Retry``.

Rules:
- only hrefs whose host is on the ``HostAllowList`` are signed; everything else is returned unchanged and no
  provider is called for it;
- the token is looked up by (account, container): account = first host label (or, for an IP/localhost host,
  Azurite-style, the first path segment), container = the next path segment;
- an existing SAS query (``sig``, ``se``, ``sp``, ``sv``, ``sr``, ``st``, ``skoid``, ...) is replaced, other query
  parameters are kept byte-for-byte and in order;
- hosts of GeoCatalog's managed storage (``HrefSigner(collection_hosts=...)``) get the collection-level token of
  the item's collection (``GeoCatalogSasProvider`` via ``CollectionTokenCache``), and no other host ever does;
- tokens are ``Secret``s; ``SigningError`` text never contains one.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from worker.adapters.hosts import HostAllowList
from worker.domain.errors import ConfigurationFault, ErrorKind, PermanentError, TransientError, WorkerError
from worker.domain.secrets import Secret, redact
from worker.domain.stored import is_managed_href, strip_sas
from worker.observability.metrics import Metrics

log = structlog.get_logger(__name__)

DEFAULT_PC_SAS_BASE = "https://planetarycomputer.microsoft.com"


class SigningError(WorkerError):
    """A SAS token could not be obtained; the subclass says whether retrying can help. Never holds a token."""

    code = "SigningError"


class SasUnavailable(TransientError, SigningError):
    """The token source failed in a way worth retrying: 429/5xx, network, a malformed or already-expired answer."""

    code = "SasUnavailable"


class SasDenied(PermanentError, SigningError):
    """No token can be had for this storage: the source refused (401/403/404) or none is configured."""

    code = "SasDenied"


@dataclass(frozen=True)
class SasToken:
    token: Secret  # the SAS query string without a leading '?'
    expires_at: datetime  # timezone-aware UTC
    fetched_at: datetime | None = None

    def __repr__(self) -> str:
        return f"SasToken(token=***, expires_at={self.expires_at.isoformat()})"


class TokenProvider(Protocol):
    def fetch(self, account: str, container: str) -> SasToken: ...


# ---------------------------------------------------------------------------------------------- helpers


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_expiry(value: Any) -> datetime:
    """``msft:expiry`` (RFC 3339, ``Z`` or offset, any fraction digits) → aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("missing msft:expiry")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.11 fromisoformat accepts 1-6 fraction digits; the service may send 7 (.NET ticks).
    if "." in text:
        head, _, tail = text.partition(".")
        digits = ""
        while tail and tail[0].isdigit():
            digits, tail = digits + tail[0], tail[1:]
        text = f"{head}.{(digits + '000000')[:6]}{tail}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _token_from_json(body: Any, what: str, fetched_at: datetime) -> SasToken:
    if not isinstance(body, Mapping) or not isinstance(body.get("token"), str) or not body["token"].strip():
        raise SasUnavailable(f"{what}: response has no string 'token'", code="BadSasResponse")
    try:
        expires = parse_expiry(body.get("msft:expiry"))
    except ValueError as exc:
        raise SasUnavailable(f"{what}: bad 'msft:expiry' ({exc})", code="BadSasResponse") from None
    return SasToken(Secret(body["token"].strip().lstrip("?")), expires, fetched_at)


def _classify_http(status: int, what: str) -> SigningError:
    if status == 429 or status >= 500:
        return SasUnavailable(f"{what}: HTTP {status}", code=f"SasHttp{status}")
    return SasDenied(f"{what}: HTTP {status}", code=f"SasHttp{status}")


def _default_session(pool_size: int = 16, retries: int = 2) -> requests.Session:
    session = requests.Session()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.3,
        backoff_jitter=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        retry_after_max=10,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _expiry_from_sas(token: str) -> datetime | None:
    values = parse_qs(token.lstrip("?")).get("se")
    if not values:
        return None
    try:
        return parse_expiry(values[0])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- providers


class PlanetaryComputerSasProvider:
    """The Planetary Computer SAS API: ``GET {base}/api/sas/v1/token/{account}/{container}``.

    ``base_url`` is the site root (``https://planetarycomputer.microsoft.com``); a URL ending in ``/api/sas/v1``
    or ``/api/sas/v1/token`` is accepted as well. ``session`` defaults to one with urllib3 retries (2, GET only,
    429/5xx and connection errors, honouring Retry-After up to 10 s).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_PC_SAS_BASE,
        session: requests.Session | None = None,
        subscription_key: Secret | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 15.0),
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        base = base_url.rstrip("/")
        # Accept the planetary-computer package's style too (``.../api/sas/v1/token``, PC_SDK_SAS_URL).
        for suffix in ("/api/sas/v1/token", "/api/sas/v1"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        self.base_url = base
        self.session = session or _default_session()
        if isinstance(subscription_key, str):
            subscription_key = Secret(subscription_key)
        self.subscription_key = subscription_key
        self.timeout = timeout
        self._now = now

    def fetch(self, account: str, container: str) -> SasToken:
        what = f"SAS token for {account}/{container} from {urlsplit(self.base_url).netloc}"
        url = f"{self.base_url}/api/sas/v1/token/{quote(account, safe='')}/{quote(container, safe='')}"
        headers = {"Accept": "application/json"}
        if self.subscription_key:
            headers["Ocp-Apim-Subscription-Key"] = self.subscription_key.reveal()
        try:
            resp = self.session.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SasUnavailable(f"{what}: {type(exc).__name__}", code="SasNetworkError") from None
        if resp.status_code != 200:
            raise _classify_http(resp.status_code, what)
        try:
            body = resp.json()
        except ValueError:
            raise SasUnavailable(f"{what}: response is not JSON", code="BadSasResponse") from None
        return _token_from_json(body, what, self._now())


class GeoCatalogSasProvider:
    """GeoCatalog's ``GET /sas/token/{collectionId}``: a token for the catalog's managed storage container.

    Uses a ``GeoCatalogClient`` (its auth, retries, rate limiter); pass ``client`` to share one, or the base URL
    and a credential / static token to build one. Route only that storage's account/container to this
    provider (``RoutingProvider``): the token is issued for it alone.
    """

    def __init__(
        self,
        geocatalog_base_url: str | None,
        collection: str,
        credential: Any = None,
        static_token: Secret | None = None,
        *,
        client: Any = None,
        api_version: str | None = None,
        duration_minutes: int | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if client is None:
            from worker.adapters.geocatalog.client import DEFAULT_API_VERSION, GeoCatalogClient

            if geocatalog_base_url is None:
                raise ValueError("GeoCatalogSasProvider needs geocatalog_base_url or client")
            client = GeoCatalogClient(
                geocatalog_base_url,
                credential=credential,
                static_token=static_token,
                api_version=api_version or DEFAULT_API_VERSION,
                pool_size=4,
            )
        self.client = client
        self.collection = collection
        self.duration_minutes = duration_minutes
        self._now = now

    def fetch(self, account: str, container: str) -> SasToken:
        from worker.adapters.geocatalog.client import GeoCatalogError

        what = f"SAS token for collection {self.collection} ({account}/{container}) from GeoCatalog"
        try:
            body = self.client.get_collection_sas_token(self.collection, duration_minutes=self.duration_minutes)
        except ConfigurationFault:
            raise  # 401/403 from the catalog: the deployment lacks a role, hold intake like any other call
        except GeoCatalogError as exc:
            cls = SasUnavailable if exc.kind is ErrorKind.TRANSIENT else SasDenied
            raise cls(f"{what}: {exc}", code=f"Sas{exc.code}", retry_after=exc.retry_after) from None
        return _token_from_json(body, what, self._now())


class StaticSasProvider:
    """Tokens from configuration: keys ``"account/container"`` (or ``"account/*"`` for every container).

    The expiry is the token's ``se`` when present, else ``default_lifetime`` from now (re-read then).
    """

    def __init__(
        self,
        tokens: Mapping[str, Secret | str],
        *,
        default_lifetime: timedelta = timedelta(hours=24),
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._tokens: dict[str, Secret] = {}
        for key, value in tokens.items():
            account, sep, container = key.strip().strip("/").partition("/")
            if not sep or not account or not container:
                raise ValueError(f"static SAS key {key!r} must be 'account/container' or 'account/*'")
            secret = value if isinstance(value, Secret) else Secret(value)
            self._tokens[f"{account.lower()}/{container}"] = Secret(secret.reveal().strip().lstrip("?"))
        self.default_lifetime = default_lifetime
        self._now = now

    def fetch(self, account: str, container: str) -> SasToken:
        token = self._tokens.get(f"{account.lower()}/{container}") or self._tokens.get(f"{account.lower()}/*")
        if token is None:
            raise SasDenied(f"no static SAS token configured for {account}/{container}", code="SasTokenNotConfigured")
        now = self._now()
        expires = _expiry_from_sas(token.reveal()) or now + self.default_lifetime
        return SasToken(token, expires, now)


class RoutingProvider:
    """Pick a provider per ``"account/container"`` / ``"account/*"`` key, else ``default`` (may be None)."""

    def __init__(self, routes: Mapping[str, TokenProvider], default: TokenProvider | None = None) -> None:
        self._routes = {k.strip().strip("/").lower(): v for k, v in routes.items()}
        self._default = default

    def fetch(self, account: str, container: str) -> SasToken:
        provider = (
            self._routes.get(f"{account.lower()}/{container.lower()}")
            or self._routes.get(f"{account.lower()}/*")
            or self._default
        )
        if provider is None:
            raise SasDenied(f"no SAS provider configured for {account}/{container}", code="SasTokenNotConfigured")
        return provider.fetch(account, container)


# ---------------------------------------------------------------------------------------------- cache


@dataclass
class _Entry:
    token: SasToken
    refresh_at: datetime


class TokenCache:
    """Tokens per (account, container), refreshed ``margin`` (capped at half the lifetime) before expiry.

    Single flight: concurrent ``get`` calls for a key that needs a fetch wait for one provider call. A failed
    fetch raises ``SigningError`` to every waiter and leaves nothing cached, so the next ``get`` tries again.
    Metrics: ``sas_cache{result="hit"|"miss"|"wait"|"error"}`` (wait = served by another thread's fetch).
    """

    def __init__(
        self,
        provider: TokenProvider,
        *,
        margin: timedelta | float = timedelta(minutes=5),
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.provider = provider
        self.margin = margin if isinstance(margin, timedelta) else timedelta(seconds=margin)
        self.metrics = metrics
        self._now = now
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._inflight: dict[tuple[str, str], Future[SasToken]] = {}
        self.fetches = 0
        # the labelled counters, resolved once: ``labels()`` costs more than the lookup it counts (several per item)
        self._counters = (
            {result: metrics.sas_cache.labels(result) for result in ("hit", "miss", "wait", "error")}
            if metrics is not None
            else {}
        )

    def _record(self, result: str) -> None:
        counter = self._counters.get(result)
        if counter is not None:
            counter.inc()

    def refresh_at(self, token: SasToken, fetched_at: datetime) -> datetime:
        lifetime = token.expires_at - fetched_at
        margin = min(self.margin, max(lifetime / 2, timedelta(0)))
        return token.expires_at - margin

    def get(self, account: str, container: str) -> SasToken:
        key = (account.lower(), container)
        with self._lock:
            entry = self._entries.get(key)
            hit = entry is not None and self._now() < entry.refresh_at
            if not hit:
                future = self._inflight.get(key)
                leader = future is None
                if leader:
                    future = Future()
                    self._inflight[key] = future
        if hit:
            assert entry is not None
            self._record("hit")
            return entry.token
        assert future is not None
        if not leader:
            self._record("wait")
            try:
                return future.result()
            except WorkerError as exc:  # a fresh exception per waiter: tracebacks are not shared across threads
                raise copy.copy(exc) from None
        self._record("miss")
        try:
            token = self._fetch(account, container)
        except WorkerError as exc:
            self._record("error")
            with self._lock:
                self._inflight.pop(key, None)
            future.set_exception(exc)
            raise
        with self._lock:
            fetched = token.fetched_at or self._now()
            self._entries[key] = _Entry(token, self.refresh_at(token, fetched))
            self._inflight.pop(key, None)
        future.set_result(token)
        return token

    def _fetch(self, account: str, container: str) -> SasToken:
        self.fetches += 1
        try:
            token = self.provider.fetch(account, container)
        except (SigningError, ConfigurationFault):
            raise
        except Exception as exc:  # a provider bug must not leave waiters hanging, nor leak a token in text
            raise SasUnavailable(
                redact(f"SAS token for {account}/{container}: {type(exc).__name__}: {exc}"), code="SasProviderError"
            ) from None
        if token.expires_at <= self._now():
            raise SasUnavailable(
                f"SAS token for {account}/{container} is already expired ({token.expires_at.isoformat()})",
                code="SasTokenExpired",
            )
        log.info("sas_token_fetched", account=account, container=container, expires_at=token.expires_at.isoformat())
        return token


class CollectionTokenCache:
    """Tokens that depend on the STAC collection (GeoCatalog's ``/sas/token/{collectionId}``): one ``TokenCache``
    per collection over ``factory(collection)``, so each (collection, account, container) has its own entry with
    the ``TokenCache`` semantics (single flight, refresh ``margin`` before expiry, nothing cached on failure).
    """

    def __init__(
        self,
        factory: Callable[[str], TokenProvider],
        *,
        margin: timedelta | float = timedelta(minutes=5),
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.factory = factory
        self.margin = margin
        self.metrics = metrics
        self._now = now
        self._lock = threading.Lock()
        self._caches: dict[str, TokenCache] = {}

    def cache_for(self, collection: str) -> TokenCache:
        with self._lock:
            cache = self._caches.get(collection)
            if cache is None:
                cache = TokenCache(self.factory(collection), margin=self.margin, metrics=self.metrics, now=self._now)
                self._caches[collection] = cache
            return cache

    def get(self, collection: str, account: str, container: str) -> SasToken:
        return self.cache_for(collection).get(account, container)

    @property
    def fetches(self) -> int:
        with self._lock:
            return sum(cache.fetches for cache in self._caches.values())


# ---------------------------------------------------------------------------------------------- signer


@functools.lru_cache(maxsize=1024)
def _is_ip_or_localhost(host: str) -> bool:
    """Cached: asked for every signed href, and ``ip_address`` raising for a host name costs ~5 µs each time."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def blob_account_container(href: str) -> tuple[str, str] | None:
    """(account, container) of a blob URL, or None when it has no container segment.

    ``https://acct.blob.core.windows.net/container/path`` → (acct, container); an IP or localhost host uses the
    Azurite path style ``http://127.0.0.1:10000/acct/container/path``.
    """
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if _is_ip_or_localhost(host):
        if len(segments) < 2:
            return None
        return segments[0], segments[1]
    if not segments:
        return None
    account = host.split(".", 1)[0]
    return (account, segments[0]) if account else None


def replace_sas_query(href: str, token: str) -> str:
    """``href`` with every SAS parameter removed and ``token`` added; other parameters kept as they were."""
    parts = urlsplit(strip_sas(href))
    token = token.strip().lstrip("?")
    query = "&".join(q for q in (parts.query, token) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class ManagedStorage:
    """The hosts of a catalog's managed storage, learned from the catalog itself, per collection.

    The live service stores every asset in its own storage account (``worker.domain.stored``) and re-fetches the
    assets on every update, so resubmitting an item as a GET returned it fails ``PublicAccessRestricted`` unless its
    managed hrefs carry the collection's SAS token. The account's name is the service's choice; an href is only
    trusted as managed when its path is the managed copy of that very asset AND its host is one the catalog
    itself reported for the collection: ``read_item(collection, item_id)`` (a GET through the GeoCatalog client)
    is called once per collection until a host is learned. A request naming some other account with a
    look-alike path never receives the catalog's token.

    A read that teaches nothing (the item is not stored, or not with managed hrefs) is remembered for
    ``retry_seconds`` per (collection, item), so resubmissions of such an item cost one GET per that interval, not
    one per request; at most ``max_misses`` are remembered (the oldest are forgotten first).
    """

    def __init__(
        self,
        read_item: Callable[[str, str], dict | None],
        *,
        retry_seconds: float = 60.0,
        max_misses: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_item = read_item
        self._retry_seconds = retry_seconds
        self._max_misses = max_misses
        self._clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, frozenset[str]] = {}
        self._misses: dict[tuple[str, str], float] = {}  # (collection, item) -> when its read taught nothing

    def hosts(self, collection: str, item_id: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            known = self._hosts.get(collection)
            missed = self._misses.get((collection, item_id))
        if known:
            return known
        if missed is not None and now - missed < self._retry_seconds:
            return frozenset()
        stored = self._read_item(collection, item_id)
        found = {
            urlsplit(href).netloc.lower()
            for href in _asset_hrefs(stored)
            if is_managed_href(href, collection, item_id) and urlsplit(href).netloc
        }
        with self._lock:
            merged = self._hosts.get(collection, frozenset()) | found
            if merged:
                self._hosts[collection] = merged
                self._misses.pop((collection, item_id), None)
            else:
                self._misses.pop((collection, item_id), None)
                self._misses[(collection, item_id)] = now  # re-inserted: dict order is the forgetting order
                while len(self._misses) > self._max_misses:
                    del self._misses[next(iter(self._misses))]
        return merged

    def is_managed(self, href: str, collection: str, item_id: str) -> bool:
        if not is_managed_href(href, collection, item_id):
            return False
        return urlsplit(href).netloc.lower() in self.hosts(collection, item_id)


def _asset_hrefs(item: object) -> list[str]:
    assets = item.get("assets") if isinstance(item, dict) else None
    if not isinstance(assets, dict):
        return []
    out = []
    for asset in assets.values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            out.append(asset["href"])
    return out


class HrefSigner:
    """Signs asset hrefs whose host is on ``allow`` with a token from ``cache`` (per account/container).

    With ``collection_cache`` and ``collection_hosts`` (GeoCatalog's managed storage), an href whose host matches
    ``collection_hosts`` gets the token of the item's collection from ``collection_cache`` instead (those hosts are
    added to the allow-list); such an href is left unchanged when no collection is known. With ``collection_cache``
    and ``managed`` (``ManagedStorage``), an href that is the catalog's own managed copy of the item's asset, on a
    host the catalog reported, gets the collection token too. A collection token is never sent to any other host,
    and ``cache`` is never asked for one inside them.
    """

    def __init__(
        self,
        cache: TokenCache,
        allow: HostAllowList,
        *,
        collection_cache: CollectionTokenCache | None = None,
        collection_hosts: HostAllowList | None = None,
        managed: ManagedStorage | None = None,
    ) -> None:
        self.cache = cache
        self.collection_cache = collection_cache
        self.collection_hosts = collection_hosts if collection_cache is not None and collection_hosts else None
        self.managed = managed if collection_cache is not None else None
        if self.collection_hosts is not None:
            allow = HostAllowList((*allow.patterns, *self.collection_hosts.patterns))
        self.allow = allow

    def sign_href(self, href: str, collection: str | None = None, item_id: str | None = None) -> str:
        """Signed ``href`` if its host is allow-listed (or it is managed storage); else returned unchanged.

        ``collection`` (the request's) selects the token for an href on a ``collection_hosts`` host; with
        ``item_id`` too, a managed-storage href of that item is recognised (``ManagedStorage``)."""
        if not isinstance(href, str):
            return href
        has_collection = isinstance(collection, str) and bool(collection) and self.collection_cache is not None
        on_collection_host = self.collection_hosts is not None and self.collection_hosts.allows_url(href)
        if on_collection_host and not has_collection:
            return href  # a managed-storage host, but no collection to take the token for
        collection_token = on_collection_host or (
            has_collection
            and self.managed is not None
            and isinstance(item_id, str)
            and self.managed.is_managed(href, str(collection), item_id)
        )
        if not collection_token and (not self.allow or not self.allow.allows_url(href)):
            return href
        key = blob_account_container(href)
        if key is None:
            return href
        if collection_token:
            assert self.collection_cache is not None and isinstance(collection, str)
            return replace_sas_query(href, self.collection_cache.get(collection, *key).token.reveal())
        return replace_sas_query(href, self.cache.get(*key).token.reveal())

    def sign_item(self, item: dict, collection: str | None = None) -> dict:
        """A copy of ``item`` with every asset href (and ``alternate`` hrefs) signed; the input is not modified.

        ``collection`` defaults to the item's ``collection`` field (``contract.validate_item`` fills it in and
        checks it equals the request's collection)."""
        # Only the containers on the way to an href are copied (item, assets, each asset, its alternates): the
        # rest is shared with the input, which neither side modifies. A deep copy was ~40 % of the signing cost.
        if not isinstance(item, dict):
            return copy.deepcopy(item)
        signed = dict(item)
        if collection is None and isinstance(signed.get("collection"), str):
            collection = signed["collection"]
        item_id = signed.get("id")
        assets = signed.get("assets")
        if not isinstance(assets, dict):
            return signed
        signed["assets"] = assets = dict(assets)
        for key, original in assets.items():
            if not isinstance(original, dict):
                continue
            assets[key] = asset = dict(original)
            if isinstance(asset.get("href"), str):
                asset["href"] = self.sign_href(asset["href"], collection, item_id)
            alternates = asset.get("alternate")
            if isinstance(alternates, dict):
                asset["alternate"] = alternates = dict(alternates)
                for name, alternate in alternates.items():
                    if isinstance(alternate, dict) and isinstance(alternate.get("href"), str):
                        alternates[name] = {
                            **alternate,
                            "href": self.sign_href(alternate["href"], collection, item_id),
                        }
        return signed
