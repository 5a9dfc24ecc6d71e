"""Every AMQP body kind passes through the Service Bus emulator untouched, and a transfer it cannot read gets an
AMQP error outcome (never silence).

Bodies go in two ways: through the SDK (``AmqpAnnotatedMessage`` with data, sequence and value bodies, sync and
async), and as raw transfers whose sections are encoded by the SDK's own pyamqp encoder (typed AMQP values the
SDK's public API cannot express), or by hand for the three types pyamqp cannot encode (char, decimal32,
decimal64). The broker never decodes a body section: what a receiver gets ends with the very bytes sent.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient
from azure.servicebus._pyamqp._encode import encode_value
from azure.servicebus._pyamqp.types import TYPE, VALUE, AMQPTypes
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from gcw_emulators.servicebus import QueueConfig
from proton import Delivery, Disposition, Handler
from proton.utils import BlockingConnection, BlockingSender

from tests.emulators.test_sb_emulator_robustness import put_token

pytestmark = pytest.mark.timeout(60)

DATA, SEQUENCE, VALUE_SECTION, FOOTER, APP_PROPERTIES, MESSAGE_ANN = 0x75, 0x76, 0x77, 0x78, 0x74, 0x72


@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(queues=[QueueConfig("q", lock_duration=30)])


def typed(kind: str, value: Any) -> dict[str, Any]:
    return {TYPE: kind, VALUE: value}


def section(code: int, value: Any) -> bytes:
    """One message section, encoded by pyamqp (the SDK's own codec)."""
    out = bytearray()
    encode_value(out, typed(AMQPTypes.described, (typed(AMQPTypes.ulong, code), value)))
    return bytes(out)


def hand_section(code: int, encoded_value: bytes) -> bytes:
    return b"\x00\x53" + bytes([code]) + encoded_value


class RawClient:
    """Raw transfers over proton: send exact bytes and read back exact bytes (no client-side decoding)."""

    def __init__(self, emu) -> None:
        self.conn = BlockingConnection(f"{emu.host}:{emu.port}", allowed_mechs="ANONYMOUS", timeout=10)
        self.senders: dict[str, BlockingSender] = {}
        put_token(self.conn, f"sb://{emu.host}:{emu.port}/")  # as the SDK does before it attaches

    def send(self, address: str, payload: bytes) -> Delivery:
        if address not in self.senders:
            self.senders[address] = self.conn.create_sender(address, name=str(uuid.uuid4()))
        sender = self.senders[address]
        dlv = sender.link.delivery(uuid.uuid4().bytes)
        sender.link.send(payload)
        sender.link.advance()
        self.conn.wait(
            lambda: dlv.settled or int(dlv.remote_state or 0) != 0,
            timeout=10,
            msg="the broker left the transfer unsettled",
        )
        return dlv

    def receive(self, address: str, count: int) -> list[bytes]:
        collector = _Collector()
        receiver = self.conn.create_receiver(address, credit=count, handler=collector, name=str(uuid.uuid4()))
        self.conn.wait(
            lambda: len(collector.payloads) >= count,
            timeout=10,
            msg=f"messages did not arrive: {len(collector.payloads)} of {count}",
        )
        receiver.close()
        return collector.payloads

    def close(self) -> None:
        self.conn.close()


class _Collector(Handler):
    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []

    def on_delivery(self, event: Any) -> None:
        dlv = event.delivery
        if dlv.readable and not dlv.partial:
            self.payloads.append(bytes(event.link.recv(dlv.pending)))
            event.link.advance()
            dlv.update(Disposition.ACCEPTED)
            dlv.settle()


@pytest.fixture
def raw_client(emu) -> Iterator[RawClient]:
    client = RawClient(emu)
    yield client
    client.close()


T = AMQPTypes
# Every AMQP primitive and compound type as an amqp-value body, encoded by pyamqp, incl. maps keyed by binary,
# symbol, int, uuid, list and map values (AMQP allows any type as a map key).
PYAMQP_VALUES: dict[str, Any] = {
    "null": typed(T.null, None),
    "true": typed(T.boolean, True),
    "false": typed(T.boolean, False),
    "ubyte": typed(T.ubyte, 255),
    "byte": typed(T.byte, -128),
    "ushort": typed(T.ushort, 65535),
    "short": typed(T.short, -32768),
    "uint": typed(T.uint, 2**32 - 1),
    "uint0": typed(T.uint, 0),
    "int": typed(T.int, -(2**31)),
    "ulong": typed(T.ulong, 2**64 - 1),
    "long": typed(T.long, -(2**63)),
    "float": typed(T.float, 0.5),
    "double": typed(T.double, -1e300),
    "timestamp": typed(T.timestamp, 1700000000123),
    "uuid": typed(T.uuid, uuid.UUID(int=7)),
    "binary": typed(T.binary, b"\x00\xff" * 200),
    "string": typed(T.string, "h\u00e9llo \u2603" * 100),
    "symbol": typed(T.symbol, b"com.example:sym"),
    "decimal128": typed(T.decimal128, Decimal("-12.345")),
    "list": typed(T.list, [typed(T.int, 1), "a", None]),
    "empty list": typed(T.list, []),
    "empty map": typed(T.map, []),
    "map binary keys": typed(T.map, [(b"key", [-123, b"data", False]), (b"\x00", 1)]),
    "map symbol keys": typed(T.map, [(typed(T.symbol, b"a"), 1), (typed(T.symbol, b"b"), "x")]),
    "map int keys": typed(
        T.map, [(typed(T.int, 1), "one"), (typed(T.long, -(2**40)), "big"), (typed(T.ubyte, 2), "two")]
    ),
    "map uuid key": typed(T.map, [(typed(T.uuid, uuid.UUID(int=1)), "u")]),
    "map list key": typed(T.map, [(typed(T.list, [1, 2]), "l")]),
    "map map key": typed(T.map, [(typed(T.map, [("k", "v")]), "m")]),
    "array int": typed(T.array, [typed(T.int, 1), typed(T.int, 2)]),
    "array symbol": typed(T.array, [typed(T.symbol, b"x"), typed(T.symbol, b"y")]),
    "described": typed(T.described, (typed(T.symbol, b"com.example:thing"), typed(T.list, [1, "v"]))),
    "nested": typed(T.map, [("outer", typed(T.list, [typed(T.map, [(b"bin", typed(T.array, [1, 2]))])]))]),
}
# The three AMQP types pyamqp cannot encode, by hand (AMQP 1.0 section 1.6).
HAND_VALUES: dict[str, bytes] = {
    "char": b"\x73" + "\u2603".encode("utf-32-be"),
    "decimal32": b"\x74" + struct.pack(">I", 0x2238_0001),
    "decimal64": b"\x84" + struct.pack(">Q", 0x31C0_0000_0000_0001),
}


def test_every_amqp_value_type_passes_through_byte_for_byte(emu, raw_client):
    bodies = {name: section(VALUE_SECTION, value) for name, value in PYAMQP_VALUES.items()}
    bodies |= {name: hand_section(VALUE_SECTION, value) for name, value in HAND_VALUES.items()}
    bodies["two sequences"] = section(SEQUENCE, [1, "a"]) + section(SEQUENCE, [typed(T.map, [(b"k", 1)])])
    bodies["three data"] = section(DATA, b"a") + section(DATA, b"") + section(DATA, b"\x00" * 70000)
    bodies["value + footer"] = section(VALUE_SECTION, "v") + section(FOOTER, typed(T.map, [(b"x", 1)]))
    for name, body in bodies.items():
        dlv = raw_client.send("q", body)
        assert dlv.remote_state == Disposition.ACCEPTED, (name, dlv.remote.condition)
    received = raw_client.receive("q", len(bodies))
    for (name, body), payload in zip(bodies.items(), received, strict=True):
        assert payload.endswith(body), name
    assert emu.stats()["entities"]["q"]["active"] == 0


def test_app_properties_and_annotations_keyed_by_binary_still_deliver(emu, raw_client):
    props = section(APP_PROPERTIES, typed(T.map, [("s", "v"), (b"raw", 1)]))
    ann = section(MESSAGE_ANN, typed(T.map, [(typed(T.symbol, b"x-opt-custom"), 1), (b"binary-annotation", 2)]))
    body = section(VALUE_SECTION, typed(T.map, [(b"key", 1)]))
    dlv = raw_client.send("q", ann + props + body)
    assert dlv.remote_state == Disposition.ACCEPTED, dlv.remote.condition
    (payload,) = raw_client.receive("q", 1)
    assert payload.endswith(props + body)
    assert b"binary-annotation" in payload


SDK_VALUES: list[Any] = [
    True,
    -123,
    2**31 - 1,
    1.5,
    "text",
    b"bin",
    uuid.UUID(int=3),
    [1, "a", b"x", None],
    {b"key": [-123, b"data", False]},
    {"s": {"nested": [1, 2]}},
    {1: "int key"},
    None,
]


def _expected(value: Any) -> Any:
    """What pyamqp hands back: strings decode to bytes (symbols and strings alike, in this SDK)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_expected(v) for v in value]
    if isinstance(value, dict):
        return {_expected(k): _expected(v) for k, v in value.items()}
    return value


def _sdk_messages() -> list[AmqpAnnotatedMessage]:
    return [AmqpAnnotatedMessage(value_body=v) for v in SDK_VALUES] + [
        AmqpAnnotatedMessage(data_body=[b"one", b"two"]),
        AmqpAnnotatedMessage(sequence_body=[[1, "a"], [b"b"]]),
    ]


def _check_sdk_bodies(received: list[Any]) -> None:
    assert len(received) == len(SDK_VALUES) + 2
    for sent, got in zip(SDK_VALUES, received, strict=False):
        assert got.body_type == AmqpMessageBodyType.VALUE
        assert got.body == _expected(sent), sent
    data, sequence = received[-2:]
    assert data.body_type == AmqpMessageBodyType.DATA and list(data.body) == [b"one", b"two"]
    assert sequence.body_type == AmqpMessageBodyType.SEQUENCE and list(sequence.body) == [[1, b"a"], [b"b"]]


def test_sdk_value_data_and_sequence_bodies_round_trip(emu):
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
        with c.get_queue_sender("q") as s:
            for message in _sdk_messages():
                s.send_messages(message, timeout=10)
        with c.get_queue_receiver("q", max_wait_time=5) as r:
            received: list[Any] = []
            while len(received) < len(SDK_VALUES) + 2:
                batch = r.receive_messages(max_message_count=len(SDK_VALUES) + 2 - len(received), max_wait_time=5)
                assert batch, "messages did not arrive"
                received += batch
            for m in received:
                r.complete_message(m)
    _check_sdk_bodies(received)


def test_sender_delivery_annotations_and_footer_reach_the_receiver_with_the_lock_token(emu):
    """Azure delivers the sender's delivery annotations next to its own x-opt-lock-token (azure-servicebus 7.15's
    test_queue_send_amqp_annotated_message and test_message_inner_amqp_properties read them back from Azure)."""
    sent = AmqpAnnotatedMessage(
        data_body=[b"x"], delivery_annotations={"delann_key": "delann_value"}, footer={"footer_key": 6}
    )
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(sent, timeout=10)
        with c.get_queue_receiver("q", max_wait_time=5) as r:
            (got,) = r.receive_messages(max_wait_time=5)
            annotations = got.raw_amqp_message.delivery_annotations
            assert annotations[b"delann_key"] == b"delann_value"
            assert annotations[b"x-opt-lock-token"] == got.lock_token
            assert got.raw_amqp_message.footer == {b"footer_key": 6}
            r.complete_message(got)


def test_async_sdk_bodies_round_trip(emu):
    async def scenario() -> list[Any]:
        async with AsyncServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
            async with c.get_queue_sender("q") as s:
                for message in _sdk_messages():
                    await s.send_messages(message, timeout=10)
            async with c.get_queue_receiver("q") as r:
                received: list[Any] = []
                while len(received) < len(SDK_VALUES) + 2:
                    batch = await r.receive_messages(
                        max_message_count=len(SDK_VALUES) + 2 - len(received), max_wait_time=5
                    )
                    assert batch, "messages did not arrive"
                    received += batch
                for m in received:
                    await r.complete_message(m)
                return received

    _check_sdk_bodies(asyncio.run(scenario()))


# Transfers the broker cannot read: each gets a rejected outcome naming the problem.
BAD_TRANSFERS: dict[str, tuple[bytes, str]] = {
    "garbage after a section": (section(VALUE_SECTION, "ok") + b"\xff\xfe", "undecodable AMQP section at byte"),
    "truncated section": (section(VALUE_SECTION, "ok")[:-1], "undecodable AMQP section at byte 0"),
    "bare value, no section": (b"\xa1\x03abc", "is not a described type"),
    "unknown section": (hand_section(0x99, b"\x40"), "unknown AMQP message section descriptor 0x99"),
    "annotations keyed by a list": (
        section(MESSAGE_ANN, typed(T.map, [(typed(T.list, [1]), 1)])),
        "message-annotations section cannot be read",
    ),
    "properties not a list": (section(0x73, "x"), "the properties section is not a list"),
}


@pytest.mark.parametrize("name", list(BAD_TRANSFERS))
def test_unreadable_transfer_is_rejected_with_a_reason(emu, raw_client, name):
    payload, reason = BAD_TRANSFERS[name]
    dlv = raw_client.send("q", payload)
    assert dlv.remote_state == Disposition.REJECTED
    assert dlv.remote.condition.name == "amqp:decode-error"
    assert reason in dlv.remote.condition.description
    assert emu.stats()["entities"]["q"]["active"] == 0
    assert raw_client.send("q", section(VALUE_SECTION, "after")).remote_state == Disposition.ACCEPTED


def test_unreadable_management_request_is_rejected_not_left_hanging(emu, raw_client):
    dlv = raw_client.send("q/$management", b"\x00\x53\x77\xff")
    assert dlv.remote_state == Disposition.REJECTED
    assert dlv.remote.condition.name == "amqp:decode-error"
    assert raw_client.send("q", section(VALUE_SECTION, "after")).remote_state == Disposition.ACCEPTED
