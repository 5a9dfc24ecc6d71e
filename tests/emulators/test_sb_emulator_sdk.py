"""The Service Bus emulator driven by the real azure-servicebus SDK over a socket: the core the worker uses."""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus._pyamqp.error import TokenAuthFailure
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusAuthenticationError
from gcw_emulators.servicebus import QueueConfig

from tests.support.harness import wait_until

pytestmark = pytest.mark.timeout(60)


def assert_entity_missing(raised: pytest.ExceptionInfo[ServiceBusAuthenticationError]) -> None:
    """Azure's answer to a put-token for a missing entity, as the SDK raises it: the put-token's 404 and its
    description (``TokenAuthFailure``, ``_pyamqp/error.py``) inside a ServiceBusAuthenticationError."""
    inner = raised.value.inner_exception
    assert isinstance(inner, TokenAuthFailure) and inner.status_code == 404, repr(inner)
    assert "could not be found" in str(inner), str(inner)


def client(emu) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(emu.connection_string, retry_total=1, retry_backoff_factor=0.1)


def receive(receiver, count: int, wait: float = 5.0) -> list[ServiceBusReceivedMessage]:
    """Receive exactly ``count`` messages (or whatever arrived within ``wait`` seconds)."""
    out: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + wait
    while len(out) < count and time.monotonic() < deadline:
        out += receiver.receive_messages(max_message_count=count - len(out),
                                         max_wait_time=max(0.2, deadline - time.monotonic()))
    return out


@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(queues=[
        QueueConfig("q", lock_duration=2.0, max_delivery_count=3),
        QueueConfig("dedup", lock_duration=10.0, requires_duplicate_detection=True, duplicate_detection_window=60),
        QueueConfig("ttl", lock_duration=2.0, default_ttl=0.5, dead_letter_on_expiration=True),
    ])


def test_all_properties_round_trip_and_complete(emu):
    props = {"s": "text", "i": 7, "f": 1.5, "b": True, "bytes": b"\x00\x01", "neg": -3}
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage(
                b"payload", message_id="mid-1", correlation_id="cid-1", reply_to="replies",
                reply_to_session_id="rs-1", subject="subj", content_type="application/json", to="dest",
                time_to_live=dt.timedelta(minutes=5), application_properties=props))
        with c.get_queue_receiver("q") as r:
            (m,) = receive(r, 1)
            assert b"".join(m.body) == b"payload"
            assert (m.message_id, m.correlation_id, m.reply_to, m.reply_to_session_id) == \
                ("mid-1", "cid-1", "replies", "rs-1")
            assert (m.subject, m.content_type, m.to) == ("subj", "application/json", "dest")
            assert m.time_to_live == dt.timedelta(minutes=5)
            app = {k.decode(): v for k, v in m.application_properties.items()}
            assert app["s"] == b"text" and app["i"] == 7 and app["f"] == 1.5 and app["b"] is True
            assert app["bytes"] == b"\x00\x01" and app["neg"] == -3
            assert m.sequence_number == 1 and m.delivery_count == 0
            assert m.enqueued_time_utc is not None and m.lock_token is not None
            assert m.locked_until_utc > dt.datetime.now(dt.UTC)
            r.complete_message(m)
            assert r.receive_messages(max_wait_time=0.5) == []
    stats = emu.stats()["entities"]["q"]
    assert stats["sent"] == 1 and stats["completed"] == 1 and stats["active"] == 0 and stats["locked"] == 0


def test_transfers_carry_azures_annotations_and_a_received_message_can_be_sent_again(emu):
    """As in the payload captured from Azure (azure-servicebus 7.15 tests/test_message.py, issue #43979): the lock
    token as the delivery annotation x-opt-lock-token, no x-opt-enqueue-sequence-number."""
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("first", application_properties={"k": "v"}))
        with c.get_queue_receiver("q") as r, c.get_queue_sender("q") as s:
            (m,) = receive(r, 1)
            raw = m.raw_amqp_message
            assert raw.delivery_annotations == {b"x-opt-lock-token": m.lock_token}
            assert b"x-opt-enqueue-sequence-number" not in raw.annotations
            assert m.enqueued_sequence_number is None and m.sequence_number == 1
            s.send_messages(m)  # what test_sessions.py does: a received message is sent again as a new one
            r.complete_message(m)
            (again,) = receive(r, 1)
            assert str(again) == "first" and again.sequence_number == 2
            assert again.application_properties == {b"k": b"v"}
            r.complete_message(again)


