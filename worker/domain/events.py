"""Blob Storage events as requests: Event Grid events (both schemas) delivered to Service Bus, mapped to work.

Event Grid delivers one event per Service Bus message, the event JSON as the body, in the subscription's schema:

- the **Event Grid event schema**: ``id``, ``topic``, ``subject``, ``eventType``, ``eventTime``, ``data``,
  ``dataVersion``, ``metadataVersion``;
- **CloudEvents 1.0** (structured JSON): ``specversion`` (``"1.0"``), ``id``, ``source``, ``subject``, ``type``,
  ``time``, ``data``.

For Blob Storage (``Microsoft.Storage.BlobCreated`` / ``Microsoft.Storage.BlobDeleted``) the subject is
``/blobServices/default/containers/<container>/blobs/<blob name>``, the topic/source ends with
``/storageAccounts/<account>``, and ``data`` carries ``url`` (the blob), ``sequencer`` (orders events of one blob
name by string comparison) and, for BlobCreated, ``eTag`` and ``contentLength``. docs/messages.md "Events from Blob
Storage" lists the fields used, with Microsoft's schema pages.

An :class:`EventMapping` (``--event-mapping``) selects blobs by storage account (optional), container, name prefix
and suffix, and names the collection: fixed, or ``@item`` (the item's own ``collection`` field). The item id is
derived from the blob name: its last path segment without the mapping's suffix (``stac/2024/a.json`` -> ``a``).

The event ``id`` is the request's idempotency key: the result's ``request_id`` and the reply's message id derive
from it, whatever message id the delivery carried. Ordering (an older event must not undo a newer one) is not
decided here but by the processor against the blob's current state (``worker.processing.events``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from worker.adapters.hosts import item_url_problem
from worker.domain.contract import (
    DEFAULT_LIMITS,
    ITEM_ID_RE,
    MAX_PROPERTY_ID_CHARS,
    InvalidRequest,
    Limits,
    MessageMeta,
    Request,
    check_collection_id,
    parse_rfc3339,
    show,
)
from worker.domain.errors import ErrorKind, WorkerError
from worker.domain.secrets import redact

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
EVENT_TYPES = {BLOB_CREATED: "created", BLOB_DELETED: "deleted"}
CLOUDEVENTS_VERSION = "1.0"
ITEM_COLLECTION = "@item"

Schema = Literal["eventgrid", "cloudevents"]
Kind = Literal["created", "deleted"]
Unmatched = Literal["invalid", "ignore"]

_SUBJECT_RE = re.compile(r"/blobServices/default/containers/([^/]+)/blobs/(.+)", re.DOTALL)
_ACCOUNT_RE = re.compile(r".*/providers/Microsoft\.Storage/storageAccounts/([^/]+)", re.IGNORECASE)
_CONTAINER_RE = re.compile(r"\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", re.ASCII)
_MAPPING_KEYS = ("account", "container", "prefix", "suffix", "collection")


class EventIgnored(WorkerError):
    """The event matches no mapping and ``--event-unmatched ignore`` says to complete it without an answer."""

    kind = ErrorKind.INVALID
    code = "EventIgnored"


@dataclass(frozen=True)
class EventMapping:
    """Which blobs become items of which collection. ``collection`` is a collection id or ``@item``."""

    container: str
    collection: str
    prefix: str = ""
    suffix: str = ""
    account: str | None = None

    @classmethod
    def parse(cls, spec: str) -> EventMapping:
        """``container=items,prefix=stac/,suffix=.json,collection=naip`` (``collection=@item``: from the item;
        ``account=NAME`` optional). Raises ``ValueError`` naming the problem."""
        values: dict[str, str] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in _MAPPING_KEYS:
                raise ValueError(f"{part.strip()!r} is not one of {', '.join(k + '=...' for k in _MAPPING_KEYS)}")
            if key in values:
                raise ValueError(f"{key}= given twice")
            values[key] = value.strip()
        container = values.get("container", "")
        if not _CONTAINER_RE.fullmatch(container):
            raise ValueError(f"container= must be a container name (3-63 of a-z 0-9 -), got {container!r}")
        collection = values.get("collection", "")
        if not collection:
            raise ValueError("collection= is required: a collection id, or @item for the item's own collection field")
        if collection != ITEM_COLLECTION:
            try:
                check_collection_id(collection, "collection")
            except InvalidRequest as exc:
                raise ValueError(f"collection= {exc.message}") from None
        account = values.get("account") or None
        return cls(container, collection, values.get("prefix", ""), values.get("suffix", ""), account)

    def describe(self) -> str:
        where = f"{self.account}/" if self.account else ""
        return f"{where}{self.container}/{self.prefix}*{self.suffix} -> {self.collection}"

    def matches(self, account: str | None, container: str, blob: str) -> bool:
        if self.account is not None and (account or "").lower() != self.account.lower():
            return False
        return (
            container == self.container
            and len(blob) > len(self.prefix) + len(self.suffix)
            and blob.startswith(self.prefix)
            and blob.endswith(self.suffix)
        )

    def derive_id(self, blob: str) -> str:
        """The item id of a matching blob: its last path segment without the suffix."""
        name = blob[len(self.prefix) : len(blob) - len(self.suffix)] if self.suffix else blob[len(self.prefix) :]
        return name.rsplit("/", 1)[-1]

    @property
    def fixed_collection(self) -> str | None:
        return None if self.collection == ITEM_COLLECTION else self.collection


@dataclass(frozen=True)
class EventRouting:
    """The configured mappings (first match wins) and what happens to an event that matches none."""

    mappings: tuple[EventMapping, ...] = ()
    unmatched: Unmatched = "invalid"

    @classmethod
    def from_specs(cls, specs: tuple[str, ...] | list[str], unmatched: str = "invalid") -> EventRouting:
        if unmatched not in ("invalid", "ignore"):
            raise ValueError(f"must be 'invalid' or 'ignore', got {unmatched!r}")
        return cls(tuple(EventMapping.parse(s) for s in specs), "ignore" if unmatched == "ignore" else "invalid")

    def route(self, account: str | None, container: str, blob: str) -> EventMapping | None:
        return next((m for m in self.mappings if m.matches(account, container, blob)), None)


@dataclass(frozen=True)
class BlobEvent:
    """One Blob Storage event, checked and mapped."""

    id: str
    schema: Schema
    event_type: str
    kind: Kind
    account: str | None
    container: str
    blob: str
    url: str
    sequencer: str | None
    etag: str | None
    mapping: EventMapping
    item_id: str

    @property
    def collection(self) -> str | None:
        """The mapping's fixed collection; ``None`` when it comes from the item (BlobCreated only)."""
        return self.mapping.fixed_collection


