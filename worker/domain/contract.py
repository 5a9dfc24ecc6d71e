"""The versioned request/result message contract (version 1): models, parsing and precise field-level errors.

Producers' guide: docs/messages.md. JSON Schemas: worker/schemas/request-v1.schema.json and
result-v1.schema.json. Runtime validation is hand-written (the schema costs ~55x more CPU, see the guide);
tests/unit/test_contract_schema.py proves the code and the schemas agree.

Every rejection raises :class:`InvalidRequest` whose ``field`` is a path into the body
(``items[3].properties.datetime``) or the name of a Service Bus property (``reply_to``), and whose message is
one line, names the reason, and never contains a secret (URLs are passed through ``worker.domain.secrets.redact``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from worker.adapters.hosts import HostAllowList, item_url_problem
from worker.domain.errors import InvalidError
from worker.domain.retry_policy import attempt_number
from worker.domain.secrets import redact

if TYPE_CHECKING:
    from worker.domain.events import BlobEvent, EventRouting

CONTRACT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({CONTRACT_VERSION})

Action = Literal["ingest", "delete"]
Mode = Literal["upsert", "create"]
ResultStatus = Literal["succeeded", "failed", "invalid"]

ACTIONS = ("ingest", "delete")
MODES = ("upsert", "create")

# GeoCatalog's documented character sets (docs/messages.md "Identifiers").
ITEM_ID_RE = re.compile(r"[A-Za-z0-9\-_+,().]{1,149}", re.ASCII)
COLLECTION_ID_RE = re.compile(r"[A-Za-z0-9\-_.]{1,149}", re.ASCII)
ASSET_KEY_RE = re.compile(r"[A-Za-z0-9\-_+,().]{1,255}", re.ASCII)
_RFC3339_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_:\-]*", re.ASCII)
_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")  # one regex scan, not a Python loop per character

MAX_HREF_CHARS = 4096
MAX_PROPERTY_ID_CHARS = 128  # Service Bus limit for message_id / session ids
MAX_MESSAGE_CHARS = 500  # error messages are truncated to this

TOP_LEVEL_FIELDS = frozenset({"version", "action", "collection", "items", "item_urls", "item_ids", "mode"})
GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)
_MAX_GEOMETRY_COLLECTION_NESTING = 4


class InvalidRequest(InvalidError):
    """The request is wrong and retrying cannot help. ``field`` names where, ``message`` says why (one line)."""

    code = "InvalidRequest"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **kwargs: Any) -> None:
        super().__init__(_one_line(message), field=_one_line(field) if field else field, code=code, **kwargs)


def _one_line(text: str) -> str:
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def show(value: Any, limit: int = 80) -> str:
    """A safe one-line rendering of a (possibly hostile) value for error messages: JSON, ASCII-escaped, short."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):  # pragma: no cover - defensive
        text = "<unprintable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # pragma: no cover - json never produces anything else


def key_path(path: str, key: str) -> str:
    """``path.key`` for plain keys, ``path["we ird"]`` (ASCII-escaped) for anything else."""
    if _SIMPLE_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{show(key, 60)}]"