def test_batch_and_list_send_keep_fifo_order(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            batch = s.create_message_batch()
            for i in range(5):
                batch.add_message(ServiceBusMessage(f"b{i}"))
            s.send_messages(batch)
            s.send_messages([ServiceBusMessage(f"l{i}") for i in range(3)])
        with c.get_queue_receiver("q") as r:
            got = receive(r, 8)
            assert [str(m) for m in got] == [f"b{i}" for i in range(5)] + [f"l{i}" for i in range(3)]
            assert [m.sequence_number for m in got] == list(range(1, 9))
            for m in got:
                r.complete_message(m)


def test_many_in_flight_then_complete_all(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage(f"m{i}", message_id=f"id{i}") for i in range(300)])
        with c.get_queue_receiver("q") as r:
            got = receive(r, 300, wait=15)
            assert sorted(m.message_id for m in got) == sorted(f"id{i}" for i in range(300))
            assert len({m.lock_token for m in got}) == 300
            assert emu.stats()["entities"]["q"]["locked"] == 300
            for m in got:
                r.complete_message(m)
    assert emu.stats()["entities"]["q"]["completed"] == 300


def test_abandon_increments_delivery_count_then_max_delivery_dead_letters(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("poison", message_id="p"))
        with c.get_queue_receiver("q") as r:
            counts = []
            for _ in range(3):
                (m,) = receive(r, 1)
                counts.append(m.delivery_count)
                r.abandon_message(m)
            assert counts == [0, 1, 2]
            assert r.receive_messages(max_wait_time=0.5) == []
        with c.get_queue_receiver("q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            (m,) = receive(d, 1)
            assert m.message_id == "p"
            assert m.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert "3 delivery attempts" in m.dead_letter_error_description
            assert m.dead_letter_source == "q"
            d.complete_message(m)
    assert emu.stats()["entities"]["q"]["dead_letter"] == 0


def test_dead_letter_with_reason_and_description_then_peek_and_receive_dlq(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage("bad", message_id="x1"), ServiceBusMessage("bad2", message_id="x2")])
        with c.get_queue_receiver("q") as r:
            for m in receive(r, 2):
                r.dead_letter_message(m, reason="InvalidRequest", error_description=f"field items: {m.message_id}")
        assert emu.stats()["entities"]["q"]["dead_letter"] == 2
        with c.get_queue_receiver("q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            peeked = d.peek_messages(max_message_count=10)
            assert [p.message_id for p in peeked] == ["x1", "x2"]
            assert peeked[0].dead_letter_reason == "InvalidRequest"
            got = receive(d, 2)
            assert [(m.message_id, m.dead_letter_reason, m.dead_letter_error_description) for m in got] == \
                [("x1", "InvalidRequest", "field items: x1"), ("x2", "InvalidRequest", "field items: x2")]
            for m in got:
                d.complete_message(m)
            assert d.peek_messages(max_message_count=10) == []


def test_lock_expiry_redelivers_with_count_plus_one_and_settling_late_raises_lock_lost(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("slow"))
        with c.get_queue_receiver("q") as r:
            (first,) = receive(r, 1)
            assert first.delivery_count == 0
            time.sleep(2.3)  # past the 2 s lock
            with pytest.raises(MessageLockLostError):
                r.complete_message(first)
            (again,) = receive(r, 1)
            assert again.delivery_count == 1 and again.sequence_number == first.sequence_number
            assert again.lock_token != first.lock_token
            r.complete_message(again)


def test_settling_with_stale_token_over_the_wire_raises_lock_lost(emu):
    """The broker itself (not just the SDK's client-side expiry check) refuses a lost lock."""
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("x"))
        with c.get_queue_receiver("q") as r:
            (m,) = receive(r, 1)
            stale = copy.copy(m)          # the SDK would refuse a settled message locally
            r.complete_message(m)
            with pytest.raises(MessageLockLostError):
                r.renew_message_lock(stale)


