"""Management requests in any delivery-id order, as Azure accepts them: 300 concurrent lock renewals from threads
(``AutoLockRenewer`` and a thread pool) and from asyncio (``asyncio.gather``) leave the connection working.

pyamqp numbers transfers racily under concurrency (out of order, or the same id twice); the emulator's frame
sequencer renumbers them for proton and maps its dispositions back. The first tests pin that logic on crafted
frames; the rest drive the real SDK.
"""

from __future__ import annotations

import asyncio
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.servicebus import AutoLockRenewer, ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.sequencing import FrameSequencer

pytestmark = pytest.mark.timeout(120)
COUNT = 300


# ---------------------------------------------------------------------------------------------- crafted frames
def frame(channel: int, performative: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">IBBH", 8 + len(performative) + len(payload), 2, 0, channel) + performative + payload


def uint(value: int) -> bytes:
    return b"\x70" + value.to_bytes(4, "big")


def begin(remote_channel: int | None = None, next_outgoing: int = 0) -> bytes:
    first = b"\x40" if remote_channel is None else b"\x60" + remote_channel.to_bytes(2, "big")
    fields = first + uint(next_outgoing) + uint(100) + uint(100)
    return b"\x00\x53\x11\xc0" + bytes((len(fields) + 1, 4)) + fields


def transfer(handle: int, delivery_id: int | None, *, more: bool = False, settled: bool = False) -> bytes:
    fields = [
        uint(handle),
        b"\x40" if delivery_id is None else uint(delivery_id),
        b"\xa0\x01t",
        uint(0),
        b"\x41" if settled else b"\x42",
        b"\x41" if more else b"\x42",
    ]
    body = b"".join(fields)
    return b"\x00\x53\x14\xc0" + bytes((len(body) + 1, len(fields))) + body


def disposition(role_receiver: bool, first: int, last: int, settled: bool = True) -> bytes:
    fields = [
        b"\x41" if role_receiver else b"\x42",
        uint(first),
        uint(last),
        b"\x41" if settled else b"\x42",
        b"\x00\x53\x24\x45",
    ]
    body = b"".join(fields)
    return b"\x00\x53\x15\xc0" + bytes((len(body) + 1, len(fields))) + body


def delivery_ids(stream: bytes) -> list[int]:
    """Delivery-ids of the transfers in a byte stream (the test's own small reader)."""
    ids, pos = [], 0
    while pos < len(stream):
        size = int.from_bytes(stream[pos : pos + 4], "big")
        body = stream[pos + 8 : pos + size]
        if body[:3] == b"\x00\x53\x14":
            handle_width = 5 if body[6] == 0x70 else 2 if body[6] == 0x52 else 1
            at = 6 + handle_width
            ids.append(
                0
                if body[at] == 0x43
                else body[at + 1]
                if body[at] == 0x52
                else int.from_bytes(body[at + 1 : at + 5], "big")
            )
        pos += size
    return ids


