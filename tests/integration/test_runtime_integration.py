"""The consumer in process against the real Service Bus emulator (real SDK, sockets), with a simple processor.

These cover runtime paths that do not need GeoCatalog: a processor that raises, session-ordered input and
topic-subscription input. The end-to-end tests (tests/e2e/test_runtime_e2e.py) use the real processor.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from gcw_emulators.servicebus import QueueConfig, SubscriptionConfig, TopicConfig

from tests.support.harness import wait_until
from worker.domain.contract import ItemOutcome, Limits, Result
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics
from worker.processing.processor import Outcome, Settle
from worker.servicebus.service import Consumer
from worker.servicebus.settings import ConsumerSettings

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


class SimpleProcessor:
    """Answers every delete with success after ``delay``; raises for collection ``boom``; records the order."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.order: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()

    def process(self, request, cancel, *, received_at=None):  # type: ignore[no-untyped-def]
        if request.collection == "boom":
            raise RuntimeError("processor bug")
        with self._lock:
            self.order.append((request.meta.session_id, request.item_ids[0]))
        time.sleep(self.delay)  # a slow processor, on purpose
        items = [ItemOutcome(id=i, status="succeeded") for i in request.item_ids]
        received = received_at or datetime.now(UTC)
        result = Result.for_request(request, status="succeeded", items=items, received_at=received)
        return Outcome(result, Settle.COMPLETE)


def body(collection: str, item: str) -> bytes:
    return json.dumps({"version": 1, "action": "delete", "collection": collection, "item_ids": [item]}).encode()


class Running:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def receive_all(client: ServiceBusClient, queue: str, count: int, timeout: float = 30, session: bool = False):  # type: ignore[no-untyped-def]
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        kwargs = {"session_id": NEXT_AVAILABLE_SESSION} if session else {}
        try:
            with client.get_queue_receiver(queue, max_wait_time=1, **kwargs) as receiver:
                for m in receiver.receive_messages(max_message_count=50, max_wait_time=1):
                    got.append((m.session_id, m.correlation_id, json.loads(b"".join(m.body))))
                    receiver.complete_message(m)
        except Exception as exc:
            if not session:
                raise
            time.sleep(0.2)  # a pause before asking for a session again ("no session available" is an answer)
            del exc
    return got


def settled(read: Callable[[], T], timeout: float = 5.0) -> T:
    """``read()`` once two readings 0.1 s apart agree (closes that are still under way have landed)."""
    last = [read()]

    def same() -> bool:
        now = read()
        agreed = now == last[0]
        last[0] = now
        return agreed

    wait_until(same, timeout)
    return last[0]


def make_consumer(client, processor, direct_client=None, **settings) -> Consumer:  # type: ignore[no-untyped-def]
    s = ConsumerSettings(reply_queue="replies", **settings)
    return Consumer(
        client, s, processor, limits=Limits(), metrics=Metrics(), health=HealthState(), direct_client=direct_client
    )