def test_renew_lock_and_auto_lock_renewer_keep_the_message(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
        with c.get_queue_receiver("q") as r:
            a, b = receive(r, 2)
            before = a.locked_until_utc
            time.sleep(0.3)  # time passes, so that a renewed lock ends later
            new_until = r.renew_message_lock(a)
            assert new_until > before
            renewer = AutoLockRenewer(max_lock_renewal_duration=10)
            renewer.register(r, b)
            time.sleep(1.5)  # time passes: the renewer must renew b meanwhile
            r.renew_message_lock(a)
            time.sleep(1.5)      # past the original 2 s lock of both
            r.complete_message(a)
            r.complete_message(b)
            renewer.close()
    assert emu.stats()["entities"]["q"]["completed"] == 2


def test_schedule_cancel_and_peek_scheduled(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
            seqs = s.schedule_messages([ServiceBusMessage("s1"), ServiceBusMessage("s2")], when)
            assert len(seqs) == 2 and seqs[0] < seqs[1]
            s.cancel_scheduled_messages(seqs[1])
            s.send_messages(ServiceBusMessage("s3", scheduled_enqueue_time_utc=when))
        with c.get_queue_receiver("q") as r:
            peeked = r.peek_messages(max_message_count=10)
            assert [str(p) for p in peeked] == ["s1", "s3"]
            assert all(p.state.name == "SCHEDULED" for p in peeked)
            assert r.receive_messages(max_wait_time=0.5) == []
            assert emu.stats()["entities"]["q"]["scheduled"] == 2
            got = receive(r, 2, wait=5)
            assert [str(m) for m in got] == ["s1", "s3"]
            for m in got:
                assert m.scheduled_enqueue_time_utc is not None
                r.complete_message(m)


def test_reschedule_with_attempt_counter(emu):
    """The worker's retry: schedule a copy with an attempt counter, then complete the original."""
    with client(emu) as c, c.get_queue_sender("q") as s, c.get_queue_receiver("q") as r:
        s.send_messages(ServiceBusMessage("job", message_id="job-1"))
        (m,) = receive(r, 1)
        retry = ServiceBusMessage(b"".join(m.body), message_id=m.message_id,
                                  application_properties={"gcw-attempt": 1})
        s.schedule_messages(retry, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5))
        r.complete_message(m)
        (again,) = receive(r, 1)
        assert again.message_id == "job-1"
        assert again.application_properties[b"gcw-attempt"] == 1
        r.complete_message(again)


def test_duplicate_detection_drops_repeated_message_id(emu):
    with client(emu) as c:
        with c.get_queue_sender("dedup") as s:
            s.send_messages(ServiceBusMessage("r1", message_id="reply-1"))
            s.send_messages([ServiceBusMessage("r1 again", message_id="reply-1"),
                             ServiceBusMessage("r2", message_id="reply-2")])
        with c.get_queue_receiver("dedup") as r:
            got = receive(r, 3, wait=2)
            assert [str(m) for m in got] == ["r1", "r2"]
            for m in got:
                r.complete_message(m)
    assert emu.stats()["entities"]["dedup"]["sent"] == 2


def test_unknown_entity_fails_the_put_token_for_sender_and_receiver(emu):
    """Azure answers the put-token for a missing entity with 404 (Azure/azure-service-bus issue 304), which the
    SDK raises as ServiceBusAuthenticationError (``_pyamqp/cbs.py``), before any link is attached."""
    with client(emu) as c:
        with pytest.raises(ServiceBusAuthenticationError) as raised, c.get_queue_sender("missing") as s:
            s.send_messages(ServiceBusMessage("x"))
        assert_entity_missing(raised)
        with pytest.raises(ServiceBusAuthenticationError) as raised, c.get_queue_receiver("missing") as r:
            r.receive_messages(max_wait_time=1)
        assert_entity_missing(raised)


def test_defer_then_receive_deferred_and_complete(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage("d1"), ServiceBusMessage("d2")])
        with c.get_queue_receiver("q") as r:
            got = receive(r, 2)
            for m in got:
                r.defer_message(m)
            assert r.receive_messages(max_wait_time=0.5) == []
            assert emu.stats()["entities"]["q"]["deferred"] == 2
            deferred = r.receive_deferred_messages([m.sequence_number for m in got])
            assert [str(m) for m in deferred] == ["d1", "d2"]
            r.complete_message(deferred[0])
            r.dead_letter_message(deferred[1], reason="Nope", error_description="deferred then dead-lettered")
    counts = emu.stats()["entities"]["q"]
    assert counts["deferred"] == 0 and counts["dead_letter"] == 1 and counts["completed"] == 1


def test_receive_and_delete_mode(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage("x"), ServiceBusMessage("y")])
        with c.get_queue_receiver("q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            got = receive(r, 2)
            assert [str(m) for m in got] == ["x", "y"]
    # as from Azure (azure-servicebus 7.15's test_message_backcompat_receive_and_delete_databody): pre-settled
    # transfers with an empty delivery tag and an empty delivery-annotations section, no lock token, and the three
    # message annotations enqueued time, sequence number and (when set) partition key: no message state
    for m in got:
        assert m.lock_token is None and m.message.delivery_tag is None and m.message.delivery_annotations == {}
        assert set(m.raw_amqp_message.annotations) == {b"x-opt-enqueued-time", b"x-opt-sequence-number"}
    counts = emu.stats()["entities"]["q"]
    assert counts["active"] == 0 and counts["locked"] == 0


def test_prefetched_messages_are_released_on_close_without_count_increment(emu):
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage(f"p{i}") for i in range(5)])
        with c.get_queue_receiver("q", prefetch_count=10) as r:
            (m,) = r.receive_messages(max_message_count=1, max_wait_time=3)
            r.complete_message(m)
        assert wait_until(lambda: emu.stats()["entities"]["q"]["active"] >= 4, 5, interval=0.05)
        with c.get_queue_receiver("q") as r:
            rest = receive(r, 4)
            assert sorted(str(x) for x in rest) == ["p1", "p2", "p3", "p4"]
            assert all(x.delivery_count == 0 for x in rest)
            for x in rest:
                r.complete_message(x)


