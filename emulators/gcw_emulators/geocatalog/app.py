"""The HTTP layer (aiohttp): routing, auth, api-version, fault injection, stats and the Azure error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog
from aiohttp import web

from gcw_emulators.geocatalog import ingestion, landing, search, tiler
from gcw_emulators.geocatalog.catalog import Catalog, parse_interval
from gcw_emulators.geocatalog.errors import ApiError, error_body
from gcw_emulators.geocatalog.faults import FaultSet, FaultSpecError
from gcw_emulators.geocatalog.items import jsonb_order, managed_container, served_item
from gcw_emulators.geocatalog.operations import Operation
from gcw_emulators.geocatalog.sas import SasAuthority, blob_location

API_VERSIONS = ("2024-01-31-preview", "2025-04-30-preview", "2026-04-15")
# sent on write 202s, operation GETs and the operation list, not on STAC reads, SAS answers or errors (T14, T07, S02)
SUPPORTED_VERSIONS_HEADER = {"api-supported-versions": ", ".join(API_VERSIONS)}
OPERATION_CONTENT_TYPE = "application/json; charset=utf-8"
GEOCATALOG_PREFIXES = ("/stac", "/inma", "/sas", "/data")  # need Bearer auth + api-version; count against the budget
PRIVATE_PREFIX = "_gcw:"  # keys of a stored collection document the emulator keeps for itself and never serves
log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class AppConfig:
    token: str
    collection_storage: dict[str, str] = field(default_factory=dict)  # collection -> "account/container"
    max_body_bytes: int = 10 * 1024 * 1024
    poll_retry_after: float | None = None  # Retry-After on write 202s and non-terminal operation GETs
    default_limit: int = 10
    max_limit: int = 1000
    public_url: str | None = None  # the origin of every absolute URL in answers (behind a TLS proxy)


def _azure_ref() -> str:
    """An ``x-azure-ref`` in the front door's shape: ``<UTC timestamp>-<random>``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(14)


class RequestStats:
    """Requests by route template and status; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # per client product (the User-Agent's first token): requests, and those with x-ms-client-request-id
        self._clients: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._client_request_ids: set[str] = set()

    def record(self, route: str, status: str) -> None:
        with self._lock:
            self._counts[route][status] += 1

    def record_client(self, user_agent: str, client_request_id: str | None) -> None:
        product = user_agent.split(" ", 1)[0] or "(none)"
        with self._lock:
            counts = self._clients[product]
            counts["requests"] += 1
            if client_request_id:
                counts["with_client_request_id"] += 1
                if client_request_id not in self._client_request_ids:
                    counts["distinct_client_request_ids"] += 1
                    self._client_request_ids.add(client_request_id)

    def clients(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {product: dict(c) for product, c in sorted(self._clients.items())}

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {route: dict(c) for route, c in sorted(self._counts.items())}

    def total(self) -> int:
        with self._lock:
            return sum(sum(c.values()) for c in self._counts.values())


def json_response(
    body: Any, status: int = 200, content_type: str = "application/json", headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with exactly the Content-Type given (the service sends ``application/json`` without a charset on
    errors and SAS answers, ``application/geo+json`` on STAC reads, ``...; charset=utf-8`` on operations)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(body=data, status=status, headers={"Content-Type": content_type, **(headers or {})})


def error_response(
    status: int, code: str, message: str, target: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    hdrs = {"x-ms-error-code": code, **(headers or {})}
    return json_response(error_body(code, message, target), status=status, headers=hdrs)


def _reset_connection(request: web.Request) -> None:
    """Abort the TCP connection with RST (SO_LINGER 0), as a dropped load balancer connection would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else 'unmatched'}"


