"""Translating between Service Bus messages and the contract: request metadata, replies, retry copies.

Pure functions: they build SDK message objects but never send anything, so they are unit-tested offline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from worker.contract import MessageMeta

ATTEMPT_PROPERTY = "gcw-attempt"
REQUEST_ID_PROPERTY = "gcw-request-id"
REPLY_ID_PREFIX = "result-"
MAX_DESCRIPTION = 4096
MAX_REASON = 256
MAX_MESSAGE_ID = 128


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def application_properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """The message's application properties with str keys and bytes values decoded."""
    props: dict[str, Any] = {}
    for key, value in (message.application_properties or {}).items():
        props[_text(key) or ""] = _text(value) if isinstance(value, bytes) else value
    return props


def attempt_of(props: Mapping[str, Any]) -> int:
    """The attempt number carried by a re-scheduled copy (1 for an original request)."""
    raw = props.get(ATTEMPT_PROPERTY)
    try:
        attempt = int(raw) if raw is not None else 1
    except (TypeError, ValueError, OverflowError):  # "garbage", NaN, +-inf: this runs on the owner thread
        return 1
    return max(1, attempt)


def meta_from_message(message: ServiceBusReceivedMessage) -> MessageMeta:
    """What the contract needs to know about a received request.

    A re-scheduled copy carries the original request's message id in ``gcw-request-id``: the request id (and so
    the reply's message id and the result's ``request_id``) stays the same across attempts.
    """
    props = application_properties(message)
    message_id = _text(props.get(REQUEST_ID_PROPERTY)) or _text(message.message_id) or ""
    return MessageMeta(
        message_id=message_id,
        correlation_id=_text(message.correlation_id),
        reply_to=_text(message.reply_to),
        reply_to_session_id=_text(message.reply_to_session_id),
        session_id=_text(message.session_id),
        delivery_count=int(message.delivery_count or 0),
        enqueued_time=message.enqueued_time_utc,
        attempt=attempt_of(props),
        application_properties=props,
    )


def reply_message_id(request_id: str) -> str:
    """Deterministic, so a reply re-sent after a redelivery is dropped by duplicate detection."""
    reply_id = REPLY_ID_PREFIX + request_id
    if len(reply_id) > MAX_MESSAGE_ID:
        import hashlib

        reply_id = REPLY_ID_PREFIX + hashlib.sha256(request_id.encode()).hexdigest()
    return reply_id


def reply_correlation_id(meta: MessageMeta) -> str:
    """The reply's correlation id: the request's ``correlation_id``, else its ``message_id``, always sendable.

    Service Bus rejects a message whose correlation id is over 128 characters (the SDK does not check it, so the
    send fails on the broker): a too-long correlation id (the request is then ``invalid``) is replaced by the
    request's message id; when that is too long as well, by ``sha256:`` + the hex SHA-256 of the correlation id
    (or the message id) as sent, which is stable across redeliveries. docs/messages.md documents the rule.
    """
    for candidate in (meta.correlation_id, meta.message_id):
        if candidate and len(candidate) <= MAX_MESSAGE_ID:
            return candidate
    import hashlib

    original = meta.correlation_id or meta.message_id or ""
    return "sha256:" + hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()


def build_reply(body: bytes, meta: MessageMeta, *, status: str | None = None) -> ServiceBusMessage:
    """The result message for the request described by ``meta``."""
    props: dict[str, Any] = {REQUEST_ID_PROPERTY: meta.message_id, ATTEMPT_PROPERTY: meta.attempt}
    if status:
        props["gcw-status"] = status
    # An over-long reply_to_session_id makes the request invalid (contract), but the SDK raises ValueError for a
    # session_id over 128 characters: the ``invalid`` answer goes out without one rather than never.
    session_id = meta.reply_to_session_id or None
    if session_id is not None and len(session_id) > MAX_MESSAGE_ID:
        session_id = None
    return ServiceBusMessage(
        body,
        message_id=reply_message_id(meta.message_id),
        correlation_id=reply_correlation_id(meta),
        session_id=session_id,
        content_type="application/json",
        subject="result",
        application_properties=props,
    )


def build_retry_copy(
    message: ServiceBusReceivedMessage, meta: MessageMeta, *, next_attempt: int
) -> ServiceBusMessage:
    """A copy of ``message`` for attempt ``next_attempt``; the caller schedules it.

    The copy gets its own message id (``<request id>~<attempt>``) so that duplicate detection on the request
    queue does not drop it, and carries the request id in ``gcw-request-id``.
    """
    props = application_properties(message)
    props[ATTEMPT_PROPERTY] = next_attempt
    props[REQUEST_ID_PROPERTY] = meta.message_id
    copy_id = f"{meta.message_id}~{next_attempt}"
    if len(copy_id) > MAX_MESSAGE_ID:
        import hashlib

        copy_id = hashlib.sha256(meta.message_id.encode()).hexdigest() + f"~{next_attempt}"
    return ServiceBusMessage(
        body_bytes(message),
        message_id=copy_id,
        correlation_id=meta.correlation_id or meta.message_id,
        session_id=meta.session_id,
        reply_to=meta.reply_to,
        reply_to_session_id=meta.reply_to_session_id,
        content_type=_text(message.content_type),
        subject=_text(message.subject),
        application_properties=props,
    )


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    """The message body as bytes, whatever AMQP body section it came in.

    Never raises (it runs on the receiver-owner thread): an odd body becomes bytes that the contract rejects.
    """
    body = message.body
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")  # a lone surrogate stays invalid UTF-8: the contract rejects it
    if isinstance(body, dict | list | int | float):
        import json

        try:
            return json.dumps(body).encode("utf-8")
        except (TypeError, ValueError):
            return repr(body).encode("utf-8", "replace")
    try:
        return b"".join(part if isinstance(part, bytes) else str(part).encode("utf-8", "replace") for part in body)
    except TypeError:  # not iterable: an AMQP value section holding a single non-JSON value
        return str(body).encode("utf-8", "replace")


def clip(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters (Service Bus rejects longer dead-letter descriptions)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 12] + " …[clipped]"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
