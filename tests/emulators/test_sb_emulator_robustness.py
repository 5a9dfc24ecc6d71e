"""Bad input on the wire never crashes the emulator: garbage bytes, bad frames, unknown operations, abrupt
disconnects, oversize multi-frame messages, sends the entity refuses."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.access import ROOT_POLICY, sas_token
from gcw_emulators.servicebus.codec import CodecError, parse, split_batch
from proton import Message
from proton.utils import BlockingConnection, LinkDetached

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(queues=[QueueConfig("q", lock_duration=5), QueueConfig("sq", requires_session=True)],
                       max_message_size=1024 * 1024)


def roundtrip_works(emu) -> None:
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("alive"))
        with c.get_queue_receiver("q") as r:
            (m,) = r.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(m) == "alive"
            r.complete_message(m)


def raw(emu, payload: bytes) -> bytes:
    with socket.create_connection((emu.host, emu.port), timeout=1) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def test_garbage_bytes_and_bad_frames_close_only_that_connection(emu):
    reply = raw(emu, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"amqp:connection:framing-error" in reply
    raw(emu, b"AMQP\x00\x01\x00\x00" + b"\x00\x00\x00\x10\x02\x00\x00\x00" + b"\xff" * 8)
    raw(emu, b"AMQP\x03\x01\x00\x00" + b"\x00\x00\x00\x08")     # truncated SASL frame, then EOF
    roundtrip_works(emu)


def test_abrupt_disconnect_mid_session_leaves_broker_serving(emu):
    sock = socket.create_connection((emu.host, emu.port), timeout=5)
    sock.sendall(b"AMQP\x03\x01\x00\x00")
    assert sock.recv(8) == b"AMQP\x03\x01\x00\x00"  # the broker answered the header: the session is under way
    sock.close()
    roundtrip_works(emu)


def put_token(conn: BlockingConnection, resource: str) -> None:
    """What the SDK does before it attaches: a shared access signature on ``$cbs`` (the root policy's)."""
    replies = conn.create_receiver("$cbs", name="cbs-r")
    requests = conn.create_sender("$cbs", name="cbs-s")
    requests.send(Message(id=uuid.uuid4(), body=sas_token(resource, ROOT_POLICY),
                          properties={"operation": "put-token", "type": "jwt", "name": resource}))
    assert replies.receive(timeout=10).properties["status-code"] == 202


def test_unknown_management_operation_gets_an_error_status(emu):
    conn = BlockingConnection(f"{emu.host}:{emu.port}", allowed_mechs="ANONYMOUS", timeout=10)
    try:
        with pytest.raises(LinkDetached, match="unauthorized-access"):  # no token yet
            conn.create_receiver("q/$management", name="r0")
        put_token(conn, f"sb://{emu.host}:{emu.port}/q")
        receiver = conn.create_receiver("q/$management", name="r")
        sender = conn.create_sender("q/$management", name="s")
        request_id = uuid.uuid4()
        sender.send(Message(id=request_id, reply_to="q/$management", body={},
                            properties={"operation": "com.microsoft:bogus", "type": "entity-mgmt"}))
        response = receiver.receive(timeout=10)
        assert response.correlation_id == request_id
        assert response.properties["statusCode"] == 501
        assert response.properties["errorCondition"] == "amqp:not-implemented"
        sender.send(Message(id=uuid.uuid4(), body={"lock-tokens": "not-a-list-of-uuids"},
                            properties={"operation": "com.microsoft:renew-lock"}))
        response = receiver.receive(timeout=10)
        assert response.properties["statusCode"] == 400
    finally:
        conn.close()
    roundtrip_works(emu)


def test_large_multi_frame_message_round_trips(emu):
    body = bytes(range(256)) * 2000       # 512 KB: several 64 KB frames each way
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage(body))
        with c.get_queue_receiver("q") as r:
            (m,) = r.receive_messages(max_message_count=1, max_wait_time=5)
            assert b"".join(m.body) == body
            r.complete_message(m)


def test_message_over_the_advertised_size_is_refused_by_the_sdk(sb_emulator):
    emu = sb_emulator(queues=[QueueConfig("q")])          # default: 256 KiB like the Standard tier
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c, \
            c.get_queue_sender("q") as s:
        assert s.create_message_batch().max_size_in_bytes == 256 * 1024
        with pytest.raises(MessageSizeExceededError):
            s.send_messages(ServiceBusMessage(b"x" * (300 * 1024)))
        s.send_messages(ServiceBusMessage(b"x" * (200 * 1024)))
    assert emu.stats()["entities"]["q"]["active"] == 1


def test_send_without_session_id_to_session_queue_is_refused_clearly(emu):
    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c, \
            c.get_queue_sender("sq") as s, pytest.raises(ServiceBusError, match="SessionId"):
        s.send_messages(ServiceBusMessage("no session"))
    assert emu.stats()["entities"]["sq"]["active"] == 0


def test_codec_rejects_garbage():
    with pytest.raises(CodecError):
        parse(b"\x00\x53")
    with pytest.raises(CodecError):
        parse(b"\xa1\x03abc")          # a bare string, not a described section
    assert split_batch(b"\x00\x53\x77\xa1\x01x") is None      # an amqp-value body is not a batch


def test_port_in_use_fails_fast_with_a_clear_error(sb_emulator):
    from gcw_emulators.servicebus import EmulatorError, ServiceBusEmulator

    first = sb_emulator(queues=[QueueConfig("q")])
    started = time.monotonic()
    with pytest.raises(EmulatorError, match=f"127.0.0.1:{first.port}"):
        ServiceBusEmulator(port=first.port, queues=[QueueConfig("q")]).start()
    assert time.monotonic() - started < 5
    roundtrip_works(first)


def test_duplicate_entity_names_are_a_config_error():
    from gcw_emulators.servicebus import ConfigError, ServiceBusEmulator, TopicConfig

    with pytest.raises(ConfigError, match="'Q' is declared more than once"):
        ServiceBusEmulator(queues=[QueueConfig("q")], topics=[TopicConfig("Q")])
