"""AMQP message sections as Service Bus needs them: parse what the SDK sends, build what it receives.

The properties, body and footer sections are kept byte-for-byte; the header, delivery annotations and message
annotations are rebuilt on every delivery (delivery count, lock token, sequence number, lock expiry) from the
sender's, application properties only when dead-letter details are added.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from proton import UNDESCRIBED, Array, Data, Described, symbol, timestamp, uint, ulong

from gcw_emulators.servicebus.store import Incoming, MessageState, StoredMessage

HEADER, DELIVERY_ANN, MESSAGE_ANN, PROPERTIES, APP_PROPERTIES, DATA, SEQUENCE, VALUE, FOOTER = range(0x70, 0x79)

A_SEQ = symbol("x-opt-sequence-number")
A_LOCK_TOKEN = symbol("x-opt-lock-token")  # a delivery annotation
A_ENQUEUED = symbol("x-opt-enqueued-time")
A_LOCKED_UNTIL = symbol("x-opt-locked-until")
A_SCHEDULED = symbol("x-opt-scheduled-enqueue-time")
A_STATE = symbol("x-opt-message-state")
A_DLQ_SOURCE = symbol("x-opt-deadletter-source")
# Service Bus's AMQP encoding of a .NET TimeSpan: a long of 100 ns ticks under this descriptor (the AMQP protocol
# guide's type mapping); an AMQP timestamp is milliseconds since the epoch
TIMESPAN = symbol("com.microsoft:timespan")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class CodecError(ValueError):
    """The bytes are not a valid AMQP message."""


def plain(value: Any) -> Any:
    """Copy memoryviews out of proton's Data buffer (they dangle once the Data is freed)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return type(value)((plain(k), plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, plain(value.value))
    return value


_SYMBOLIC_SECTIONS = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANN,
    "amqp:message-annotations:map": MESSAGE_ANN,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APP_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": SEQUENCE,
    "amqp:amqp-value:*": VALUE,
    "amqp:footer:map": FOOTER,
}
_SECTION_NAMES = {
    HEADER: "header",
    DELIVERY_ANN: "delivery-annotations",
    MESSAGE_ANN: "message-annotations",
    PROPERTIES: "properties",
    APP_PROPERTIES: "application-properties",
}


def read_value(data: Data) -> Any:
    """The value at the cursor as Python objects, binaries copied to ``bytes`` (hashable, so a map may use them
    as keys; proton's own ``get_object`` keys the dict with a writable memoryview and raises)."""
    kind = data.type()
    if kind == Data.BINARY:
        return bytes(data.get_binary())
    if kind == Data.LIST:
        items: list[Any] = []
        data.enter()
        while data.next():
            items.append(read_value(data))
        data.exit()
        return items
    if kind == Data.MAP:
        mapping: dict[Any, Any] = {}
        data.enter()
        while data.next():
            key = read_value(data)
            value = read_value(data) if data.next() else None
            try:
                mapping[key] = value
            except TypeError as exc:
                data.exit()
                raise CodecError(f"a map key of type {type(key).__name__} cannot be used here") from exc
        data.exit()
        return mapping
    if kind == Data.DESCRIBED:
        data.enter()
        data.next()
        descriptor = read_value(data)
        data.next()
        described = read_value(data)
        data.exit()
        return Described(descriptor, described)
    if kind == Data.ARRAY:
        _, is_described, element_type = data.get_array()
        data.enter()
        descriptor: Any = UNDESCRIBED
        if is_described:
            data.next()
            descriptor = read_value(data)
        elements = []
        while data.next():
            elements.append(read_value(data))
        data.exit()
        return Array(descriptor, element_type, *elements)
    return data.get_object()