def test_an_exception_in_one_message_is_dead_lettered_and_the_worker_keeps_going(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=5), QueueConfig("replies")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        consumer = make_consumer(client, SimpleProcessor(), request_queue="requests", concurrency=4)
        with client.get_queue_sender("requests") as sender:
            sender.send_messages(
                [
                    ServiceBusMessage(body("c1", "a"), message_id="ok-1"),
                    ServiceBusMessage(body("boom", "b"), message_id="bad-1", correlation_id="corr-bad"),
                    ServiceBusMessage(body("c1", "c"), message_id="ok-2"),
                ]
            )
        with Running(consumer):
            replies = receive_all(client, "replies", 3)
        by_id = {r[2]["request_id"]: r for r in replies}
        assert by_id["ok-1"][2]["status"] == "succeeded" and by_id["ok-2"][2]["status"] == "succeeded"
        failed = by_id["bad-1"]
        assert failed[1] == "corr-bad" and failed[2]["status"] == "failed"
        assert failed[2]["error"]["code"] == "ProcessingError"
        with client.get_queue_receiver("requests", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = dlq.peek_messages(max_message_count=10)
        assert [m.message_id for m in dead] == ["bad-1"]
        assert dead[0].dead_letter_reason == "ProcessingError"
        assert "RuntimeError" in dead[0].dead_letter_error_description
        assert consumer.metrics.dead_lettered.labels(reason="ProcessingError")._value.get() == 1
        assert emu.stats()["entities"]["requests"]["active"] == 0


def test_session_input_is_processed_in_order_per_session_and_replies_carry_the_session(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = sb_emulator(
        queues=[
            QueueConfig("requests", lock_duration=5, requires_session=True),
            QueueConfig("replies", requires_session=True),
        ]
    )
    processor = SimpleProcessor(delay=0.02)
    sessions = ["s-a", "s-b", "s-c"]
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        with client.get_queue_sender("requests") as sender:
            msgs = [
                ServiceBusMessage(body("c1", f"{sid}-{n:02d}"), session_id=sid, reply_to_session_id=f"reply-{sid}")
                for n in range(6)
                for sid in sessions
            ]
            sender.send_messages(msgs)
        session_client = ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0)
        consumer = make_consumer(
            client,
            processor,
            request_queue="requests",
            sessions=True,
            max_sessions=3,
            session_idle_seconds=1,
            direct_client=session_client,
        )
        with Running(consumer):
            replies = receive_all(session_client, "replies", 18, session=True)
        session_client.close()
    assert len(replies) == 18
    for sid in sessions:
        seen = [item for s, item in processor.order if s == sid]
        assert seen == [f"{sid}-{n:02d}" for n in range(6)], seen
        assert {r[0] for r in replies if r[2]["items"][0]["id"].startswith(sid)} == {f"reply-{sid}"}


def test_topic_subscription_input(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = sb_emulator(
        queues=[QueueConfig("replies")],
        topics=[TopicConfig("requests-topic", subscriptions=[SubscriptionConfig("worker", lock_duration=5)])],
    )
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        with client.get_topic_sender("requests-topic") as sender:
            sender.send_messages([ServiceBusMessage(body("c1", f"t{i}"), message_id=f"t-{i}") for i in range(5)])
        consumer = make_consumer(
            client, SimpleProcessor(), request_topic="requests-topic", request_subscription="worker", concurrency=4
        )
        with Running(consumer):
            replies = receive_all(client, "replies", 5)
    assert sorted(r[2]["request_id"] for r in replies) == [f"t-{i}" for i in range(5)]
    assert all(r[2]["status"] == "succeeded" for r in replies)


def test_hostile_message_properties_and_bodies_never_stop_the_receiver(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    """Messages that the SDK delivers but that used to raise on the receiver-owner thread (killing the loop, then
    the process, then every pod they were redelivered to): a non-finite gcw-attempt, an AMQP value body of null,
    a reply_to_session_id over 128 characters. Each is answered/dead-lettered; the next message is processed."""
    from azure.servicebus.amqp import AmqpAnnotatedMessage

    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=5), QueueConfig("replies")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        consumer = make_consumer(client, SimpleProcessor(), request_queue="requests", concurrency=4)
        with client.get_queue_sender("requests") as sender:
            sender.send_messages(
                ServiceBusMessage(
                    body("c1", "x"), message_id="inf-attempt", application_properties={"gcw-attempt": float("inf")}
                )
            )
            sender.send_messages(AmqpAnnotatedMessage(value_body=None, properties={"message_id": "null-body"}))
            sender.send_messages(
                AmqpAnnotatedMessage(
                    data_body=body("c1", "y"), properties={"message_id": "long-session", "reply_to_group_id": "s" * 200}
                )
            )
            sender.send_messages(ServiceBusMessage(body("c1", "a"), message_id="ok-1"))
        with Running(consumer) as running:
            replies = receive_all(client, "replies", 4, timeout=20)
            assert all(o.is_alive() for o in consumer.owners)
            assert running.thread.is_alive()
        by_id = {r[2]["request_id"]: r[2] for r in replies}
        assert by_id["ok-1"]["status"] == "succeeded"
        assert by_id["inf-attempt"]["status"] == "succeeded" and by_id["inf-attempt"]["attempts"] == 1
        assert by_id["null-body"]["status"] == "invalid" and by_id["null-body"]["error"]["message"].startswith("body")
        assert by_id["long-session"]["status"] == "invalid"
        assert "reply_to_session_id" in by_id["long-session"]["error"]["message"]
        with client.get_queue_receiver("requests", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = {m.message_id: m.dead_letter_reason for m in dlq.peek_messages(max_message_count=10)}
        assert dead == {"null-body": "InvalidRequest", "long-session": "InvalidRequest"}
        assert emu.stats()["entities"]["requests"]["active"] == 0


def test_reply_to_matching_an_allowed_entity_in_other_case_gets_its_reply_there(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = sb_emulator(queues=[QueueConfig("requests"), QueueConfig("replies"), QueueConfig("replies-b")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        s = ConsumerSettings(
            reply_queue="replies", request_queue="requests", concurrency=2, allowed_reply_to=frozenset({"replies-b"})
        )
        consumer = Consumer(
            client,
            s,
            SimpleProcessor(),
            limits=Limits(allowed_reply_to=frozenset({"replies", "replies-b"})),
            metrics=Metrics(),
            health=HealthState(),
        )
        with client.get_queue_sender("requests") as sender:
            sender.send_messages(ServiceBusMessage(body("c1", "x"), message_id="cased", reply_to="Replies-B"))
        with Running(consumer):
            got = receive_all(client, "replies-b", 1, timeout=15)
        assert [r[2]["request_id"] for r in got] == ["cased"]


def test_a_message_that_cannot_be_read_is_dead_lettered_and_the_loop_goes_on(sb_emulator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import worker.servicebus.inflight as owner_module  # where a received message is read

    real = owner_module.meta_from_message

    def meta_or_boom(message):  # type: ignore[no-untyped-def]
        if message.message_id == "unreadable":
            raise RuntimeError("cannot read sig=SECRET123")
        return real(message)

    monkeypatch.setattr(owner_module, "meta_from_message", meta_or_boom)
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=5), QueueConfig("replies")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        consumer = make_consumer(client, SimpleProcessor(), request_queue="requests", concurrency=4)
        with client.get_queue_sender("requests") as sender:
            sender.send_messages(ServiceBusMessage(body("c1", "x"), message_id="unreadable"))
            sender.send_messages(ServiceBusMessage(body("c1", "a"), message_id="ok-1"))
        with Running(consumer):
            replies = receive_all(client, "replies", 1, timeout=15)
            assert all(o.is_alive() for o in consumer.owners)
        assert [r[2]["request_id"] for r in replies] == ["ok-1"]
        with client.get_queue_receiver("requests", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = dlq.peek_messages(max_message_count=10)
        assert [(m.message_id, m.dead_letter_reason) for m in dead] == [("unreadable", "InvalidRequest")]
        assert "SECRET123" not in (dead[0].dead_letter_error_description or "")


def test_idle_session_owner_attempts_do_not_grow_connections_or_open_fds(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    """Each "no session available" attempt builds a session receiver; the owner closes it, so an idle worker's
    connections to the broker and its open file descriptors stay flat however long it waits."""
    import os

    from worker.servicebus.breaker import CircuitBreaker
    from worker.servicebus.owner import ReceiverOwner

    emu = sb_emulator(queues=[QueueConfig("requests", requires_session=True), QueueConfig("replies")])

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def connections() -> int:
        return len(emu._broker.connections)

    with ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as session_client:
        owner = ReceiverOwner(
            "session-0",
            client=session_client,
            settings=ConsumerSettings(
                reply_queue="replies", request_queue="requests", sessions=True, idle_receive_wait=0.2
            ),
            dispatch=lambda rec, own: None,
            breaker=CircuitBreaker(),
            metrics=Metrics(),
            health=HealthState(),
            capacity=1,
            receiver_client=session_client,
        )
        assert owner._open() is False  # warm-up: the first attempt may open what later ones share
        before = settled(lambda: (fds(), connections()))
        for _ in range(6):
            assert owner._open() is False
        # the broker sees any close a moment later: wait for the counts to come back down, or fail
        back_down = wait_until(lambda: fds() <= before[0] and connections() <= before[1], 5)
        after = (fds(), connections())
    assert back_down, (before, after)


class HugeFailureProcessor:
    """Fails every item of a 1,000-item request with a long, distinct error: a result of several MB unbounded."""

    def process(self, request, cancel, *, received_at=None):  # type: ignore[no-untyped-def]
        ids = [f"{request.request_id}-{n:04d}".ljust(149, "x") for n in range(1000)]
        items = [
            ItemOutcome(
                id=i,
                status="failed",
                error={"code": "InvalidItem", "message": f"item {i} rejected: " + "detail " * 300},
            )
            for i in ids
        ]
        result = Result.for_request(
            request,
            status="failed",
            items=items,
            error={"code": "InvalidItem", "message": f"1000 of 1000 items failed; first: {ids[0]}: ..."},
            received_at=received_at or datetime.now(UTC),
        )
        return Outcome(result, Settle.DEAD_LETTER, "DeleteFailed", "all 1000 items failed")


def test_a_result_too_large_for_the_reply_queue_is_shortened_and_delivered(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    """A 1,000-item result with long per-item errors is megabytes; the reply queue takes 256 KiB (the emulator's
    default, like the Standard tier). It used to fail every send, so the request was abandoned and redelivered
    until MaxDeliveryCount without any result. Now it is shortened (every item id and status kept) and sent, and
    several such results finishing together are sent in batches that fit."""
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=5, max_delivery_count=3), QueueConfig("replies")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        consumer = make_consumer(client, HugeFailureProcessor(), request_queue="requests", concurrency=4)
        with client.get_queue_sender("requests") as sender:
            sender.send_messages([ServiceBusMessage(body("c1", "a"), message_id=f"huge-{n}") for n in range(3)])
        with Running(consumer):
            replies = receive_all(client, "replies", 3, timeout=30)
        assert sorted(r[2]["request_id"] for r in replies) == ["huge-0", "huge-1", "huge-2"]
        for _, _, result in replies:
            assert len(json.dumps(result, separators=(",", ":"))) <= 240 * 1024
            assert result["status"] == "failed" and result["error"]["code"] == "InvalidItem"
            assert result["error"]["message"].startswith("1000 of 1000 items failed")
            assert "result shortened to fit" in result["error"]["message"]
            rid = result["request_id"]
            assert [i["id"] for i in result["items"]] == [f"{rid}-{n:04d}".ljust(149, "x") for n in range(1000)]
            assert {i["status"] for i in result["items"]} == {"failed"}
        with client.get_queue_receiver("requests", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = {m.message_id: m.dead_letter_reason for m in dlq.peek_messages(max_message_count=10)}
        assert dead == {f"huge-{n}": "DeleteFailed" for n in range(3)}  # answered, then dead-lettered as decided
