"""``DeadLetterRecord``: a plain, lossless copy of one dead-lettered message, and its JSON (NDJSON line) form.

The same dict is the ``dlq list --format ndjson`` line and the ``dlq export`` line. ``body_base64`` and the
typed ``application_properties`` are authoritative (enough to replay later); ``body`` is a convenience for
people (parsed JSON, else text, else null).

Application-property values keep their type through JSON: str, int, float, bool and null as themselves,
others tagged: ``{"$bytes": "<base64>"}``, ``{"$uuid": "..."}``. The SDK hands received string properties back
as ``bytes``; they are decoded as UTF-8 (a binary value that is not UTF-8 stays ``$bytes``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.domain import wire

FORMAT = "gcw-dlq/1"

# Application properties the worker and this tool use.
ORIGINAL_MESSAGE_ID = wire.ORIGINAL_MESSAGE_ID
REPLAY_COUNT = wire.REPLAY_COUNT
# Set by the runtime on a rescheduled retry copy (worker/servicebus/messages.py): the request's first message id.
RUNTIME_REQUEST_ID = wire.REQUEST_ID
RUNTIME_ATTEMPT = wire.ATTEMPT
REPLAY_TO = wire.REPLAY_TO
LAST_DEAD_LETTER_REASON = wire.LAST_DEAD_LETTER_REASON
# Properties Service Bus adds when it dead-letters a message (they must not travel with a replay).
DEAD_LETTER_REASON_PROPERTY = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION_PROPERTY = "DeadLetterErrorDescription"


class RecordError(ValueError):
    """A record (e.g. an export line) that cannot be used; the message names the field and why."""


@dataclass(frozen=True)
class DeadLetterRecord:
    sequence_number: int | None
    message_id: str | None
    body: bytes
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    session_id: str | None = None
    partition_key: str | None = None
    content_type: str | None = None
    subject: str | None = None
    to: str | None = None
    time_to_live: timedelta | None = None
    enqueued_time: datetime | None = None
    delivery_count: int | None = None
    dead_letter_reason: str | None = None
    dead_letter_error_description: str | None = None
    dead_letter_source: str | None = None
    body_type: str = "data"
    entity: str | None = None  # the entity path whose dead-letter queue held it

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def original_message_id(self) -> str | None:
        """The id of the first send: kept across replays in ``gcw-original-message-id``; a runtime retry copy
        (``<id>~<attempt>``) names it in ``gcw-request-id``."""
        for name in (ORIGINAL_MESSAGE_ID, RUNTIME_REQUEST_ID):
            original = self.application_properties.get(name)
            if original:
                return str(original)
        return self.message_id

    @property
    def replay_count(self) -> int:
        value = self.application_properties.get(REPLAY_COUNT, 0)
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    @property
    def body_json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def _body_field(self, *names: str) -> str | None:
        parsed = self.body_json
        if isinstance(parsed, dict):
            for name in names:
                value = parsed.get(name)
                if isinstance(value, str):
                    return value
        return None

    @property
    def collection(self) -> str | None:
        return self._body_field("collection", "collection_id", "collectionId")

    @property
    def action(self) -> str | None:
        return self._body_field("action")

    @property
    def error_code(self) -> str | None:
        """The underlying error code the worker's description names (``CollectionDoesNotExist``, ...)."""
        return wire.description_code(self.dead_letter_error_description)

    # ---- from the SDK --------------------------------------------------------------------------------------
    @classmethod
    def from_message(cls, message: Any, *, entity: str | None = None) -> DeadLetterRecord:
        """From an ``azure.servicebus.ServiceBusReceivedMessage`` (peeked or received)."""
        body_type = str(getattr(message.body_type, "value", message.body_type) or "data").lower()
        if body_type == "data":
            body = b"".join(bytes(part) for part in message.body)
        else:  # value / sequence bodies: kept as JSON text; replay refuses them (see replay.build_message)
            body = json.dumps(message.body, default=str).encode()
        props = {_text(k): _plain_value(v) for k, v in (message.application_properties or {}).items()}
        enqueued = message.enqueued_time_utc
        if enqueued is not None and enqueued.tzinfo is None:
            enqueued = enqueued.replace(tzinfo=UTC)
        return cls(
            sequence_number=message.sequence_number,
            message_id=_opt_text(message.message_id),
            body=body,
            application_properties=props,
            correlation_id=_opt_text(message.correlation_id),
            reply_to=_opt_text(message.reply_to),
            reply_to_session_id=_opt_text(message.reply_to_session_id),
            session_id=_opt_text(message.session_id),
            partition_key=_opt_text(message.partition_key),
            content_type=_opt_text(message.content_type),
            subject=_opt_text(message.subject),
            to=_opt_text(message.to),
            time_to_live=message.time_to_live,
            enqueued_time=enqueued,
            delivery_count=message.delivery_count,
            dead_letter_reason=message.dead_letter_reason,
            dead_letter_error_description=message.dead_letter_error_description,
            dead_letter_source=message.dead_letter_source,
            body_type=body_type,
            entity=entity,
        )

    # ---- JSON ----------------------------------------------------------------------------------------------
    def to_dict(self, *, include_body_view: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "entity": self.entity,
            "sequence_number": self.sequence_number,
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "dead_letter_reason": self.dead_letter_reason,
            "dead_letter_error_description": self.dead_letter_error_description,
            "error_code": self.error_code,
            "dead_letter_source": self.dead_letter_source,
            "delivery_count": self.delivery_count,
            "enqueued_time": self.enqueued_time.isoformat() if self.enqueued_time else None,
            "replay_count": self.replay_count,
            "collection": self.collection,
            "action": self.action,
            "correlation_id": self.correlation_id,
            "reply_to": self.reply_to,
            "reply_to_session_id": self.reply_to_session_id,
            "session_id": self.session_id,
            "partition_key": self.partition_key,
            "content_type": self.content_type,
            "subject": self.subject,
            "to": self.to,
            "time_to_live_seconds": self.time_to_live.total_seconds() if self.time_to_live is not None else None,
            "application_properties": {k: encode_value(v) for k, v in self.application_properties.items()},
            "body_type": self.body_type,
            "body_base64": base64.b64encode(self.body).decode("ascii"),
        }
        if include_body_view:
            parsed = self.body_json
            if parsed is not None:
                data["body"] = parsed
            else:
                try:
                    data["body"] = self.body.decode("utf-8")
                except UnicodeDecodeError:
                    data["body"] = None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "record") -> DeadLetterRecord:
        """The inverse of ``to_dict``; raises ``RecordError`` naming the field (and ``where``, e.g. 'line 7')."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise RecordError(f"{where}: field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        try:
            body = base64.b64decode(data["body_base64"], validate=True)
        except KeyError:
            raise RecordError(f"{where}: field 'body_base64' is missing") from None
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{where}: field 'body_base64' is not valid base64 ({exc})") from None
        props_raw = data.get("application_properties") or {}
        if not isinstance(props_raw, Mapping):
            raise RecordError(f"{where}: field 'application_properties' must be an object")
        props = {}
        for key, value in props_raw.items():
            try:
                props[key] = decode_value(value)
            except ValueError as exc:
                raise RecordError(f"{where}: application_properties[{key!r}]: {exc}") from None
        ttl = data.get("time_to_live_seconds")
        enqueued = data.get("enqueued_time")
        try:
            enqueued_time = datetime.fromisoformat(enqueued) if enqueued else None
        except (TypeError, ValueError):
            raise RecordError(f"{where}: field 'enqueued_time' is not an ISO-8601 timestamp: {enqueued!r}") from None
        for name in ("sequence_number", "delivery_count"):
            if data.get(name) is not None and not isinstance(data.get(name), int):
                raise RecordError(f"{where}: field {name!r} must be an integer, got {data.get(name)!r}")
        if ttl is not None and not isinstance(ttl, int | float):
            raise RecordError(f"{where}: field 'time_to_live_seconds' must be a number, got {ttl!r}")
        return cls(
            sequence_number=data.get("sequence_number"),
            message_id=data.get("message_id"),
            body=body,
            application_properties=props,
            correlation_id=data.get("correlation_id"),
            reply_to=data.get("reply_to"),
            reply_to_session_id=data.get("reply_to_session_id"),
            session_id=data.get("session_id"),
            partition_key=data.get("partition_key"),
            content_type=data.get("content_type"),
            subject=data.get("subject"),
            to=data.get("to"),
            time_to_live=timedelta(seconds=ttl) if ttl is not None else None,
            enqueued_time=enqueued_time,
            delivery_count=data.get("delivery_count"),
            dead_letter_reason=data.get("dead_letter_reason"),
            dead_letter_error_description=data.get("dead_letter_error_description"),
            dead_letter_source=data.get("dead_letter_source"),
            body_type=data.get("body_type") or "data",
            entity=data.get("entity"),
        )


def encode_value(value: Any) -> Any:
    """An application-property value as JSON, keeping its type (see module docstring)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    return {"$str": str(value)}


def decode_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError(f"a tagged value has exactly one key ($bytes, $uuid, $datetime, $str), got {list(value)}")
        ((tag, inner),) = value.items()
        if tag == "$bytes":
            return base64.b64decode(inner, validate=True)
        if tag == "$uuid":
            return uuid.UUID(inner)
        if tag == "$datetime":
            return datetime.fromisoformat(inner)
        if tag == "$str":
            return str(inner)
        raise ValueError(f"unknown tag {tag!r}")
    if isinstance(value, list):
        raise ValueError("lists are not valid application-property values")
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _plain_value(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value
