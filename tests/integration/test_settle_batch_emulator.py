"""One update-disposition request for a turn's completions (worker/servicebus/settlement.py
``complete_in_one_request``), against the Service Bus emulator with the real SDK over sockets.

These fail when azure-servicebus changes what the adapter relies on (the receiver's private
``_settle_message_via_mgmt_link``, the pyamqp receiver link's ``_received_delivery_tags``): the worker would then
settle one message per round trip again, correct but slower.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.exceptions import MessageAlreadySettled, MessageLockLostError
from gcw_emulators.servicebus import QueueConfig
from structlog.testing import capture_logs

from tests.integration.test_runtime_integration import Running, SimpleProcessor, body, make_consumer, receive_all
from worker.servicebus.settlement import Together, _link_delivery_tags, complete_in_one_request

pytestmark = pytest.mark.timeout(120)


@contextmanager
def _locked(emu, n: int):  # type: ignore[no-untyped-def]
    """A receiver on queue ``requests`` holding the locks of ``n`` messages it received, by message id."""
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        with client.get_queue_sender("requests") as sender:
            sender.send_messages([ServiceBusMessage(f"m{i}", message_id=f"m{i}") for i in range(n)])
        with client.get_queue_receiver("requests") as receiver:
            got: list[ServiceBusReceivedMessage] = []
            while len(got) < n:
                got += receiver.receive_messages(max_message_count=n - len(got), max_wait_time=5)
            yield receiver, sorted(got, key=lambda m: m.message_id or "")


def test_one_request_completes_every_message_and_leaves_nothing_to_settle_on_the_link(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=30)])
    with _locked(emu, 5) as (receiver, messages):
        tags = _link_delivery_tags(receiver)
        assert tags is not None and len(tags) == 5  # the link's bookkeeping of unsettled deliveries, found
        assert complete_in_one_request(receiver, messages) is Together.DONE
        assert tags == set()  # nothing kept for the link's lifetime
        with pytest.raises(MessageAlreadySettled):  # the SDK knows they are settled: no second disposition
            receiver.complete_message(messages[0])
        stats = emu.stats()["entities"]["requests"]
        assert (stats["completed"], stats["active"], stats["locked"]) == (5, 0, 0)
        assert receiver.receive_messages(max_message_count=5, max_wait_time=1) == []


def test_a_request_with_a_lost_lock_fails_and_one_by_one_settles_the_rest(sb_emulator) -> None:  # type: ignore[no-untyped-def]
    # The answer carries no per-token outcome (Microsoft: "AMQP request-response operations", update disposition
    # status: statusCode 200 success, otherwise failed); the emulator applies the tokens in order up to the bad one.
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=30)])
    with _locked(emu, 3) as (receiver, messages):
        receiver.complete_message(messages[1])  # the broker no longer knows its lock token ...
        messages[1]._settled = False  # ... while this client still holds it as locked: a lock lost unseen
        assert complete_in_one_request(receiver, messages) is Together.LOCK_LOST
        outcomes = []
        for m in (messages[0], messages[2]):  # the caller's fallback: each message as before
            try:
                receiver.complete_message(m)
                outcomes.append("completed")
            except MessageLockLostError:
                outcomes.append("lock lost")  # applied by the failed request: reads as a lost lock
        assert outcomes[1] == "completed"
        stats = emu.stats()["entities"]["requests"]
        assert (stats["completed"], stats["active"], stats["locked"]) == (3, 0, 0)


class _Together(SimpleProcessor):
    """Holds every request until ``n`` are being processed, so their completions reach the owner together."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(n, timeout=30)

    def process(self, request, cancel, *, received_at=None):  # type: ignore[no-untyped-def]
        self.barrier.wait()
        return super().process(request, cancel, received_at=received_at)


@pytest.mark.parametrize("settle_together", [True, False])
def test_the_owner_completes_a_turns_finished_requests_in_one_request_when_asked(  # type: ignore[no-untyped-def]
    sb_emulator, settle_together: bool
) -> None:
    emu = sb_emulator(queues=[QueueConfig("requests", lock_duration=30), QueueConfig("replies")])
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        consumer = make_consumer(
            client, _Together(8), request_queue="requests", concurrency=8, settle_together=settle_together
        )
        with client.get_queue_sender("requests") as sender:
            sender.send_messages([ServiceBusMessage(body("c1", f"i{i}"), message_id=f"r{i}") for i in range(8)])
        with capture_logs() as logs, Running(consumer):
            replies = receive_all(client, "replies", 8)
        assert sorted(r[2]["request_id"] for r in replies) == [f"r{i}" for i in range(8)]
        together = [e["count"] for e in logs if e["event"] == "requests_completed_together"]
        completed = [e for e in logs if e["event"] == "request_completed"]
        # off (the default): one settlement round trip per request, as the public API does
        assert (bool(together) and max(together) >= 2) if settle_together else not together
        assert len(completed) == 8 and not [e for e in logs if e["event"] == "settle_batch_failed"]
        stats = emu.stats()["entities"]["requests"]
        assert (stats["completed"], stats["active"], stats["locked"]) == (8, 0, 0)
        assert consumer.metrics.locks_lost._value.get() == 0