# ----------------------------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class MessageMeta:
    """What the runtime extracts from a received Service Bus message."""

    message_id: str
    correlation_id: str | None
    reply_to: str | None
    reply_to_session_id: str | None
    session_id: str | None
    delivery_count: int  # deliveries including this one (1 on the first; the SDK's 0-based count + 1)
    enqueued_time: datetime | None
    attempt: int = 1  # 1 + application property "gcw-attempt" (reschedules)
    application_properties: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Limits:
    """Size and policy limits applied by :func:`parse_request` (documented in docs/messages.md "Limits")."""

    max_body_bytes: int = 4 * 1_048_576  # 4 MiB; needs Service Bus Premium above 256 KB, use item_urls beyond
    max_items: int = 1000
    max_item_bytes: int = 1_048_576  # GeoCatalog's item JSON limit, measured as compact UTF-8 JSON
    max_assets: int = 100
    max_depth: int = 64  # JSON nesting inside one item (the item object is level 1)
    max_item_urls: int = 1000
    allowed_reply_to: frozenset[str] | None = None  # None = any; matched case-insensitively
    item_url_hosts: HostAllowList | None = None  # None = host policy is checked by ItemFetcher only
    events: EventRouting | None = None  # Blob Storage event mappings (worker.domain.events); None = none

    def __post_init__(self) -> None:
        if self.allowed_reply_to is not None:
            object.__setattr__(self, "allowed_reply_to", frozenset(e.lower() for e in self.allowed_reply_to))


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Request:
    meta: MessageMeta
    version: int
    action: Action
    collection: str
    items: tuple[dict, ...] = ()
    item_urls: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    mode: Mode = "upsert"
    event: BlobEvent | None = None  # set when the message was a Blob Storage event (worker.domain.events)

    @property
    def request_id(self) -> str:
        return self.meta.message_id

    @property
    def correlation_id(self) -> str:
        return self.meta.correlation_id or self.meta.message_id

    @property
    def requested_ids(self) -> list[str]:
        """The ids the request names: its delete ids, or its inline items' ids (claim checks have none yet)."""
        if self.item_ids:
            return list(self.item_ids)
        return [str(item.get("id")) for item in self.items if isinstance(item, dict)]

    def to_body(self) -> dict[str, Any]:
        """The request body this request was parsed from (canonical form, ``mode`` only for ingest)."""
        body: dict[str, Any] = {"version": self.version, "action": self.action, "collection": self.collection}
        if self.action == "ingest":
            if self.item_urls:
                body["item_urls"] = list(self.item_urls)
            else:
                body["items"] = list(self.items)
            body["mode"] = self.mode
        else:
            body["item_ids"] = list(self.item_ids)
        return body