def _section_code(data: Data, pos: int) -> int:
    if data.type() != Data.DESCRIBED:
        raise CodecError(f"AMQP section at byte {pos} is not a described type")
    data.enter()
    data.next()
    kind = data.type()
    if kind in (Data.ULONG, Data.UINT, Data.UBYTE, Data.USHORT):
        code = int(data.get_object())
    elif kind == Data.SYMBOL:
        code = _SYMBOLIC_SECTIONS.get(str(data.get_symbol()), -1)
    else:
        raise CodecError(f"AMQP section at byte {pos} has a descriptor that is neither a number nor a symbol")
    if not HEADER <= code <= FOOTER:
        raise CodecError(f"unknown AMQP message section descriptor 0x{code:x} at byte {pos}")
    data.next()
    return code


def _sections(raw: bytes) -> list[tuple[int, Any, bytes]]:
    """Split a message into ``(section code, value, encoded bytes)``. Only the sections the broker routes on
    (header, message annotations, properties, application properties) are decoded; body sections and the
    footer stay opaque bytes, so any AMQP value a client can encode passes through untouched. ``value`` of a
    data section is its binary (batch detection needs it), of other opaque sections ``None``."""
    out: list[tuple[int, Any, bytes]] = []
    pos = 0
    data = Data()
    while pos < len(raw):
        data.clear()
        rest = raw[pos:] if pos else raw
        try:
            used = data.decode(rest)
        except Exception as exc:
            raise CodecError(f"undecodable AMQP section at byte {pos}: {exc}") from exc
        if used <= 0:
            raise CodecError(f"undecodable AMQP section at byte {pos}")
        data.rewind()
        data.next()
        code = _section_code(data, pos)
        value: Any = None
        if code in _SECTION_NAMES:
            try:
                value = read_value(data)
            except CodecError as exc:
                raise CodecError(f"the {_SECTION_NAMES[code]} section cannot be read: {exc}") from exc
            expected = list if code in (HEADER, PROPERTIES) else dict
            if value is not None and not isinstance(value, expected):
                raise CodecError(f"the {_SECTION_NAMES[code]} section is not a {expected.__name__}")
        elif code == DATA and data.type() == Data.BINARY:
            value = bytes(data.get_binary())
        out.append((code, value, rest[:used]))
        pos += used
    return out