def event_schema(data: Any) -> Schema | None:
    """Which event schema a decoded body is in, or ``None`` for anything else (a contract request)."""
    if not isinstance(data, dict):
        return None
    if "specversion" in data:
        return "cloudevents"
    if "version" not in data and ("eventType" in data or ("subject" in data and "data" in data)):
        return "eventgrid"
    return None


def event_id(body: bytes) -> str | None:
    """The ``id`` of an event body, when it is one with a usable id (for answering an invalid event)."""
    import json

    if len(body) > 1_048_576:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if event_schema(data) is None:
        return None
    value = data.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_PROPERTY_ID_CHARS else None


def _string(data: dict, name: str, field: str | None = None, *, required: bool = True) -> str | None:
    field = field or name
    if name not in data or data[name] is None:
        if required:
            raise InvalidRequest("required", field=field, code="InvalidEvent")
        return None
    value = data[name]
    if not isinstance(value, str) or (required and not value):
        raise InvalidRequest(f"must be a non-empty string, got {show(value, 40)}", field=field, code="InvalidEvent")
    return value


def parse_event(data: dict, meta: MessageMeta, limits: Limits = DEFAULT_LIMITS) -> Request:
    """An event body (already decoded) -> a :class:`Request` carrying a :class:`BlobEvent`.

    Raises :class:`InvalidRequest` naming the field, or :class:`EventIgnored` for an unmatched event when the
    routing says to ignore those."""
    schema = event_schema(data)
    if schema is None:  # pragma: no cover - callers check
        raise InvalidRequest("not an Event Grid event or CloudEvent", field="body", code="InvalidEvent")
    if schema == "cloudevents":
        version = data["specversion"]
        if version != CLOUDEVENTS_VERSION:
            raise InvalidRequest(
                f'unsupported CloudEvents version {show(version, 20)}; this worker reads "1.0" (structured JSON)',
                field="specversion",
                code="InvalidEvent",
            )
        if "data_base64" in data:
            raise InvalidRequest(
                "binary event data is not supported: a Blob Storage event carries JSON in data",
                field="data_base64",
                code="InvalidEvent",
            )
        type_field, source_field, time_field = "type", "source", "time"
    else:
        type_field, source_field, time_field = "eventType", "topic", "eventTime"
    ident = _string(data, "id")
    assert ident is not None
    if len(ident) > MAX_PROPERTY_ID_CHARS:
        raise InvalidRequest(
            f"longer than {MAX_PROPERTY_ID_CHARS} characters (the event id is the request id)",
            field="id",
            code="InvalidEvent",
        )
    event_type = _string(data, type_field)
    assert event_type is not None
    kind = EVENT_TYPES.get(event_type)
    if kind is None:
        raise InvalidRequest(
            f"unsupported event type {show(event_type, 80)}; this worker handles {BLOB_CREATED} and {BLOB_DELETED}",
            field=type_field,
            code="UnsupportedEventType",
        )
    event_time = data.get(time_field)
    if event_time is not None and parse_rfc3339(event_time) is None:
        raise InvalidRequest(
            f"must be an RFC 3339 date-time, got {show(event_time, 40)}", field=time_field, code="InvalidEvent"
        )
    source = _string(data, source_field, required=schema == "eventgrid")
    account_match = _ACCOUNT_RE.fullmatch(source or "")
    account = account_match.group(1) if account_match else None
    subject = _string(data, "subject")
    assert subject is not None
    subject_match = _SUBJECT_RE.fullmatch(subject)
    if subject_match is None:
        raise InvalidRequest(
            f"{show(subject, 120)} is not a blob subject (/blobServices/default/containers/<container>/blobs/<name>)",
            field="subject",
            code="InvalidEvent",
        )
    container, blob = subject_match.group(1), subject_match.group(2)
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise InvalidRequest(
            "required object" if payload is None else f"must be an object, got {show(payload, 40)}",
            field="data",
            code="InvalidEvent",
        )
    url = _string(payload, "url", "data.url")
    assert url is not None
    problem = item_url_problem(url, limits.item_url_hosts)
    if problem is None:
        problem = _url_names_blob(url, container, blob)
    if problem:
        raise InvalidRequest(f"{problem}: {show(redact(url), 160)}", field="data.url", code="ItemUrlNotAllowed")
    sequencer = _string(payload, "sequencer", "data.sequencer", required=False)
    etag = _string(payload, "eTag", "data.eTag", required=False)

    routing = limits.events or EventRouting()
    mapping = routing.route(account, container, blob)
    where = f"container {show(container, 70)}, blob {show(blob, 120)}"
    if mapping is None:
        if routing.unmatched == "ignore" and routing.mappings:
            raise EventIgnored(f"no event mapping matches {where}", field="subject")
        configured = "; ".join(m.describe() for m in routing.mappings) or "none configured (--event-mapping)"
        raise InvalidRequest(
            f"no event mapping matches {where}; mappings: {configured}", field="subject", code="EventUnmatched"
        )
    item_id = mapping.derive_id(blob)
    if not ITEM_ID_RE.fullmatch(item_id) or item_id in (".", ".."):
        raise InvalidRequest(
            f"the item id derived from the blob name, {show(item_id, 80)}, is not a valid item id "
            "(1-149 characters of A-Z a-z 0-9 - _ + , ( ) .)",
            field="subject",
            code="InvalidEvent",
        )
    if kind == "deleted" and mapping.fixed_collection is None:
        raise InvalidRequest(
            f"cannot derive the collection of deleted blob {show(blob, 120)}: mapping {mapping.describe()} takes the "
            "collection from the item, and a deleted blob cannot be read; map it to a fixed collection",
            field="subject",
            code="CollectionNotDerivable",
        )
    event = BlobEvent(
        id=ident,
        schema=schema,
        event_type=event_type,
        kind=kind,
        account=account,
        container=container,
        blob=blob,
        url=url,
        sequencer=sequencer,
        etag=etag,
        mapping=mapping,
        item_id=item_id,
    )
    meta = dataclasses.replace(meta, message_id=ident)
    collection = mapping.fixed_collection or ""
    if kind == "created":
        return Request(meta, 1, "ingest", collection, item_urls=(url,), mode="upsert", event=event)
    return Request(meta, 1, "delete", collection, item_ids=(item_id,), event=event)


def _url_names_blob(url: str, container: str, blob: str) -> str | None:
    """``data.url`` must address the subject's blob: its path ends with ``/<container>/<blob name>``."""
    path = unquote(urlsplit(url).path)
    if not path.endswith(f"/{container}/{blob}"):
        return "does not address the blob named by subject"
    return None


def check_item_matches(event: BlobEvent, item: dict, path: str) -> None:
    """A BlobCreated item's id must be the one the mapping derives: a later BlobDeleted deletes that id."""
    if item.get("id") != event.item_id:
        raise InvalidRequest(
            f"{show(item.get('id'), 80)} differs from {show(event.item_id, 80)}, the id mapping "
            f"{event.mapping.describe()} derives from the blob name; a BlobDeleted of this blob would delete "
            f"{show(event.item_id, 80)}",
            field=f"{path}.id",
            code="ItemIdMismatch",
        )


def reject_event_array(data: Any) -> None:
    """Event Grid's webhook format is an array; Service Bus delivery is one event per message."""
    if isinstance(data, list) and data and event_schema(data[0]) is not None:
        raise InvalidRequest(
            f"an array of {len(data)} events; Event Grid delivers one event per Service Bus message "
            "(send each event as its own message)",
            field="body",
            code="InvalidEvent",
        )