class GeoCatalogApp:
    """Builds the aiohttp application around one ``Catalog``."""

    def __init__(
        self, catalog: Catalog, sas: SasAuthority, faults: FaultSet, stats: RequestStats, config: AppConfig
    ) -> None:
        self.catalog = catalog
        self.sas = sas
        self.faults = faults
        self.stats = stats
        self.config = config
        self.stats_extra: Callable[[], dict[str, Any]] = dict
        self.ingestions: ingestion.Ingestions | None = None  # set by build()
        # A collection's SAS token reads the collection's managed container (as the live service's does), also
        # when --collection-storage maps the collection to another private container for its external assets.
        for cid, mapped in config.collection_storage.items():
            account, _, container = mapped.partition("/")
            sas.aliases[(catalog.managed_account, managed_container(cid))] = (account.lower(), container)

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_name(request)
        path = request.path
        status = "error"
        try:
            response = await self._guarded(request, handler, path)
            status = str(response.status)
            if path.startswith(GEOCATALOG_PREFIXES):
                self.stats.record_client(
                    request.headers.get("User-Agent", ""), request.headers.get("x-ms-client-request-id")
                )
                # the ids the live service sends on every answer (recordings: X-Request-ID and x-azure-ref
                # everywhere, mise-correlation-id on /inma and writes); what a client logs for Azure support
                response.headers.setdefault("X-Request-ID", uuid.uuid4().hex)
                response.headers.setdefault("x-azure-ref", _azure_ref())
                if path.startswith("/inma") or request.method != "GET":
                    response.headers.setdefault("mise-correlation-id", str(uuid.uuid4()))
            return response
        except _Reset:
            status = "reset"
            raise asyncio.CancelledError from None
        finally:
            self.stats.record(route, status)

    async def _guarded(self, request: web.Request, handler: Handler, path: str) -> web.StreamResponse:
        if path.startswith("/_emulator"):
            return await self._call(request, handler)
        geocatalog = path.startswith(GEOCATALOG_PREFIXES)
        decision = self.faults.decide(request.method, path, budgeted=geocatalog)
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.reset:
            _reset_connection(request)
            raise _Reset
        if decision.status is not None:
            headers = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = f"{decision.retry_after:g}"
            return error_response(decision.status, decision.code, decision.message, headers=headers)
        if geocatalog:
            denied = self._check_auth(request)
            if denied is not None:
                return denied
            bad_version = self._check_api_version(request)
            if bad_version is not None:
                return bad_version
        return await self._call(request, handler)

    async def _call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.body(), status=exc.status, headers={"x-ms-error-code": exc.code, **exc.headers})
        except web.HTTPNotFound:
            return error_response(404, "NotFound", f"No route for {request.method} {request.path}")
        except web.HTTPMethodNotAllowed:
            return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")
        except Exception as exc:  # an emulator bug must still answer in the Azure shape, and be visible
            log.exception("geocatalog_emulator_handler_failed", route=_route_name(request), error=type(exc).__name__)
            return error_response(500, "InternalServerError", f"emulator error: {type(exc).__name__}")

    def _check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'
        if scheme.lower() != "bearer" or not token.strip():
            return error_response(
                401,
                "Unauthorized",
                "An 'Authorization: Bearer <token>' header is required",
                headers={"WWW-Authenticate": challenge},
            )
        if token.strip() != self.config.token:
            return error_response(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid",
                headers={"WWW-Authenticate": challenge},
            )
        if self.faults.auth_expired(request.method, request.path):
            return error_response(
                401, "ExpiredAuthenticationToken", "The access token expired", headers={"WWW-Authenticate": challenge}
            )
        return None

    def _check_api_version(self, request: web.Request) -> web.Response | None:
        version = request.query.get("api-version")
        if not version:
            return error_response(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests. "
                f"Supported versions: {', '.join(API_VERSIONS)}",
                target="api-version",
            )
        if version not in API_VERSIONS:
            return error_response(
                400,
                "UnsupportedApiVersion",
                f"The HTTP resource that matches the request URI '{request.path}' does not support the API version "
                f"'{version}'. Supported versions: {', '.join(API_VERSIONS)}",
                target="api-version",
            )
        return None

    # ------------------------------------------------------------------ helpers
    async def _json_body(self, request: web.Request, code: str = "StacValidationFailed") -> Any:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(
                400,
                "PostItemCollectionSizeExceeded" if request.method == "POST" else "RequestBodyTooLarge",
                f"body: {request.content_length} bytes exceed the size limit of {limit} bytes",
                target="body",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(400, "RequestBodyTooLarge", f"body: exceeds the size limit of {limit} bytes") from None
        if len(raw) > limit:
            raise ApiError(400, "RequestBodyTooLarge", f"body: exceeds the size limit of {limit} bytes", target="body")
        if not raw:
            raise ApiError(400, code, "body: a JSON body is required", target="body")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, code, f"body: not valid JSON ({exc})", target="body") from None

    def _origin(self, request: web.Request) -> str:
        """The origin absolute URLs in answers start with: ``public_url``, else the proxy's ``X-Forwarded-Proto`` /
        ``X-Forwarded-Host`` (first value of each), else the request's own scheme and Host."""
        if self.config.public_url:
            return self.config.public_url
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else request.scheme
        return f"{scheme}://{host or request.host}"

    def _accepted(self, request: web.Request, op: Operation) -> web.Response:
        version = request.query.get("api-version", API_VERSIONS[-1])
        location = f"{self._origin(request)}/inma/operations/{op.id}?api-version={version}"
        body = op.to_json(op.created)
        headers = {"location": location, "operation-location": location, **SUPPORTED_VERSIONS_HEADER}
        if self.config.poll_retry_after is not None:  # the service sends none (T14); azure-core then waits 30 s
            headers["Retry-After"] = f"{self.config.poll_retry_after:g}"
        return json_response(body, status=202, content_type=OPERATION_CONTENT_TYPE, headers=headers)

    def _item_links(self, request: web.Request, item: dict[str, Any], collection_id: str) -> dict[str, Any]:
        base = self._origin(request)
        links = [
            {"rel": "collection", "type": "application/json", "href": f"{base}/stac/collections/{collection_id}"},
            {"rel": "parent", "type": "application/json", "href": f"{base}/stac/collections/{collection_id}"},
            {"rel": "root", "type": "application/json", "href": f"{base}/stac/"},
            {
                "rel": "self",
                "type": "application/geo+json",
                "href": f"{base}/stac/collections/{collection_id}/items/{item['id']}",
            },
        ]
        out = served_item(item, links)
        if request.query.get("sign", "").lower() == "true":
            duration = self._duration(request)
            assets = {}
            for key, asset in item.get("assets", {}).items():
                signed = dict(asset)
                signed["href"], _ = self.sas.sign_href(
                    asset["href"], self._storage_of(request, asset["href"]), duration
                )
                assets[key] = signed
            out["assets"] = assets
        return out

    def _duration(self, request: web.Request) -> float | None:
        raw = request.query.get("duration")
        if raw is None:
            return None
        try:
            minutes = float(raw)
        except ValueError:
            raise ApiError(
                400, "InvalidInputData", f"duration: {raw!r} is not a number of minutes", "duration"
            ) from None
        if minutes <= 0:
            raise ApiError(400, "InvalidInputData", "duration: must be a positive number of minutes", "duration")
        return minutes * 60.0

    def _storage_of(self, request: web.Request, href: str) -> tuple[str, str] | None:
        """(account, container) of an Azure blob href or of this emulator's own /_blobs URL."""
        location = blob_location(href)
        if location is not None:
            return location
        parts = urlsplit(href)
        own = {request.host, urlsplit(self._origin(request)).netloc}
        if parts.netloc in own and parts.path.startswith("/_blobs/"):
            segments = parts.path.split("/")
            if len(segments) >= 5:
                return segments[2], segments[3]
        return None

    def _collection_storage(self, collection_id: str) -> tuple[str, str]:
        mapped = self.config.collection_storage.get(collection_id)
        if mapped:
            account, _, container = mapped.partition("/")
            return account, container
        return self.catalog.managed_account, managed_container(collection_id)

    def _page(self, items: list[Any], limit_raw: Any, token_raw: Any) -> tuple[list[Any], int, int]:
        try:
            limit = int(limit_raw if limit_raw is not None else self.config.default_limit)
        except (TypeError, ValueError):
            raise ApiError(400, "InvalidInputData", f"limit: {limit_raw!r} is not an integer", target="limit") from None
        try:
            offset = int(token_raw or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "InvalidInputData", "token: invalid continuation token", target="token") from None
        if not 1 <= limit <= self.config.max_limit:
            raise ApiError(400, "InvalidInputData", f"limit: must be 1..{self.config.max_limit}", target="limit")
        if offset < 0:
            raise ApiError(400, "InvalidInputData", "token: invalid continuation token", target="token")
        return items[offset : offset + limit], limit, offset

    def _feature_collection(
        self, request: web.Request, items: list[dict[str, Any]], path: str, post_body: dict[str, Any] | None = None
    ) -> web.Response:
        source: Any = post_body if post_body is not None else request.query
        page, limit, offset = self._page(items, source.get("limit"), source.get("token"))
        base = self._origin(request)
        if path == "/stac/search":  # S05: root and self (application/json)
            links: list[dict[str, Any]] = [
                {"rel": "root", "type": "application/json", "href": f"{base}/stac/"},
                {"rel": "self", "type": "application/json", "href": f"{base}{request.path_qs}"},
            ]
        else:  # L06: collection, parent, root, self
            cid = request.match_info.get("collectionId", "")
            links = self._item_links(request, {"id": ""}, cid)["links"][:3]
            links.append({"rel": "self", "type": "application/geo+json", "href": f"{base}{path}"})
        if offset + limit < len(items):
            nxt = str(offset + limit)
            if post_body is not None:
                href = f"{base}{path}?{urlencode({'api-version': request.query.get('api-version')})}"
                links.append(
                    {
                        "rel": "next",
                        "type": "application/geo+json",
                        "method": "POST",
                        "href": href,
                        "body": {**post_body, "token": nxt},
                    }
                )
            else:
                query = {k: v for k, v in request.query.items() if k != "token"}
                query["token"] = nxt
                href = f"{base}{path}?{urlencode(query)}"
                links.append({"rel": "next", "type": "application/geo+json", "method": "GET", "href": href})
        features = [self._item_links(request, item, item.get("collection", "")) for item in page]
        body = {"type": "FeatureCollection", "features": features, "links": links}  # no counts (L06, S05)
        return json_response(body, content_type="application/geo+json")

    # ------------------------------------------------------------------ STAC
    async def post_items(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        op = self.catalog.create_items(request.match_info["collectionId"], body, request.path)
        return self._accepted(request, op)

    async def put_item(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        cid, iid = request.match_info["collectionId"], request.match_info["itemId"]
        return self._accepted(request, self.catalog.replace_item(cid, iid, body, request.path))

    async def patch_item(self, request: web.Request) -> web.Response:
        body = await self._json_body(request, code="PatchValidation")
        cid, iid = request.match_info["collectionId"], request.match_info["itemId"]
        return self._accepted(request, self.catalog.patch_item(cid, iid, body, request.path))

    async def delete_item(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["itemId"]
        return self._accepted(request, self.catalog.delete_item(cid, iid, request.path))

    async def get_item(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["itemId"]
        item = self.catalog.get_item(cid, iid)
        return json_response(self._item_links(request, item, cid), content_type="application/geo+json")

    def _filters(self, bbox: Any, datetime_text: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if bbox:
            if isinstance(bbox, str):
                try:
                    bbox = [float(x) for x in bbox.split(",")]
                except ValueError:
                    raise ApiError(400, "InvalidInputData", "bbox: must be 4 comma-separated numbers", "bbox") from None
            out["bbox"] = bbox
        if datetime_text:
            out["interval"] = parse_interval(str(datetime_text))
        return out

    async def list_items(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        filters = self._filters(request.query.get("bbox"), request.query.get("datetime"))
        items = self.catalog.find_items([cid], **filters)
        return self._feature_collection(request, items, request.path)

    async def search(self, request: web.Request) -> web.Response:
        post_body: dict[str, Any] | None = None
        fields: Mapping[str, Any]
        if request.method == "POST":
            body = await self._json_body(request, code="InvalidInputData")
            if not isinstance(body, dict):
                raise ApiError(400, "InvalidInputData", "body: a search must be a JSON object", "body")
            post_body = fields = body
            collections, ids = body.get("collections"), body.get("ids")
            default_lang = "cql2-json"
        else:
            fields = request.query
            raw = fields.get("collections") or fields.get("collection")
            collections = raw.split(",") if raw else None
            ids = fields["ids"].split(",") if fields.get("ids") else None
            default_lang = "cql2-text"
        for name, value in (("collections", collections), ("ids", ids)):
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ApiError(400, "InvalidInputData", f"{name}: must be a list of strings", name)
        filters = self._filters(fields.get("bbox"), fields.get("datetime"))
        search.check_unsupported(fields)
        intersects = fields.get("intersects")
        if isinstance(intersects, str):  # GET: a GeoJSON string
            try:
                intersects = json.loads(intersects)
            except json.JSONDecodeError:
                raise ApiError(400, "InvalidInputData", "intersects: not valid GeoJSON", "intersects") from None
        expressions = [
            search.compile_filter(fields.get("filter"), fields.get("filter-lang"), default_lang=default_lang),
            search.intersects_filter(intersects),
        ]
        sort = search.parse_sortby(fields.get("sortby"))
        items = search.apply(self.catalog.find_items(collections, ids=ids, **filters), expressions, sort)
        return self._feature_collection(request, items, "/stac/search", post_body)

    async def landing_page(self, request: web.Request) -> web.Response:
        return json_response(landing.landing_page(self._origin(request)))

    async def conformance(self, request: web.Request) -> web.Response:
        return json_response(landing.conformance())

    async def queryables(self, request: web.Request) -> web.Response:
        doc = landing.queryables(f"{self._origin(request)}{request.path_qs}")
        return json_response(doc, content_type=landing.SCHEMA)

    async def list_collections(self, request: web.Request) -> web.Response:
        collections = [self._collection_view(request, doc) for doc in self.catalog.list_collections()]
        return json_response({"collections": collections, "links": []})

    def _collection_view(self, request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
        """A collection as served (C01): items, parent, root and self links; keys in jsonb order."""
        base, cid = self._origin(request), doc["id"]
        links = [
            {"rel": "items", "type": "application/geo+json", "href": f"{base}/stac/collections/{cid}/items"},
            {"rel": "parent", "type": "application/json", "href": f"{base}/stac/"},
            {"rel": "root", "type": "application/json", "href": f"{base}/stac/"},
            {"rel": "self", "type": "application/json", "href": f"{base}/stac/collections/{cid}"},
        ]
        public = {k: v for k, v in doc.items() if not k.startswith(PRIVATE_PREFIX)}
        return jsonb_order({**public, "links": links})

    async def post_collection(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        return self._accepted(request, self.catalog.create_collection(body, request.path))

    async def get_collection(self, request: web.Request) -> web.Response:
        doc = self.catalog.get_collection(request.match_info["collectionId"])
        return json_response(self._collection_view(request, doc))

    async def delete_collection(self, request: web.Request) -> web.Response:
        return self._accepted(request, self.catalog.delete_collection(request.match_info["collectionId"], request.path))

    # ------------------------------------------------------------------ operations
    async def get_operation(self, request: web.Request) -> web.Response:
        body, _op = self.catalog.get_operation(request.match_info["operationId"])
        headers = dict(SUPPORTED_VERSIONS_HEADER)
        if self.config.poll_retry_after is not None and body["status"] in ("Pending", "Running"):
            headers["Retry-After"] = f"{self.config.poll_retry_after:g}"
        return json_response(body, content_type=OPERATION_CONTENT_TYPE, headers=headers)

    async def list_operations(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            top = int(q["$top"]) if "$top" in q else None
            skip = int(q.get("$skip", "0"))
        except ValueError:
            raise ApiError(400, "InvalidInputData", "$top and $skip must be integers", "$top") from None
        if (top is not None and not 1 <= top <= 1000) or skip < 0:
            raise ApiError(400, "InvalidInputData", "$top must be 1..1000 and $skip >= 0", "$top")
        page, total = self.catalog.list_operations(q.get("collectionId"), q.get("status"), skip=skip, top=top)
        return self.page_response(request, page, total, top, skip)

    def paged_response(
        self, request: web.Request, values: list[Any], top: int | None = None, skip: int | None = None
    ) -> web.Response:
        """An ``/inma`` list answer: ``{"value": [...]}`` paged by ``$top``/``$skip`` (parsed from the query unless
        given); without ``$top`` everything comes in one page without nextLink (T07 returned ~500 operations so)."""
        q = request.query
        if skip is None:
            try:
                top = int(q["$top"]) if "$top" in q else None
                skip = int(q.get("$skip", "0"))
            except ValueError:
                raise ApiError(400, "InvalidInputData", "$top and $skip must be integers", "$top") from None
            if (top is not None and top < 1) or skip < 0:
                raise ApiError(400, "InvalidInputData", "$top must be >= 1 and $skip >= 0", "$top")
        end = len(values) if top is None else skip + top
        return self.page_response(request, values[skip:end], len(values), top, skip)

    def page_response(
        self, request: web.Request, page: list[Any], total: int, top: int | None, skip: int
    ) -> web.Response:
        """The ``/inma`` answer of one page (``page``: the values from ``skip``, of ``total``), with a nextLink when
        more follow."""
        body: dict[str, Any] = {"value": page}
        if top is not None and skip + top < total:
            query = dict(request.query)
            query.update({"$top": str(top), "$skip": str(skip + top)})
            body["nextLink"] = f"{self._origin(request)}{request.path}?{urlencode(query, safe='$')}"
        return self.inma_response(body)

    def inma_response(self, body: Any, status: int = 200, location: str | None = None) -> web.Response:
        """JSON as ``/inma`` answers it: ``application/json; charset=utf-8`` and ``api-supported-versions`` (I02);
        ``body=None``: no content (a 204 carries the versions header too, I02)."""
        headers = dict(SUPPORTED_VERSIONS_HEADER)
        if location is not None:
            headers["Location"] = location
        if body is None:
            return web.Response(status=status, headers=headers)
        return json_response(body, status=status, content_type=OPERATION_CONTENT_TYPE, headers=headers)

    async def cancel_operation(self, request: web.Request) -> web.Response:
        self.catalog.cancel_operation(request.match_info["operationId"])
        return web.Response(status=204)

    async def cancel_all(self, request: web.Request) -> web.Response:
        self.catalog.cancel_all()
        return web.Response(status=204)

    # ------------------------------------------------------------------ SAS
    def _token_response(self, account: str, container: str, duration: float | None) -> web.Response:
        token, expiry = self.sas.issue(account, container, duration)
        return json_response({"msft:expiry": expiry, "token": token})  # application/json, no charset (S02)

    async def pc_token_container(self, request: web.Request) -> web.Response:
        return self._token_response(request.match_info["account"], request.match_info["container"], None)

    async def pc_token_collection(self, request: web.Request) -> web.Response:
        return self._token_response(*self._collection_storage(request.match_info["collection"]), None)

    async def sign(self, request: web.Request) -> web.Response:
        href = request.query.get("href")
        if not href:
            raise ApiError(400, "InvalidInputData", "href: the href query parameter is required", "href")
        duration = self._duration(request) if request.path.startswith("/sas") else None
        signed, expiry = self.sas.sign_href(href, self._storage_of(request, href), duration)
        body: dict[str, Any] = {"href": signed}
        if expiry is not None:
            body["msft:expiry"] = expiry
        return web.json_response(body)

    async def gc_token(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        self.catalog.get_collection(cid)
        return self._token_response(*self._collection_storage(cid), self._duration(request))

    async def revoke(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    # ------------------------------------------------------------------ blobs
    async def put_blob(self, request: web.Request) -> web.Response:
        key = "/".join((request.match_info["account"], request.match_info["container"], request.match_info["blob"]))
        data = await request.read()
        self.catalog.put_blob(key, data, request.content_type or "application/octet-stream")
        return web.Response(status=201)

    async def get_blob(self, request: web.Request) -> web.StreamResponse:
        account, container = request.match_info["account"], request.match_info["container"]
        if self.catalog.is_private_account(account):
            self.sas.early_seconds = self.faults.sas_early()
            reason = self.sas.check(account, container, request.query_string)
            if reason is not None:
                code = "NoAuthenticationInformation" if reason == "no SAS token" else "AuthenticationFailed"
                return error_response(403, code, f"Server failed to authenticate the request: {reason}")
        found = self.catalog.get_blob("/".join((account, container, request.match_info["blob"])))
        if found is None:
            return error_response(404, "BlobNotFound", "The specified blob does not exist.")
        data, content_type = found
        return web.Response(body=data, content_type=content_type.split(";")[0])

    # ------------------------------------------------------------------ admin
    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_extra())

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.describe(), "budget": self.faults.budget})

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await self._json_body(request, code="InvalidInputData")
        specs = body.get("faults") if isinstance(body, dict) else body
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise ApiError(400, "InvalidInputData", 'body: expected {"faults": ["SPEC", ...]}', "faults")
        try:
            self.faults.set(specs)
        except FaultSpecError as exc:
            raise ApiError(400, "InvalidFaultSpec", str(exc), "faults") from None
        return web.json_response({"faults": self.faults.describe(), "budget": self.faults.budget})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"faults": [], "budget": self.faults.budget})

    # ------------------------------------------------------------------ wiring
    def build(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=self.config.max_body_bytes + 1)
        r = app.router
        items = "/stac/collections/{collectionId}/items"
        r.add_post(items, self.post_items)
        r.add_get(items, self.list_items, allow_head=False)
        r.add_get(items + "/{itemId}", self.get_item, allow_head=False)
        r.add_put(items + "/{itemId}", self.put_item)
        r.add_patch(items + "/{itemId}", self.patch_item)
        r.add_delete(items + "/{itemId}", self.delete_item)
        r.add_get("/stac", self.landing_page, allow_head=False)
        r.add_get("/stac/", self.landing_page, allow_head=False)
        r.add_get("/stac/conformance", self.conformance, allow_head=False)
        r.add_get("/stac/queryables", self.queryables, allow_head=False)
        r.add_get("/stac/collections", self.list_collections, allow_head=False)
        r.add_post("/stac/collections", self.post_collection)
        r.add_get("/stac/collections/{collectionId}", self.get_collection, allow_head=False)
        r.add_delete("/stac/collections/{collectionId}", self.delete_collection)
        r.add_get("/stac/search", self.search, allow_head=False)
        r.add_post("/stac/search", self.search)
        r.add_get("/inma/operations", self.list_operations, allow_head=False)
        r.add_delete("/inma/operations", self.cancel_all)
        r.add_get("/inma/operations/{operationId}", self.get_operation, allow_head=False)
        r.add_delete("/inma/operations/{operationId}", self.cancel_operation)
        r.add_get("/sas/token/{collectionId}", self.gc_token, allow_head=False)
        r.add_post("/sas/token/revoke", self.revoke)
        r.add_get("/sas/sign", self.sign, allow_head=False)
        r.add_get("/api/sas/v1/token/{account}/{container}", self.pc_token_container, allow_head=False)
        r.add_get("/api/sas/v1/token/{collection}", self.pc_token_collection, allow_head=False)
        r.add_get("/api/sas/v1/sign", self.sign, allow_head=False)
        r.add_put("/_blobs/{account}/{container}/{blob:.+}", self.put_blob)
        r.add_get("/_blobs/{account}/{container}/{blob:.+}", self.get_blob, allow_head=False)
        tiler.register(self, r)  # /data/...: the tiler (item, mosaic and collection images, legends)
        r.add_get("/_emulator/stats", self.get_stats, allow_head=False)
        r.add_get("/_emulator/faults", self.get_faults, allow_head=False)
        r.add_put("/_emulator/faults", self.set_faults)
        r.add_post("/_emulator/faults", self.set_faults)
        r.add_delete("/_emulator/faults", self.clear_faults)
        from gcw_emulators.geocatalog import collection_assets, configuration  # they import this module

        configuration.register(self, r)  # configurations, collection queryables
        collection_assets.register(self, r)  # PUT collection, collection assets, thumbnail
        self.ingestions = ingestion.register(self, app)  # sources, identities, definitions, runs
        return app


class _Reset(Exception):
    """Raised after the connection was reset on purpose."""