def dispositions(stream: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos < len(stream):
        size = int.from_bytes(stream[pos : pos + 4], "big")
        body = stream[pos + 8 : pos + size]
        if body[:3] == b"\x00\x53\x15":
            values, at = [], 7
            for _ in range(2):
                if body[at] == 0x43:
                    values.append(0)
                    at += 1
                elif body[at] == 0x52:
                    values.append(body[at + 1])
                    at += 2
                else:
                    values.append(int.from_bytes(body[at + 1 : at + 5], "big"))
                    at += 5
            out.append((values[0], values[1]))
        pos += size
    return out


def test_in_order_transfers_pass_through_byte_for_byte():
    seq = FrameSequencer()
    stream = (
        b"AMQP\x00\x01\x00\x00"
        + frame(0, begin(next_outgoing=5))
        + b"".join(frame(0, transfer(1, i), b"payload-%d" % i) for i in range(5, 9))
    )
    assert seq.inbound(stream) == stream
    assert not seq.active


def test_out_of_order_and_duplicate_ids_are_renumbered_and_mapped_back():
    seq = FrameSequencer()
    seq.inbound(frame(0, begin(next_outgoing=5)))
    seq.outbound(frame(3, begin(remote_channel=0)))  # the broker's channel 3 is the client's channel 0
    # two threads swapped 6 and 5; two coroutines then both used 7 and skipped 8
    sent = [6, 5, 7, 7, 9]
    out = b"".join(seq.inbound(frame(0, transfer(1, i), b"body")) for i in sent)
    assert delivery_ids(out) == [5, 6, 7, 8, 9]
    assert out.count(b"body") == 5
    # the broker settles 5..9 at once: the client hears its own ids, in contiguous runs
    back = seq.outbound(frame(3, disposition(True, 5, 9)))
    assert dispositions(back) == [(6, 6), (5, 5), (7, 7), (7, 7), (9, 9)]
    # settled: the bookkeeping is gone, later in-order ids go through unchanged
    assert seq.outbound(frame(3, disposition(True, 10, 10))) == frame(3, disposition(True, 10, 10))


def test_client_disposition_for_its_own_transfers_is_mapped_to_proton_ids():
    seq = FrameSequencer()
    seq.inbound(frame(0, begin()))
    seq.inbound(frame(0, transfer(0, 1)) + frame(0, transfer(0, 0)))
    assert dispositions(seq.inbound(frame(0, disposition(False, 0, 1)))) == [(1, 1), (0, 0)]
    broker_role = frame(0, disposition(True, 0, 1))  # about the broker's deliveries: untouched
    assert seq.inbound(broker_role) == broker_role


def test_multi_frame_delivery_keeps_one_id_and_split_reads_are_reassembled():
    seq = FrameSequencer()
    seq.inbound(frame(0, begin(next_outgoing=10)))
    stream = (
        frame(0, transfer(2, 11))
        + frame(0, transfer(2, 10, more=True), b"part1")
        + frame(0, transfer(2, 10, more=True), b"part2")
        + frame(0, transfer(2, 10), b"end")
    )
    out = b"".join(seq.inbound(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert delivery_ids(out) == [10, 11, 11, 11]
    assert b"part1" in out and b"part2" in out and b"end" in out


def test_each_session_has_its_own_numbering():
    seq = FrameSequencer()
    seq.inbound(frame(0, begin(next_outgoing=3)) + frame(1, begin(next_outgoing=100)))
    out = seq.inbound(frame(0, transfer(0, 4)) + frame(1, transfer(0, 100)) + frame(0, transfer(0, 3)))
    assert delivery_ids(out) == [3, 100, 4]


def test_frames_on_a_session_the_client_ended_are_dropped():
    seq = FrameSequencer()
    end = b"\x00\x53\x17\x45"
    seq.inbound(frame(1, begin()) + frame(1, transfer(0, 0), b"x") + frame(1, end))
    assert seq.inbound(frame(1, transfer(0, 1), b"late renewal")) == b""
    assert seq.stats.frames_after_end_dropped == 1
    again = frame(1, begin()) + frame(1, transfer(0, 0), b"y")  # the channel may be begun afresh
    assert seq.inbound(again) == again


def test_garbage_is_passed_on_for_proton_to_refuse():
    seq = FrameSequencer()
    junk = b"GET / HTTP/1.1\r\n\r\n"
    assert seq.inbound(junk) == junk


# ---------------------------------------------------------------------------------------------- the real SDK
@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(queues=[QueueConfig("q", lock_duration=10.0)])


def fill_and_receive(client: ServiceBusClient, receiver) -> list[ServiceBusReceivedMessage]:
    with client.get_queue_sender("q") as s:
        s.send_messages([ServiceBusMessage(f"m{i}") for i in range(COUNT)])
    received: list[ServiceBusReceivedMessage] = []
    while len(received) < COUNT:
        received += receiver.receive_messages(max_message_count=COUNT - len(received), max_wait_time=5)
    return received


def wait_until_renewed(messages: list[ServiceBusReceivedMessage], first_expiry: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if min(m.locked_until_utc.timestamp() for m in messages) > first_expiry:
            return
        time.sleep(0.1)
    raise AssertionError("not every lock was renewed in time")


def assert_completed_out_of_order(emu) -> None:
    """Every message completed, and the client really did send transfers out of order (else the test proves
    nothing): the emulator counts the ids it renumbered."""
    stats = emu.stats()
    assert stats["entities"]["q"]["completed"] == COUNT
    assert stats["wire"]["transfers_renumbered"] > 0


@pytest.mark.xdist_group("sb-concurrency")
def test_300_renewals_from_threads_keep_the_connection(emu):
    with (
        ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c,
        c.get_queue_receiver("q") as r,
    ):
        messages = fill_and_receive(c, r)
        first_expiry = max(m.locked_until_utc.timestamp() for m in messages)
        with ThreadPoolExecutor(8) as pool:
            expiries = list(pool.map(r.renew_message_lock, messages))
        assert len(expiries) == COUNT
        wait_until_renewed(messages, first_expiry - 0.5, 10)
        for m in messages:
            r.complete_message(m)
    assert_completed_out_of_order(emu)


@pytest.mark.xdist_group("sb-concurrency")
def test_auto_lock_renewer_keeps_300_locks_past_their_duration(emu):
    with (
        ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c,
        AutoLockRenewer(max_lock_renewal_duration=60) as renewer,
        c.get_queue_receiver("q", auto_lock_renewer=renewer) as r,
    ):
        messages = fill_and_receive(c, r)
        first_expiry = max(m.locked_until_utc.timestamp() for m in messages)
        wait_until_renewed(messages, first_expiry, 30)  # every lock outlived its first expiry
        for m in messages:
            r.complete_message(m)
    assert_completed_out_of_order(emu)


@pytest.mark.xdist_group("sb-concurrency")
def test_300_renewals_gathered_in_asyncio_keep_the_connection(emu):
    async def scenario() -> None:
        async with AsyncServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
            async with c.get_queue_sender("q") as s:
                await s.send_messages([ServiceBusMessage(f"m{i}") for i in range(COUNT)])
            async with c.get_queue_receiver("q") as r:
                messages: list[ServiceBusReceivedMessage] = []
                while len(messages) < COUNT:
                    messages += await r.receive_messages(max_message_count=COUNT - len(messages), max_wait_time=5)
                before = [m.locked_until_utc for m in messages]
                expiries = await asyncio.gather(*(r.renew_message_lock(m) for m in messages))
                assert len(expiries) == COUNT
                assert all(m.locked_until_utc >= b for m, b in zip(messages, before, strict=True))
                await asyncio.gather(*(r.complete_message(m) for m in messages))

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert_completed_out_of_order(emu)
