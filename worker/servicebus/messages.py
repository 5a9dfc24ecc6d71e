"""Translating between Service Bus messages and the contract: request metadata, replies, retry copies.

Pure functions: they build SDK message objects but never send anything, so they are unit-tested offline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from worker.domain import wire
from worker.domain.contract import MessageMeta, Result

ATTEMPT_PROPERTY = wire.ATTEMPT
REQUEST_ID_PROPERTY = wire.REQUEST_ID
REPLY_ID_PREFIX = "result-"
MAX_DESCRIPTION = wire.MAX_DESCRIPTION
MAX_REASON = 256
MAX_MESSAGE_ID = 128
# The reply queue's message size limit is 256 KiB on the Standard tier (the emulator's default too), counting the
# properties as well as the body: a result body is kept this far under it (docs/messages.md "Result size").
DEFAULT_MAX_RESULT_BYTES = 240 * 1024
RESULT_SIZE_NOTE_RESERVE = 512  # room kept for the note appended to the result's error message


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
        # The SDK gives AMQP's header delivery-count: the previous attempts (0 on the first delivery). The worker
        # counts this delivery too, as Service Bus's DeliveryCount (and the .NET SDK) does: 1 on the first.
        delivery_count=int(message.delivery_count or 0) + 1,
        enqueued_time=message.enqueued_time_utc,
        attempt=attempt_of(props),
        application_properties=props,
    )


def event_meta(meta: MessageMeta, body: bytes) -> MessageMeta:
    """For a Blob Storage event body, ``meta`` with the event ``id`` as the request id (results are correlated by
    event id, whatever message id Event Grid's delivery carried); any other body leaves ``meta`` as it is."""
    from dataclasses import replace

    from worker.domain.events import event_id

    ident = event_id(body)
    return replace(meta, message_id=ident) if ident else meta


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


def build_reply(
    body: bytes,
    meta: MessageMeta,
    *,
    status: str | None = None,
    trace_properties: Mapping[str, str] | None = None,
) -> ServiceBusMessage:
    """The result message for the request described by ``meta``; ``trace_properties`` (``traceparent``,
    ``Diagnostic-Id``, ``tracestate``: ``worker.tracing.reply_span``) carry the trace context on."""
    props: dict[str, Any] = {**(trace_properties or {}), REQUEST_ID_PROPERTY: meta.message_id}
    props[ATTEMPT_PROPERTY] = meta.attempt
    if status:
        props[wire.STATUS] = status
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


def build_retry_copy(message: ServiceBusReceivedMessage, meta: MessageMeta, *, next_attempt: int) -> ServiceBusMessage:
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


# ---- result size ---------------------------------------------------------------------------------------------
def _encode(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _clip_str(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: max(0, limit - 3)] + "..."
    return value


def _item_errors(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [i["error"] for i in doc["items"] if isinstance(i.get("error"), dict)]


def _clip_item_errors(limit: int) -> Any:
    def stage(doc: dict[str, Any]) -> str:
        for error in _item_errors(doc):
            error["code"] = _clip_str(error.get("code"), 64)
            error["message"] = _clip_str(error.get("message"), limit)
        if isinstance(doc.get("error"), dict):
            doc["error"]["code"] = _clip_str(doc["error"].get("code"), 128)
            doc["error"]["message"] = _clip_str(doc["error"].get("message"), 1024)
        return f"item error messages cut to {limit} characters"

    return stage


def _collapse_repeated_errors(doc: dict[str, Any]) -> str:
    first: dict[tuple[Any, Any], int] = {}
    for index, item in enumerate(doc["items"]):
        error = item.get("error")
        if not isinstance(error, dict):
            continue
        key = (error.get("code"), error.get("message"))
        if key in first:
            error["message"] = f"same as items[{first[key]}]"
        else:
            first[key] = index
    return 'repeated item errors collapsed ("same as items[i]")'


def _drop_item_error_messages(doc: dict[str, Any]) -> str:
    for error in _item_errors(doc):
        error["message"] = ""
    return "item error messages dropped (codes kept)"


def _shorten_operations(limit: int) -> Any:
    def stage(doc: dict[str, Any]) -> str:
        ops = doc["operations"]
        total = len(ops)
        keep_lo, keep_hi = 0, total  # the longest prefix that fits (binary search on the encoded size)
        while keep_lo < keep_hi:
            mid = (keep_lo + keep_hi + 1) // 2
            doc["operations"] = ops[:mid]
            if len(_encode(doc)) <= limit:
                keep_lo = mid
            else:
                keep_hi = mid - 1
        doc["operations"] = ops[:keep_lo]
        return f"{keep_lo} of {total} operations listed"

    return stage


def _drop_item_errors(doc: dict[str, Any]) -> str:
    for item in doc["items"]:
        item.pop("error", None)
    return "per-item errors dropped (ids and statuses kept)"


def _clip_ids(doc: dict[str, Any]) -> str:
    # only an ``invalid`` request can have ids this long (Service Bus ids are at most 128 characters)
    for name in ("request_id", "correlation_id"):
        doc[name] = _clip_str(doc.get(name), 1024)
    return "request ids over 1024 characters cut"


def result_body(result: Result, max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> tuple[bytes, str | None]:
    """The encoded result, shortened if needed so that it stays within ``max_bytes``.

    Returns ``(body, what was shortened or None)``. Status, counts, the summary error and every item's id and
    status are always kept; step by step, until the body fits (docs/messages.md "Result size"): item error
    messages are cut to 256 characters, repeated item errors (same code and message) collapsed into
    ``"same as items[i]"``, messages cut to 64 characters and collapsed again, item error messages dropped
    (codes kept), operations listed only as far as they fit, item errors dropped entirely, over-long request
    ids cut. The request-level ``error.message`` (when there is one) ends with a note saying what was done.
    """
    body = result.to_json_bytes()
    if len(body) <= max_bytes:
        return body, None
    doc = result.to_dict()
    target = max(0, max_bytes - RESULT_SIZE_NOTE_RESERVE)
    stages = (
        _clip_item_errors(256),
        _collapse_repeated_errors,
        _clip_item_errors(64),
        _collapse_repeated_errors,
        _drop_item_error_messages,
        _shorten_operations(target),
        _drop_item_errors,
        _clip_ids,
    )
    done: list[str] = []
    for stage in stages:
        what = stage(doc)
        if what not in done:
            done.append(what)
        if len(_encode(doc)) <= target:
            break
    summary = "; ".join(done)
    if isinstance(doc.get("error"), dict):
        note = f" [result shortened to fit {max_bytes} bytes: {summary}]"
        doc["error"]["message"] = str(doc["error"].get("message") or "") + note
    return _encode(doc), summary