def test_ttl_expiry_dead_letters_when_configured(emu):
    with client(emu) as c:
        with c.get_queue_sender("ttl") as s:
            s.send_messages(ServiceBusMessage("short-lived", message_id="t1"))
        # the 0.5 s time to live runs out: the broker dead-letters the message
        assert wait_until(lambda: emu.stats()["entities"]["ttl"]["dead_letter"] == 1, 5)
        with c.get_queue_receiver("ttl") as r:
            assert r.receive_messages(max_wait_time=0.5) == []
        with c.get_queue_receiver("ttl", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            (m,) = receive(d, 1)
            assert m.message_id == "t1" and m.dead_letter_reason == "TTLExpiredException"
            d.complete_message(m)


def test_competing_consumers_share_the_work_without_duplicates(emu):
    total = 200
    with client(emu) as c, c.get_queue_sender("q") as s:
        s.send_messages([ServiceBusMessage(f"w{i}", message_id=str(i)) for i in range(total)])
    seen: list[list[str]] = [[], []]

    def consume(idx: int) -> None:
        with client(emu) as c, c.get_queue_receiver("q") as r:
            idle = 0
            while idle < 2:
                got = r.receive_messages(max_message_count=20, max_wait_time=0.5)
                idle = 0 if got else idle + 1
                for m in got:
                    seen[idx].append(m.message_id)
                    r.complete_message(m)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    everything = seen[0] + seen[1]
    assert sorted(everything, key=int) == [str(i) for i in range(total)]
    assert seen[0] and seen[1]


_KILLED_RECEIVER = textwrap.dedent("""
    import os, signal, sys
    from azure.servicebus import ServiceBusClient
    c = ServiceBusClient.from_connection_string(sys.argv[1])
    r = c.get_queue_receiver("q")
    got = []
    while len(got) < 2:
        got += r.receive_messages(max_message_count=2 - len(got), max_wait_time=5)
    print("GOT", len(got), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkilled_receiver_locks_expire_and_messages_come_back(emu):
    with client(emu) as c, c.get_queue_sender("q") as s:
        s.send_messages([ServiceBusMessage("k1"), ServiceBusMessage("k2")])
    proc = subprocess.run([sys.executable, "-c", _KILLED_RECEIVER, emu.connection_string], capture_output=True,
                          text=True, timeout=40, env={**os.environ})
    assert "GOT 2" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == -9
    assert emu.stats()["entities"]["q"]["locked"] == 2
    with client(emu) as c, c.get_queue_sender("q") as s:       # the dead receiver gets nothing more
        s.send_messages(ServiceBusMessage("k3"))
    counts = emu.stats()["entities"]["q"]
    assert counts["active"] == 1 and counts["locked"] == 2
    with client(emu) as c, c.get_queue_receiver("q") as r:
        (fresh,) = receive(r, 1)
        assert str(fresh) == "k3" and fresh.delivery_count == 0
        r.complete_message(fresh)
        got = receive(r, 2, wait=6)
        assert sorted(str(m) for m in got) == ["k1", "k2"]
        assert all(m.delivery_count == 1 for m in got)
        for m in got:
            r.complete_message(m)


def test_message_ids_are_unique_per_send(emu):
    """Sanity: the emulator keeps distinct messages distinct even with identical bodies."""
    with client(emu) as c, c.get_queue_sender("q") as s:
        s.send_messages([ServiceBusMessage("same", message_id=str(uuid.uuid4())) for _ in range(3)])
    assert emu.stats()["entities"]["q"]["active"] == 3


def test_application_properties_survive_dead_lettering(emu):
    """Dead-lettering re-encodes application properties (to add the reason): every type must survive it."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ident = uuid.uuid4()
    props = {"s": "text", "i": -7, "f": 2.25, "b": False, "raw": b"ok", "when": when, "id": ident}
    with client(emu) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("typed", application_properties=props))
        with c.get_queue_receiver("q") as r:
            (m,) = receive(r, 1)
            original = dict(m.application_properties)
            r.dead_letter_message(m, reason="R", error_description="D")
        with c.get_queue_receiver("q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            (dead,) = receive(d, 1)
            after = dict(dead.application_properties)
            d.complete_message(dead)
    assert after.pop(b"DeadLetterReason") == b"R" and after.pop(b"DeadLetterErrorDescription") == b"D"
    assert after == original
    assert original[b"i"] == -7
