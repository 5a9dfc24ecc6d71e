"""Shared pieces of the reliability suite: a harness with a durable, restartable Service Bus emulator and a
secret bearer token of its own, a secret scanner, and the checks every scenario ends with.

Built on ``tests.support.harness.Harness`` (both emulators in process, real ``geocatalog-worker run`` subprocesses).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator
from gcw_emulators.servicebus.emulator import SAS_KEY_VALUE

from tests.support.harness import REPLY_QUEUE, REQUEST_QUEUE, Harness, Reply, WorkerProcess

SOAK = os.environ.get("GCW_SOAK") == "1"

# Anything that still looks like a credential after redaction: a SAS signature, a bearer token, an account key
# or a JWT whose value is not the redaction marker.
_LEAK_PATTERNS = [
    re.compile(r"(?i)[?&;\s\"']sig=(?!\*\*\*)[^&\s\"';,]{3,}"),
    re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9\-_.~+/]{6,}"),
    re.compile(r"(?i)(?:SharedAccessKey|AccountKey|SharedAccessSignature)\s*=\s*(?!\*\*\*)[^;&\s\"']{3,}"),
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
]


class SecretScanner:
    """Finds secrets in text: the literal values this run handed out plus anything credential-shaped."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self.literals = {s for s in literals if s and len(s) >= 6}

    def add(self, *values: str) -> None:
        self.literals.update(v for v in values if v and len(v) >= 6)

    def leaks(self, text: str) -> list[str]:
        found = [f"literal secret {value[:4]}…" for value in self.literals if value in text]
        for pattern in _LEAK_PATTERNS:
            found += [f"pattern {m.group(0)[:12]}…" for m in pattern.finditer(text)]
        return found

    def assert_clean(self, where: str, texts: Iterable[str]) -> int:
        """Assert no text leaks; returns how many texts were scanned (so callers can assert it is not 0)."""
        count = 0
        for text in texts:
            count += 1
            leaks = self.leaks(text)
            assert not leaks, f"secret in {where}: {leaks} in {text[:300]!r}"
        return count


class ReliabilityHarness(Harness):
    """``Harness`` plus: a random GeoCatalog bearer token (so a leak is detectable), a Service Bus emulator with a
    ``data_dir`` that can be restarted on the same port, an optional missing reply queue, private storage hosts."""

    def __init__(
        self,
        *,
        durable: bool = False,
        reply_queue: bool = True,
        private_hosts: Sequence[str] = (),
        sas_expiry_seconds: float = 3600,
        seed: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.durable = durable
        self.with_reply_queue = reply_queue
        self.private_hosts = list(private_hosts)
        self.sas_expiry_seconds = sas_expiry_seconds
        self.seed = seed
        self.bearer = "gcw-bearer-" + secrets.token_urlsafe(24)
        self._data_dir = Path(tempfile.mkdtemp(prefix="gcw-rel-sb-")) if durable else None
        self._sb_port = 0
        self.scanner = SecretScanner([self.bearer, SAS_KEY_VALUE])

    def start(self) -> ReliabilityHarness:
        super().start()
        self.scanner.add(self.connection_string)
        return self

    def _geocatalog_options(self) -> dict[str, Any]:
        return {
            **super()._geocatalog_options(),
            "token": self.bearer,
            "private_hosts": self.private_hosts,
            "sas_expiry_seconds": self.sas_expiry_seconds,
            "seed": self.seed,
        }

    def _queues(self) -> list[QueueConfig]:
        queues = super()._queues()
        return queues if self.with_reply_queue else [q for q in queues if q.name != REPLY_QUEUE]

    def _start_servicebus(self) -> None:
        self.servicebus = ServiceBusEmulator(
            host="127.0.0.1", port=self._sb_port, queues=self._queues(), data_dir=self._data_dir
        ).start()
        self._sb_port = self.servicebus.port
        self.connection_string = self.servicebus.connection_string

    def add_reply_queue(self) -> None:
        """The reply queue appears (it was missing): as an operator creating it would."""
        assert self.servicebus is not None and not self.with_reply_queue
        self.with_reply_queue = True
        self.servicebus.store.add_queue(
            QueueConfig(REPLY_QUEUE, requires_duplicate_detection=self.reply_duplicate_detection)
        )

    def restart_servicebus(self, down_seconds: float = 1.0) -> None:
        """Stop the Service Bus emulator (every connection drops, locks are lost) and start it again on the same
        port from its data_dir: accepted messages survive, in-flight locks do not."""
        assert self.durable and self.servicebus is not None
        self.servicebus.stop()
        time.sleep(down_seconds)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._start_servicebus()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def send_messages(self, messages: Sequence[ServiceBusMessage]) -> None:
        with self.client.get_queue_sender(REQUEST_QUEUE) as sender:
            batch = sender.create_message_batch()
            for message in messages:
                try:
                    batch.add_message(message)
                except MessageSizeExceededError:
                    if len(batch):
                        sender.send_messages(batch)
                        batch = sender.create_message_batch()
                    try:
                        batch.add_message(message)
                    except MessageSizeExceededError:  # larger than a batch may be: alone
                        sender.send_messages(message)
            if len(batch):
                sender.send_messages(batch)

    def dead_letter_records(self, max_count: int = 5000) -> list[dict[str, Any]]:
        """Every dead-lettered request: message id, reason, description, body (peeked, not removed)."""
        out = []
        for msg in self.dead_letters(max_count=max_count):
            out.append(
                {
                    "message_id": msg.message_id,
                    "reason": msg.dead_letter_reason,
                    "description": msg.dead_letter_error_description,
                    "properties": {
                        (k.decode() if isinstance(k, bytes) else k): v
                        for k, v in (msg.application_properties or {}).items()
                    },
                }
            )
        return out

    def stop(self) -> None:
        super().stop()
        if self._data_dir is not None:
            import shutil

            shutil.rmtree(self._data_dir, ignore_errors=True)


def replies_by_request(replies: Sequence[Reply]) -> dict[str, Reply]:
    return {r.body["request_id"]: r for r in replies}


def assert_exactly_once(replies: Sequence[Reply], ids: Iterable[str]) -> None:
    counts = Counter(r.body["request_id"] for r in replies)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    assert not duplicates, f"answered more than once: {duplicates}"
    missing = set(ids) - set(counts)
    assert not missing, f"never answered: {sorted(missing)[:20]} ({len(missing)} in all)"


def assert_no_secrets(h: ReliabilityHarness, replies: Sequence[Reply], workers: Sequence[WorkerProcess]) -> None:
    """No secret in any worker log line, result body or dead-letter reason/description."""
    lines = [line for w in workers for line in w.lines]
    assert h.scanner.assert_clean("worker log", lines) > 0
    h.scanner.assert_clean("result", (json.dumps(r.body) for r in replies))
    h.scanner.assert_clean("result properties", (json.dumps(r.application_properties, default=str) for r in replies))
    records = h.dead_letter_records()
    h.scanner.assert_clean("dead-letter", (f"{d['reason']} {d['description']}" for d in records))


def events(workers: Sequence[WorkerProcess], name: str) -> list[dict[str, Any]]:
    return [e for w in workers for e in w.events(name)]
