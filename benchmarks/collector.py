"""The benchmarks' result collector: ``gcw_emulators.demo.traffic.ResultCollector`` with a streaming receive.

The demo's collector receives in batches (the SDK then waits up to 0.2 s for more after the first message) and
completes each message before stamping the next, which adds 0.1-0.3 s to every measured latency. Here messages
are stamped as the iterator yields them and received in RECEIVE_AND_DELETE mode (no settlement round trip).
"""

from __future__ import annotations

import json
import time

from azure.servicebus import ServiceBusReceiveMode
from gcw_emulators.demo.traffic import Collected, ResultCollector


class StreamingCollector(ResultCollector):
    def _run(self) -> None:
        receiver = self.client.get_queue_receiver(
            self.queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, prefetch_count=200, max_wait_time=0.5
        )
        with receiver:
            while not self._stop.is_set():
                for msg in receiver:  # ends after max_wait_time without a message
                    now = time.monotonic()
                    try:
                        item: Collected | None = Collected(
                            result=json.loads(b"".join(msg.body)),
                            correlation_id=msg.correlation_id,
                            message_id=msg.message_id,
                            received_at=now,
                            enqueued_at=msg.enqueued_time_utc.timestamp() if msg.enqueued_time_utc else None,
                        )
                    except ValueError:
                        item = None
                    with self._changed:
                        if item is None:
                            self.malformed += 1
                        elif item.result.get("request_id") in self.results:
                            self.duplicates.append(item)
                        else:
                            self.results[item.result.get("request_id")] = item
                        self._changed.notify_all()
                    if self._stop.is_set():
                        break
