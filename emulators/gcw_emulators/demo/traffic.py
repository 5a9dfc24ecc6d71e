"""Send request messages and collect result messages, over the real SDK: the producer's side of the system."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError


@dataclass
class Outgoing:
    message_id: str
    body: bytes
    correlation_id: str | None = None
    reply_to: str | None = None
    session_id: str | None = None
    application_properties: dict[str, Any] | None = None


def send_batched(
    client: ServiceBusClient,
    queue: str,
    messages: Iterable[ServiceBusMessage],
    batch_size: int = 50,
    on_sent: Callable[[list[ServiceBusMessage]], None] | None = None,
) -> None:
    """Send in batches of at most ``batch_size`` messages that also fit the broker's batch size limit; a message
    larger than a batch may be goes alone (and the SDK refuses it when the broker would). ``on_sent`` is called
    with each batch's messages once the broker has accepted them."""
    with client.get_queue_sender(queue) as sender:
        batch = sender.create_message_batch()
        pending: list[ServiceBusMessage] = []

        def flush() -> None:
            nonlocal batch
            sender.send_messages(batch)
            if on_sent is not None:
                on_sent(list(pending))
            pending.clear()
            batch = sender.create_message_batch()

        for message in messages:
            if len(pending) >= batch_size:
                flush()
            try:
                batch.add_message(message)
            except MessageSizeExceededError:
                if pending:
                    flush()
                try:
                    batch.add_message(message)
                except MessageSizeExceededError:
                    sender.send_messages(message)
                    if on_sent is not None:
                        on_sent([message])
                    continue
            pending.append(message)
        if pending:
            flush()


def send_requests(
    client: ServiceBusClient, queue: str, requests: Iterable[Outgoing], batch_size: int = 50
) -> dict[str, float]:
    """Send ``requests`` with :func:`send_batched`; returns message_id → monotonic send time (for end-to-end
    latency)."""
    sent_at: dict[str, float] = {}

    def sent(batch: list[ServiceBusMessage]) -> None:
        now = time.monotonic()
        sent_at.update((str(m.message_id), now) for m in batch)

    messages = (
        ServiceBusMessage(
            r.body,
            message_id=r.message_id,
            correlation_id=r.correlation_id,
            reply_to=r.reply_to,
            session_id=r.session_id,
            content_type="application/json",
            application_properties=r.application_properties,
        )
        for r in requests
    )
    send_batched(client, queue, messages, batch_size=batch_size, on_sent=sent)
    return sent_at


@dataclass
class Collected:
    result: dict[str, Any]
    correlation_id: str | None
    message_id: str | None
    received_at: float
    enqueued_at: float | None = None  # the broker's enqueued time of the result (epoch seconds)


@dataclass
class ResultCollector:
    """Receives result messages on a background thread, keyed by the result's ``request_id``.

    ``duplicates`` counts results that arrived for a request that already had one: the worker promises
    exactly one, so tests assert it stays 0.
    """

    client: ServiceBusClient
    queue: str
    results: dict[str, Collected] = field(default_factory=dict)
    duplicates: list[Collected] = field(default_factory=list)
    malformed: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="result-collector", daemon=True)

    def start(self) -> ResultCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def __enter__(self) -> ResultCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with self.client.get_queue_receiver(self.queue, prefetch_count=100) as receiver:
            while not self._stop.is_set():
                for msg in receiver.receive_messages(max_message_count=100, max_wait_time=0.5):
                    try:
                        result = json.loads(b"".join(msg.body))
                        item = Collected(
                            result=result,
                            correlation_id=msg.correlation_id,
                            message_id=msg.message_id,
                            received_at=time.monotonic(),
                            enqueued_at=msg.enqueued_time_utc.timestamp() if msg.enqueued_time_utc else None,
                        )
                    except ValueError:
                        item = None
                    receiver.complete_message(msg)
                    with self._changed:
                        if item is None:
                            self.malformed += 1
                        elif item.result.get("request_id") in self.results:
                            self.duplicates.append(item)
                        else:
                            self.results[item.result.get("request_id")] = item
                        self._changed.notify_all()

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_for(self, request_ids: Iterable[str], timeout: float) -> bool:
        """Block until every id has a result, or the timeout passes."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not wanted.issubset(self.results):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
        return True

    def snapshot(self) -> dict[str, Collected]:
        with self._lock:
            return dict(self.results)
