"""The cluster's Service Bus emulator in a process of its own has the queues the in-process one has."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage
from gcw_emulators.cluster import REPLY_QUEUE, REQUEST_QUEUE, Cluster, write_config_json
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.config import load_config_json

pytestmark = pytest.mark.timeout(120)


def test_config_json_round_trips_the_queues(tmp_path: Path) -> None:
    queues = [
        QueueConfig("requests", lock_duration=60.0, max_delivery_count=3, requires_session=True),
        QueueConfig("replies", requires_duplicate_detection=True, duplicate_detection_window=120.0),
    ]
    assert load_config_json(write_config_json(tmp_path / "Config.json", queues)) == (queues, [])


def test_the_broker_process_keeps_duplicate_detection_on_the_reply_queue() -> None:
    with Cluster(servicebus_process=True, lock_duration=7.0, collections=[]) as c:
        assert c.servicebus is None and c.servicebus_proc is not None
        with c.client.get_queue_sender(REPLY_QUEUE) as sender:
            for body in ("first", "again"):  # the same message id twice: the second is dropped
                sender.send_messages(ServiceBusMessage(body, message_id="same-id"))
            sender.send_messages(ServiceBusMessage("other", message_id="other-id"))
        with c.client.get_queue_receiver(REPLY_QUEUE, max_wait_time=2) as receiver:
            got = [str(m) for m in receiver.receive_messages(max_message_count=10, max_wait_time=2)]
            for m in receiver.receive_messages(max_message_count=10, max_wait_time=1):
                got.append(str(m))
        assert sorted(got) == ["first", "other"]
        with c.client.get_queue_sender(REQUEST_QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("req"))
        with c.client.get_queue_receiver(REQUEST_QUEUE, max_wait_time=2) as receiver:
            (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=5)
            held = (msg.locked_until_utc - msg.enqueued_time_utc).total_seconds()
            assert 5.0 < held < 9.0  # the cluster's lock duration, not the CLI's default of 30 s
