"""Shared pieces of the reliability suite: a harness with a durable, restartable Service Bus emulator and a
secret bearer token of its own, a secret scanner, and the checks every scenario ends with.

Built on ``tests.support.harness.Harness``, i.e. ``gcw_emulators.cluster.Cluster`` (both emulators in process, real
``geocatalog-worker run`` subprocesses).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from gcw_emulators.servicebus.emulator import SAS_KEY_VALUE

from tests.support.harness import Harness, Reply, WorkerProcess

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
    """``Harness`` with a random GeoCatalog bearer token (so a leak is detectable) and a ``SecretScanner`` that
    knows it, the Service Bus key and the connection string. Durability (``durable=True``, ``restart_servicebus``),
    a missing reply queue (``reply_queue=False``, ``add_reply_queue``), private hosts and SAS lifetimes are the
    ``Cluster``'s own keywords; the fault seed defaults to 3 and no storage host is private."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("seed", 3)
        kwargs.setdefault("private_hosts", ())
        self.bearer = "gcw-bearer-" + secrets.token_urlsafe(24)
        super().__init__(token=self.bearer, **kwargs)
        self.scanner = SecretScanner([self.bearer, SAS_KEY_VALUE])

    def __enter__(self) -> ReliabilityHarness:
        self.start()
        return self

    def start(self) -> ReliabilityHarness:
        super().start()
        self.scanner.add(self.connection_string)
        return self


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