@dataclass
class ItemOutcome:
    id: str
    status: Literal["succeeded", "failed"]
    error: dict | None = None  # {"code", "message"} when failed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class OperationRef:
    id: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status}


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z`` (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Result:
    """The one terminal result body per request (docs/messages.md "Result")."""

    request_id: str
    correlation_id: str
    action: str | None  # None only for invalid requests whose action could not be read
    collection: str | None  # likewise
    status: ResultStatus
    items: list[ItemOutcome]
    operations: list[OperationRef]
    error: dict | None
    attempts: int
    received_at: datetime
    completed_at: datetime
    version: int = CONTRACT_VERSION

    @classmethod
    def for_request(
        cls,
        request: Request,
        *,
        status: ResultStatus,
        items: list[ItemOutcome],
        operations: list[OperationRef] | None = None,
        error: dict | None = None,
        received_at: datetime,
        completed_at: datetime | None = None,
    ) -> Result:
        return cls(
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            action=request.action,
            collection=request.collection,
            status=status,
            items=items,
            operations=operations or [],
            error=error,
            attempts=attempt_number(request.meta),
            received_at=received_at,
            completed_at=completed_at or datetime.now(UTC),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
            "action": self.action,
            "collection": self.collection,
            "status": self.status,
            "items": [i.to_dict() for i in self.items],
            "operations": [o.to_dict() for o in self.operations],
            "error": self.error,
            "attempts": self.attempts,
            "received_at": format_time(self.received_at),
            "completed_at": format_time(self.completed_at),
        }

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def parse_result(body: bytes) -> Result:
    """Read a result body (for consumers, the demo and tests). Raises ``ValueError`` on a malformed body."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("version") != CONTRACT_VERSION:
        raise ValueError(f"not a version {CONTRACT_VERSION} result body")
    try:
        return Result(
            request_id=data["request_id"],
            correlation_id=data["correlation_id"],
            action=data["action"],
            collection=data["collection"],
            status=data["status"],
            items=[ItemOutcome(i["id"], i["status"], i.get("error")) for i in data["items"]],
            operations=[OperationRef(o["id"], o["status"]) for o in data["operations"]],
            error=data["error"],
            attempts=data["attempts"],
            received_at=datetime.fromisoformat(data["received_at"]),
            completed_at=datetime.fromisoformat(data["completed_at"]),
            version=data["version"],
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed result body: {exc!r}") from None


def crashed_result(meta: MessageMeta, request: Request | None, error: dict[str, str], received_at: datetime) -> Result:
    """The ``failed`` result of a request whose processing raised: every requested item failed with ``error``."""
    if request is not None:
        items = [ItemOutcome(id=i, status="failed", error=error) for i in request.requested_ids]
        return Result.for_request(request, status="failed", items=items, error=error, received_at=received_at)
    return Result(
        request_id=meta.message_id,
        correlation_id=meta.correlation_id or meta.message_id,
        action=None,
        collection=None,
        status="failed",
        items=[],
        operations=[],
        error=error,
        attempts=attempt_number(meta),
        received_at=received_at,
        completed_at=datetime.now(UTC),
    )


def invalid_result(
    meta: MessageMeta,
    error: InvalidRequest,
    received_at: datetime | None = None,
    *,
    body: bytes | None = None,
    completed_at: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Result:
    """The ``invalid`` result for a rejected request. Fills action/collection when the body lets us read them."""
    action: str | None = None
    collection: str | None = None
    if body is not None and len(body) <= limits.max_body_bytes:
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            if data.get("action") in ACTIONS:
                action = data["action"]
            coll = data.get("collection")
            if isinstance(coll, str) and COLLECTION_ID_RE.fullmatch(coll) and coll not in (".", ".."):
                collection = coll
    now = datetime.now(UTC)
    return Result(
        request_id=meta.message_id,
        correlation_id=meta.correlation_id or meta.message_id,
        action=action,
        collection=collection,
        status="invalid",
        items=[],
        operations=[],
        error=error.to_dict(),
        attempts=attempt_number(meta),
        received_at=received_at or now,
        completed_at=completed_at or now,
    )


# ----------------------------------------------------------------------------------------------------------------
# Parsing


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Objects with a repeated key are ambiguous (parsers disagree on which value wins): reject them."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate object key {show(key, 60)} (ambiguous JSON)")
            seen.add(key)
    return obj


def decode_json(data: bytes, *, field: str = "body", max_bytes: int | None = None) -> Any:
    """Bytes → JSON value, strictly: size cap, UTF-8 (no BOM), no NaN/Infinity, no duplicate object keys, no lone
    surrogates, bounded nesting (the C decoder's recursion limit). Raises InvalidRequest naming ``field``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequest(f"must be bytes, got {type(data).__name__}", field=field)
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidRequest(f"too large: {len(data)} bytes, the limit is {max_bytes}", field=field)
    if not data:
        raise InvalidRequest("empty; expected a JSON object", field=field)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"not UTF-8: invalid byte 0x{exc.object[exc.start]:02x} at offset {exc.start}", field=field
        ) from None
    if text.startswith("\ufeff"):
        raise InvalidRequest("starts with a byte order mark; send UTF-8 without BOM", field=field)
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except RecursionError:
        raise InvalidRequest("nesting too deep", field=field) from None
    except _DuplicateKey as exc:
        raise InvalidRequest(str(exc), field=field) from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, int too long
        raise InvalidRequest(f"not valid JSON: {exc}", field=field) from None
    if _LONE_SURROGATE_ESCAPE.search(text):
        _check_encodable(value, "" if field == "body" else field)
    return value


def _check_encodable(value: Any, path: str) -> None:
    """Reject strings with lone UTF-16 surrogates (valid JSON escapes that are not Unicode text)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, p = stack.pop()
        if isinstance(node, str):
            _require_unicode(node, p or "body")
        elif isinstance(node, list):
            stack.extend((v, f"{p}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, dict):
            for k, v in node.items():
                _require_unicode(k, f"{p or 'body'} key {show(k, 40)}")
                stack.append((v, key_path(p, k)))


def _require_unicode(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("contains a lone UTF-16 surrogate escape (not valid Unicode text)", field=path) from None


def parse_request(body: bytes, meta: MessageMeta, limits: Limits = DEFAULT_LIMITS) -> Request:
    """Validate one request message. Returns a :class:`Request` or raises :class:`InvalidRequest`.

    A Blob Storage event (Event Grid or CloudEvents schema) is parsed by ``worker.domain.events.parse_event``."""
    _check_meta(meta, limits)
    data = decode_json(body, field="body", max_bytes=limits.max_body_bytes)
    from worker.domain import events

    if events.event_schema(data) is not None:
        return events.parse_event(data, meta, limits)
    events.reject_event_array(data)
    if not isinstance(data, dict):
        raise InvalidRequest(f"must be a JSON object, got {_type_name(data)}", field="body")
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            raise InvalidRequest(
                "unknown field (allowed: action, collection, item_ids, item_urls, items, mode, version)",
                field=key_path("", key),
            )

    version = _required(data, "version")
    if type(version) is not int:
        raise InvalidRequest(f"must be an integer, got {show(version, 40)}", field="version")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidRequest(
            f"unsupported contract version {version}; this worker supports {sorted(SUPPORTED_VERSIONS)}",
            field="version",
        )
    action = _required(data, "action")
    if action not in ACTIONS:
        raise InvalidRequest(f'must be "ingest" or "delete", got {show(action, 40)}', field="action")
    collection = _required(data, "collection")
    check_collection_id(collection, "collection")

    if action == "delete":
        for name in ("items", "item_urls", "mode"):
            if name in data:
                raise InvalidRequest('not allowed for action "delete" (use item_ids)', field=name)
        ids = _array(data, "item_ids", limits.max_items)
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            path = f"item_ids[{i}]"
            check_item_id(item_id, path)
            _no_duplicate(seen, item_id, i, "item_ids[{}]", path)
        return Request(meta, version, "delete", collection, item_ids=tuple(ids))

    if "item_ids" in data:
        raise InvalidRequest('not allowed for action "ingest" (use items or item_urls)', field="item_ids")
    mode = data.get("mode", "upsert")
    if mode not in MODES:
        raise InvalidRequest(f'must be "upsert" or "create", got {show(mode, 40)}', field="mode")
    has_items, has_urls = "items" in data, "item_urls" in data
    if has_items and has_urls:
        raise InvalidRequest("give either items or item_urls, not both", field="item_urls")
    if not has_items and not has_urls:
        raise InvalidRequest('required for action "ingest" (or item_urls)', field="items")

    if has_urls:
        urls = _array(data, "item_urls", limits.max_item_urls)
        seen_urls: dict[str, int] = {}
        for i, url in enumerate(urls):
            path = f"item_urls[{i}]"
            if not isinstance(url, str):
                raise InvalidRequest(f"must be a string URL, got {_type_name(url)}", field=path)
            problem = item_url_problem(url, limits.item_url_hosts)
            if problem:
                raise InvalidRequest(f"{problem}: {show(redact(url), 120)}", field=path)
            if url in seen_urls:
                raise InvalidRequest(f"duplicate URL (same as item_urls[{seen_urls[url]}])", field=path)
            seen_urls[url] = i
        return Request(meta, version, "ingest", collection, item_urls=tuple(urls), mode=mode)

    raw_items = _array(data, "items", limits.max_items)
    # The body bounds every item's size; measure items only when the body could hold an oversized one.
    measure = len(body) > limits.max_item_bytes
    items = []
    seen_ids: dict[str, int] = {}
    for i, raw in enumerate(raw_items):
        path = f"items[{i}]"
        item = validate_item(raw, collection, path, limits, encoded_size=None if measure else len(body))
        _no_duplicate(seen_ids, item["id"], i, "items[{}].id", path + ".id")
        items.append(item)
    return Request(meta, version, "ingest", collection, items=tuple(items), mode=mode)


def _check_meta(meta: MessageMeta, limits: Limits) -> None:
    if not isinstance(meta.message_id, str) or not meta.message_id:
        raise InvalidRequest("required: the message_id is the request's idempotency key", field="message_id")
    if len(meta.message_id) > MAX_PROPERTY_ID_CHARS:
        raise InvalidRequest(f"longer than {MAX_PROPERTY_ID_CHARS} characters", field="message_id")
    allowed = limits.allowed_reply_to
    if meta.reply_to is not None and allowed is not None and meta.reply_to.lower() not in allowed:
        raise InvalidRequest(f"{show(meta.reply_to, 60)} is not an allowed reply entity", field="reply_to")
    for name in ("correlation_id", "reply_to_session_id"):
        value = getattr(meta, name)
        if value is not None and len(value) > MAX_PROPERTY_ID_CHARS:
            raise InvalidRequest(f"longer than {MAX_PROPERTY_ID_CHARS} characters", field=name)


def _required(data: dict, name: str) -> Any:
    try:
        return data[name]
    except KeyError:
        raise InvalidRequest("required", field=name) from None


def _array(data: dict, name: str, max_len: int) -> list:
    value = _required(data, name)
    if not isinstance(value, list):
        raise InvalidRequest(f"must be an array, got {_type_name(value)}", field=name)
    if not value:
        raise InvalidRequest("must not be empty", field=name)
    if len(value) > max_len:
        raise InvalidRequest(f"too many entries: {len(value)}, the limit is {max_len}", field=name)
    return value


def _no_duplicate(seen: dict[str, int], key: str, index: int, first_fmt: str, path: str) -> None:
    first = seen.setdefault(key, index)
    if first != index:
        raise InvalidRequest(f"duplicate id {show(key, 60)} (same as {first_fmt.format(first)})", field=path)


def check_item_id(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"must be a string, got {_type_name(value)}", field=path)
    if not ITEM_ID_RE.fullmatch(value) or value in (".", ".."):
        raise InvalidRequest(
            f'invalid item id {show(value, 60)}: use 1-149 characters of A-Z a-z 0-9 - _ + , ( ) . and not "." or ".."',
            field=path,
        )
    return value


def check_collection_id(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"must be a string, got {_type_name(value)}", field=path)
    if not COLLECTION_ID_RE.fullmatch(value) or value in (".", ".."):
        raise InvalidRequest(
            f'invalid collection id {show(value, 60)}: use 1-149 characters of A-Z a-z 0-9 - _ . and not "." or ".."',
            field=path,
        )
    return value


# ----------------------------------------------------------------------------------------------------------------
# STAC items


def validate_item(
    item: Any, collection: str, path: str, limits: Limits = DEFAULT_LIMITS, *, encoded_size: int | None = None
) -> dict:
    """Check one STAC Item for ingestion into ``collection``. ``path`` prefixes field paths in errors
    (``items[3]`` inline, ``item_urls[3]`` after a claim-check fetch). ``encoded_size`` is the item's JSON size
    in bytes (or an upper bound); when ``None`` it is measured. Returns the item, or a shallow copy with
    ``collection`` filled in when it was absent. The input is never modified."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"must be a JSON object (a STAC Item), got {_type_name(item)}", field=path)
    if encoded_size is None or encoded_size > limits.max_item_bytes:
        encoded_size = _encoded_size(item)
        if encoded_size > limits.max_item_bytes:
            raise InvalidRequest(f"item JSON is {encoded_size} bytes, the limit is {limits.max_item_bytes}", field=path)
    if item.get("type") != "Feature":
        raise InvalidRequest(f'must be "Feature", got {show(item.get("type"), 40)}', field=f"{path}.type")
    if "id" not in item:
        raise InvalidRequest("required", field=f"{path}.id")
    check_item_id(item["id"], f"{path}.id")

    item_collection = item.get("collection")
    if "collection" in item and item_collection != collection:
        raise InvalidRequest(
            f"{show(item_collection, 60)} does not match the request's collection {show(collection, 60)}",
            field=f"{path}.collection",
        )
    for key in ("stac_version",):
        if key in item and not isinstance(item[key], str):
            raise InvalidRequest(f"must be a string, got {_type_name(item[key])}", field=f"{path}.{key}")
    if "stac_extensions" in item:
        ext = item["stac_extensions"]
        if not isinstance(ext, list) or not all(isinstance(e, str) for e in ext):
            raise InvalidRequest("must be an array of strings", field=f"{path}.stac_extensions")

    if "geometry" not in item:
        raise InvalidRequest("required (a GeoJSON geometry)", field=f"{path}.geometry")
    _check_geometry(item["geometry"], f"{path}.geometry", 0)
    if "bbox" not in item:
        raise InvalidRequest("required (4 or 6 numbers)", field=f"{path}.bbox")
    _check_bbox(item["bbox"], f"{path}.bbox")

    props = item.get("properties")
    if not isinstance(props, dict):
        raise InvalidRequest(
            "required object" if props is None else f"must be an object, got {_type_name(props)}",
            field=f"{path}.properties",
        )
    _check_datetimes(props, f"{path}.properties")

    assets = item.get("assets")
    if not isinstance(assets, dict):
        raise InvalidRequest(
            "required object" if assets is None else f"must be an object, got {_type_name(assets)}",
            field=f"{path}.assets",
        )
    if len(assets) > limits.max_assets:
        raise InvalidRequest(
            f"too many assets: {len(assets)}, the limit is {limits.max_assets}", field=f"{path}.assets"
        )
    for key, asset in assets.items():
        apath = key_path(f"{path}.assets", key)
        if not ASSET_KEY_RE.fullmatch(key):
            raise InvalidRequest(
                f"invalid asset key {show(key, 60)}: use 1-255 characters of A-Z a-z 0-9 - _ + , ( ) .",
                field=apath,
            )
        if not isinstance(asset, dict):
            raise InvalidRequest(f"must be an object, got {_type_name(asset)}", field=apath)
        _check_href(asset.get("href"), f"{apath}.href")

    if "links" in item:
        links = item["links"]
        if not isinstance(links, list):
            raise InvalidRequest(f"must be an array, got {_type_name(links)}", field=f"{path}.links")
        for i, link in enumerate(links):
            if not isinstance(link, dict):
                raise InvalidRequest(f"must be an object, got {_type_name(link)}", field=f"{path}.links[{i}]")
            _check_href(link.get("href"), f"{path}.links[{i}].href")

    # Free-form members (properties, assets, links, extension fields) must respect the nesting limit.
    for key, value in item.items():
        if key != "geometry" and isinstance(value, dict | list):
            _check_depth(value, 2, limits.max_depth, key_path(path, key))

    if item_collection is None:
        item = dict(item)
        item["collection"] = collection
    return item


def _encoded_size(item: dict) -> int:
    try:
        return len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return 1 << 62


def _check_href(href: Any, path: str) -> None:
    if not isinstance(href, str):
        raise InvalidRequest(
            "required string" if href is None else f"must be a string, got {_type_name(href)}", field=path
        )
    if not href or len(href) > MAX_HREF_CHARS or _CONTROL_CHAR.search(href):
        raise InvalidRequest(
            f"must be a non-empty URL of at most {MAX_HREF_CHARS} characters without control characters", field=path
        )


def _check_depth(value: Any, depth: int, max_depth: int, path: str) -> None:
    """Raise if ``value`` (at nesting level ``depth``) nests deeper than ``max_depth``."""
    trail = _too_deep(value, depth, max_depth)
    if trail is not None:
        # Name the member plus its leading object keys (at most 8), not a 64-step path.
        for step in list(reversed(trail))[:8]:
            if not isinstance(step, str):
                break
            path = key_path(path, step)
        raise InvalidRequest(f"nesting deeper than {max_depth} levels below this field", field=path)


def _too_deep(value: dict | list, depth: int, max_depth: int) -> list[str | int] | None:
    """``None`` if fine, else the keys/indexes (innermost first) leading to the first too-deep container."""
    if depth > max_depth:
        return []
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in children:
        if isinstance(v, dict | list):
            trail = _too_deep(v, depth + 1, max_depth)
            if trail is not None:
                trail.append(k)
                return trail
    return None


def _is_number(x: Any) -> bool:
    return (type(x) is float and math.isfinite(x)) or type(x) is int


def _check_positions(coords: Any, path: str, min_len: int, ring: bool = False) -> None:
    if not isinstance(coords, list):
        raise InvalidRequest(f"must be an array of positions, got {_type_name(coords)}", field=path)
    if len(coords) < min_len:
        raise InvalidRequest(f"needs at least {min_len} positions, got {len(coords)}", field=path)
    for i, p in enumerate(coords):
        if type(p) is not list or not 2 <= len(p) <= 3:
            raise InvalidRequest("a position must be an array of 2 or 3 numbers", field=f"{path}[{i}]")
        lon, lat = p[0], p[1]
        if not (_is_number(lon) and _is_number(lat) and (len(p) == 2 or _is_number(p[2]))):
            raise InvalidRequest("a position must be an array of 2 or 3 finite numbers", field=f"{path}[{i}]")
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidRequest(
                f"position {show(p, 60)} is outside longitude [-180, 180] / latitude [-90, 90]", field=f"{path}[{i}]"
            )
    if ring and coords[0] != coords[-1]:
        raise InvalidRequest("a linear ring must be closed (first position equal to the last)", field=path)


def _check_nested(coords: Any, path: str, what: str) -> list:
    if not isinstance(coords, list) or not coords:
        raise InvalidRequest(f"must be a non-empty array of {what}", field=path)
    return coords


def _check_geometry(geom: Any, path: str, nesting: int) -> None:
    if geom is None:
        raise InvalidRequest(
            "must not be null: GeoCatalog requires a geometry and a bbox (STAC forbids a bbox without geometry)",
            field=path,
        )
    if not isinstance(geom, dict):
        raise InvalidRequest(f"must be a GeoJSON geometry object, got {_type_name(geom)}", field=path)
    gtype = geom.get("type")
    if gtype == "GeometryCollection":
        if nesting >= _MAX_GEOMETRY_COLLECTION_NESTING:
            raise InvalidRequest("GeometryCollections nested too deep", field=path)
        members = _check_nested(geom.get("geometries"), f"{path}.geometries", "geometries")
        for i, member in enumerate(members):
            _check_geometry(member, f"{path}.geometries[{i}]", nesting + 1)
        return
    if gtype not in GEOMETRY_TYPES:
        raise InvalidRequest(f"must be one of {', '.join(GEOMETRY_TYPES)}, got {show(gtype, 40)}", field=f"{path}.type")
    cpath = f"{path}.coordinates"
    if "coordinates" not in geom:
        raise InvalidRequest("required", field=cpath)
    coords = geom["coordinates"]
    if gtype == "Point":
        if not isinstance(coords, list):
            raise InvalidRequest(f"must be a position (2 or 3 numbers), got {_type_name(coords)}", field=cpath)
        _check_positions([coords], cpath, 1)
    elif gtype == "MultiPoint":
        _check_positions(coords, cpath, 1)
    elif gtype == "LineString":
        _check_positions(coords, cpath, 2)
    elif gtype == "MultiLineString":
        for i, line in enumerate(_check_nested(coords, cpath, "line strings")):
            _check_positions(line, f"{cpath}[{i}]", 2)
    elif gtype == "Polygon":
        for i, ring in enumerate(_check_nested(coords, cpath, "linear rings")):
            _check_positions(ring, f"{cpath}[{i}]", 4, ring=True)
    else:  # MultiPolygon
        for i, poly in enumerate(_check_nested(coords, cpath, "polygons")):
            for j, ring in enumerate(_check_nested(poly, f"{cpath}[{i}]", "linear rings")):
                _check_positions(ring, f"{cpath}[{i}][{j}]", 4, ring=True)


def _check_bbox(bbox: Any, path: str) -> None:
    if not isinstance(bbox, list) or len(bbox) not in (4, 6):
        got = f"{len(bbox)} entries" if isinstance(bbox, list) else _type_name(bbox)
        raise InvalidRequest(f"must be an array of 4 or 6 numbers, got {got}", field=path)
    if not all(_is_number(x) for x in bbox):
        raise InvalidRequest("must contain only finite numbers", field=path)
    if len(bbox) == 4:
        west, south, east, north = bbox
    else:
        west, south, zmin, east, north, zmax = bbox
        if zmin > zmax:
            raise InvalidRequest(f"minimum elevation {zmin} is greater than maximum {zmax}", field=path)
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidRequest("longitudes must be within [-180, 180]", field=path)
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise InvalidRequest("latitudes must be within [-90, 90]", field=path)
    if south > north:
        raise InvalidRequest(f"south {south} is greater than north {north}", field=path)
    # west > east is allowed: the box crosses the antimeridian (GeoJSON RFC 7946 section 5.2).


def parse_rfc3339(value: Any) -> datetime | None:
    """An aware datetime for an RFC 3339 date-time string, or ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        return None
    date, time, frac, tz = m.groups()
    tz = "+00:00" if tz in ("Z", "z") else tz
    text = f"{date}T{time}{(frac or '')[:7]}{tz}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _check_datetimes(props: dict, path: str) -> None:
    start = end = None
    for key in ("start_datetime", "end_datetime"):
        if key in props:
            value = props[key]
            parsed = parse_rfc3339(value)
            if parsed is None:
                raise InvalidRequest(f"must be an RFC 3339 date-time, got {show(value, 40)}", field=f"{path}.{key}")
            if key == "start_datetime":
                start = parsed
            else:
                end = parsed
    if "datetime" not in props:
        raise InvalidRequest(
            "required: an RFC 3339 date-time, or null with start_datetime and end_datetime", field=f"{path}.datetime"
        )
    value = props["datetime"]
    if value is None:
        if start is None or end is None:
            missing = "start_datetime" if start is None else "end_datetime"
            raise InvalidRequest(f"{missing} is required when datetime is null", field=f"{path}.{missing}")
    elif parse_rfc3339(value) is None:
        raise InvalidRequest(
            f"must be an RFC 3339 date-time (e.g. 2024-05-01T10:00:00Z) or null, got {show(value, 40)}",
            field=f"{path}.datetime",
        )
    if start is not None and end is not None and start > end:
        raise InvalidRequest("start_datetime is after end_datetime", field=f"{path}.start_datetime")