@dataclass
class WireMessage:
    """A parsed message: what is rebuilt per delivery, and the raw bytes that are passed through."""

    header: list[Any]
    annotations: dict[Any, Any]
    properties: list[Any]
    properties_raw: bytes
    app_properties_raw: bytes
    rest_raw: bytes  # body sections + footer
    app_properties: dict[Any, Any] | None = field(default=None)
    # the sender's delivery annotations: Azure delivers them with its own (x-opt-lock-token) to the receiver
    delivery_annotations: dict[Any, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str | None:
        mid = self.properties[0] if self.properties else None
        return None if mid is None else str(mid)

    @property
    def session_id(self) -> str | None:
        sid = self.properties[10] if len(self.properties) > 10 else None
        return None if sid is None else str(sid)

    @property
    def ttl(self) -> float | None:
        ttl = self.header[2] if len(self.header) > 2 else None
        return None if ttl is None else int(ttl) / 1000.0

    def attributes(self) -> dict[str, Any]:
        """System and application properties by name, for subscription filters."""
        props = self.properties + [None] * (13 - len(self.properties))

        def text(value: Any) -> str | None:
            if value is None:
                return None
            return bytes(value).decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        app = {text(k): _filter_value(v) for k, v in (self.app_properties or {}).items()}
        return {
            "message_id": text(props[0]),
            "to": text(props[2]),
            "subject": text(props[3]),
            "reply_to": text(props[4]),
            "correlation_id": text(props[5]),
            "content_type": text(props[6]),
            "session_id": text(props[10]),
            "reply_to_session_id": text(props[12]),
            "properties": app,
        }

    @property
    def scheduled_at(self) -> float | None:
        when = self.annotations.get(A_SCHEDULED)
        return None if when is None else int(when) / 1000.0


def _filter_value(value: Any) -> Any:
    """An application property as filters see it: text decoded, a timestamp as a UTC datetime and a timespan as
    a timedelta (what a rule's dateTime and duration parameters compare with)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, timestamp):
        return _EPOCH + dt.timedelta(milliseconds=int(value))
    if isinstance(value, Described) and value.descriptor == TIMESPAN and isinstance(value.value, int):
        return dt.timedelta(microseconds=value.value // 10)
    return value


def _amqp_value(value: Any) -> Any:
    """The AMQP form of a property a SQL action set: a datetime as a timestamp, a timedelta as a timespan."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return timestamp((aware - _EPOCH) // dt.timedelta(milliseconds=1))
    if isinstance(value, dt.timedelta):
        return Described(TIMESPAN, value // dt.timedelta(microseconds=1) * 10)
    return value


def parse(raw: bytes) -> WireMessage:
    return _from_sections(_sections(raw))


def _from_sections(sections: list[tuple[int, Any, bytes]]) -> WireMessage:
    header: list[Any] = []
    delivery: dict[Any, Any] = {}
    annotations: dict[Any, Any] = {}
    properties: list[Any] = []
    properties_raw = app_raw = b""
    app: dict[Any, Any] | None = None
    rest: list[bytes] = []
    for code, value, chunk in sections:
        if code == HEADER:
            header = list(value or [])
        elif code == DELIVERY_ANN:
            delivery = dict(value or {})
        elif code == MESSAGE_ANN:
            annotations = dict(value or {})
        elif code == PROPERTIES:
            properties = list(value or [])
            properties_raw = chunk
        elif code == APP_PROPERTIES:
            app_raw = chunk
            app = dict(value or {})
        elif DATA <= code <= FOOTER:
            rest.append(chunk)
        else:
            raise CodecError(f"unknown AMQP message section descriptor 0x{code:x}")
    header += [None] * (5 - len(header))
    return WireMessage(header, annotations, properties, properties_raw, app_raw, b"".join(rest), app, delivery)


def split_batch(raw: bytes) -> list[bytes] | None:
    """The inner messages of a batch transfer (message-format 0x80013700), or None for a plain message."""
    return _batch_payloads(_sections(raw))


def _batch_payloads(sections: list[tuple[int, Any, bytes]]) -> list[bytes] | None:
    """Proton-C drops the transfer's message-format, so a batch is recognised by its shape: only data sections
    (plus envelope sections), each holding an encoded AMQP message."""
    datas = [v for code, v, _ in sections if code == DATA]
    if not datas or any(code in (SEQUENCE, VALUE) for code, _, _ in sections):
        return None
    for payload in datas:
        if (
            not isinstance(payload, bytes)
            or len(payload) < 3
            or payload[0] != 0x00
            or payload[1] != 0x53
            or not HEADER <= payload[2] <= FOOTER
        ):
            return None
    return list(datas)


def _incoming(raw: bytes, wire: WireMessage) -> Incoming:
    return Incoming(
        payload=wire,
        raw=raw,
        message_id=wire.message_id,
        session_id=wire.session_id,
        ttl=wire.ttl,
        scheduled_at=wire.scheduled_at,
        attributes=wire.attributes(),
    )


def to_incoming(raw: bytes) -> list[Incoming]:
    """One transfer from a sender link → the messages to enqueue (several for a batch)."""
    sections = _sections(raw)
    inner = _batch_payloads(sections)
    if inner is None:
        return [_incoming(raw, _from_sections(sections))]
    return [_incoming(one, parse(one)) for one in inner]


def _encode(obj: Any) -> bytes:
    data = Data()
    data.put_object(obj)
    return data.encode()


def encode(
    msg: StoredMessage,
    *,
    locked_until: float | None = None,
    peek: bool = False,
    lock_token: uuid.UUID | None = None,
    transfer: bool = False,
) -> bytes:
    """The message as delivered to a receiver (or returned by peek / receive-by-sequence-number).

    As Azure delivers it (the payload captured from Azure in azure-servicebus 7.15's ``tests/test_message.py``,
    ``test_servicebus_received_message_from_bytes_preserves_broker_metadata``, issue #43979): a transfer on a
    receiver link carries the lock token as the delivery annotation ``x-opt-lock-token`` (``lock_token``), next
    to the delivery annotations the sender set (``tests/test_queues.py``, ``test_message_inner_amqp_properties``
    and ``test_queue_send_amqp_annotated_message``, read them back from Azure),
    and the message annotations hold ``x-opt-enqueued-time``, ``x-opt-sequence-number`` and
    ``x-opt-locked-until``, without ``x-opt-enqueue-sequence-number``. A ``transfer`` on a receiver link has the
    delivery annotations section even when it is empty (receive-and-delete: no lock token) and no
    ``x-opt-message-state``, as from Azure (``test_message_backcompat_receive_and_delete_databody`` reads ``{}``,
    not None, three message annotations and the encoded size that follows)."""
    wire: WireMessage = msg.payload
    header = list(wire.header)
    header[4] = uint(msg.delivery_count)
    annotations = dict(wire.annotations)
    annotations[A_SEQ] = msg.seq
    annotations[A_ENQUEUED] = timestamp(int(msg.enqueued_at * 1000))
    if locked_until:
        annotations[A_LOCKED_UNTIL] = timestamp(int(locked_until * 1000))
    if peek or (msg.state is not MessageState.LOCKED and not transfer):
        state = MessageState.ACTIVE if msg.state is MessageState.LOCKED else msg.state
        annotations[A_STATE] = int(state)
    elif msg.deferred:
        annotations[A_STATE] = int(MessageState.DEFERRED)
    if msg.dead_letter_source:
        annotations[A_DLQ_SOURCE] = msg.dead_letter_source
    out = [_encode(Described(ulong(HEADER), header))]
    delivery = dict(wire.delivery_annotations)
    if lock_token is not None:
        delivery[A_LOCK_TOKEN] = lock_token
    if delivery or transfer or lock_token is not None:
        out.append(_encode(Described(ulong(DELIVERY_ANN), delivery)))
    out += [_encode(Described(ulong(MESSAGE_ANN), annotations)), wire.properties_raw]
    if msg.dead_letter_reason is not None or msg.dead_letter_description is not None:
        app = dict(wire.app_properties or {})
        app["DeadLetterReason"] = msg.dead_letter_reason or ""
        app["DeadLetterErrorDescription"] = msg.dead_letter_description or ""
        out.append(_encode(Described(ulong(APP_PROPERTIES), app)))
    else:
        out.append(wire.app_properties_raw)
    out.append(wire.rest_raw)
    return b"".join(out)


def with_app_properties(wire: WireMessage, properties: dict[str, Any]) -> tuple[WireMessage, bytes]:
    """The message with new application properties (a subscription rule's SQL action), and its bytes."""
    properties = {key: _amqp_value(value) for key, value in properties.items()}
    app_raw = _encode(Described(ulong(APP_PROPERTIES), properties)) if properties else b""
    changed = replace(wire, app_properties_raw=app_raw, app_properties=dict(properties))
    sections = [_encode(Described(ulong(HEADER), list(wire.header)))]
    if wire.delivery_annotations:
        sections.append(_encode(Described(ulong(DELIVERY_ANN), dict(wire.delivery_annotations))))
    if wire.annotations:
        sections.append(_encode(Described(ulong(MESSAGE_ANN), dict(wire.annotations))))
    return changed, b"".join([*sections, wire.properties_raw, app_raw, wire.rest_raw])


def lock_token_tag(token: uuid.UUID) -> bytes:
    """The SDK reads the lock token from the delivery tag as ``uuid.UUID(bytes_le=tag)``."""
    return token.bytes_le
