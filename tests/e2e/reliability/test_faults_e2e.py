"""Faults end to end (real worker processes, both emulators, sockets): throttling storms with Retry-After, connection
resets, a GeoCatalog outage, expiring SAS and bearer tokens, operations slower than the lock, a reply queue that
does not exist yet. Every request ends right (one ``succeeded`` result each), nothing is dead-lettered for a
transient reason, nothing stays locked, and no secret reaches a log line, result or dead-letter description.

``GCW_SOAK=1`` runs the long versions (60 s outage, more requests).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.reliability.support import (
    SOAK,
    ReliabilityHarness,
    assert_exactly_once,
    assert_no_secrets,
)
from tests.support.harness import REPLY_QUEUE, ingest_request, stac_item, wait_until

pytestmark = [pytest.mark.timeout(600 if SOAK else 240), pytest.mark.slow]

C = "faults"
FAST = {"retry_base_seconds": 0.5, "retry_max_seconds": 3, "breaker_open_seconds": 1}


def _requests(prefix: str, n: int, href: str | None = None) -> list[dict[str, Any]]:
    return [ingest_request(C, [stac_item(f"{prefix}-{i}", C, href=href and href.format(i=i))]) for i in range(n)]


def _all_succeeded(h: ReliabilityHarness, ids: list[str], timeout: float, workers: list) -> list:  # type: ignore[type-arg]
    replies = h.collect_replies(len(ids), timeout=timeout, settle_extra=1.5)
    assert_exactly_once(replies, ids)
    bad = [r.body for r in replies if r.body["status"] != "succeeded"]
    assert not bad, bad[:3]
    dead = h.dead_letter_records()
    assert not dead, f"dead-lettered: {[(d['message_id'], d['reason'], d['description']) for d in dead][:3]}"
    stats = h.queue_stats()
    assert stats["active"] == 0 and stats["locked"] == 0 and stats["scheduled"] == 0, stats
    assert_no_secrets(h, replies, workers)
    return replies


def test_throttling_storm_and_connection_resets() -> None:
    faults = [
        "status=503,rate=0.15,retry-after=1",
        "status=429,rate=0.15,retry-after=1",
        "reset,rate=0.05",
    ]
    n = 200 if SOAK else 60
    with ReliabilityHarness(lock_duration=5, operation_seconds=0.2, collections=[C], faults=faults) as h:
        workers = [h.start_worker(concurrency=8, breaker_threshold=1000, batch_linger_ms=1, **FAST) for _ in range(2)]
        for w in workers:
            h.wait_ready(w)
        ids = h.send(_requests("storm", n))
        _all_succeeded(h, ids, 180, workers)
        injected = h.geocatalog.stats()["faults_injected"]  # type: ignore[union-attr]
        assert injected.get("status-503") and injected.get("status-429") and injected.get("reset"), injected
        assert h.geocatalog.stats()["items"][C] == n  # type: ignore[union-attr]


def test_geocatalog_outage_nothing_dead_lettered_before_the_budget_is_spent() -> None:
    outage = 60 if SOAK else 8
    n = 30
    with ReliabilityHarness(lock_duration=5, operation_seconds=0.1, collections=[C]) as h:
        w = h.start_worker(concurrency=8, max_attempts=5, breaker_threshold=3, **FAST)
        h.wait_ready(w)
        h.geocatalog.set_faults([f"outage={outage}"])  # type: ignore[union-attr]
        started = time.monotonic()
        ids = h.send(_requests("outage", n))
        replies = _all_succeeded(h, ids, outage + 120, [w])
        assert time.monotonic() - started >= outage * 0.8  # they really waited the outage out
        assert h.geocatalog.stats()["faults_injected"]["outage"] > 0  # type: ignore[union-attr]
        assert len(replies) == n


def test_bearer_token_rejected_for_a_while_is_retried_not_dead_lettered() -> None:
    """GeoCatalog answers 401 for a few seconds (a token the service does not accept yet): a configuration fault,
    so the requests are held (intake too) and processed again once a probe passes, never failed."""
    with ReliabilityHarness(lock_duration=5, operation_seconds=0.1, collections=[C]) as h:
        w = h.start_worker(concurrency=8, max_attempts=8, breaker_threshold=1000, **FAST)
        h.wait_ready(w)
        h.geocatalog.set_faults(["auth-expired=3"])  # type: ignore[union-attr]
        ids = h.send(_requests("auth", 10))
        _all_succeeded(h, ids, 120, [w])
        assert h.geocatalog.stats()["faults_injected"].get("auth-expired")  # type: ignore[union-attr]


def test_expiring_sas_tokens_are_refreshed() -> None:
    """Assets on a private storage account: SAS tokens live 6 s and the service treats them as expired 2 s early;
    requests keep arriving for longer than a token lives, and every ingest still reads its assets."""
    private = "privacc.blob.core.windows.net"
    n = 60 if SOAK else 24
    with ReliabilityHarness(
        lock_duration=5,
        operation_seconds=0.5,
        collections=[C],
        private_hosts=[private],
        sas_expiry_seconds=6,
        faults=["sas-early=2"],
    ) as h:
        w = h.start_worker(
            concurrency=8,
            max_attempts=8,
            sign_host=["*.blob.core.windows.net"],
            sas_api_url=h.geocatalog.url,  # type: ignore[union-attr]
            breaker_threshold=1000,
            **FAST,
        )
        h.wait_ready(w)
        ids: list[str] = []
        for wave in range(n // 4):  # a wave every second: longer than a token's life
            ids += h.send(_requests(f"sas{wave}", 4, href=f"https://{private}/data/w{wave}-{{i}}.tif"))
            time.sleep(1.0)  # the passage of time is the point: tokens expire between waves
        _all_succeeded(h, ids, 180, [w])
        assert h.geocatalog.stats()["items"][C] == len(ids)  # type: ignore[union-attr]


def test_operations_and_responses_slower_than_the_lock() -> None:
    with ReliabilityHarness(
        lock_duration=2, operation_seconds="uniform:3,6", collections=[C], faults=["latency=0.5,jitter=0.5"]
    ) as h:
        w = h.start_worker(concurrency=8, **FAST)
        h.wait_ready(w)
        ids = h.send(_requests("slow", 12))
        _all_succeeded(h, ids, 120, [w])
        assert h.metric(w, "gcw_lock_renewals_total") >= 2
        assert h.metric(w, "gcw_locks_lost_total") == 0


def test_reply_queue_missing_for_a_while() -> None:
    with ReliabilityHarness(lock_duration=5, operation_seconds=0.1, collections=[C], reply_queue=False) as h:
        w = h.start_worker(concurrency=4, **FAST)
        ids = h.send(_requests("noreply", 5))

        def reply_sender_failures() -> int:
            return sum(e.get("entity") == REPLY_QUEUE for e in w.events("sender_open_failed"))

        # results cannot be published: the worker tries (and backs off) three times, holding intake meanwhile;
        # nothing may be completed, lost or dead-lettered
        assert wait_until(lambda: reply_sender_failures() >= 3, 60), w.output()[-3000:]
        assert h.queue_stats()["dead_letter"] == 0
        assert h.queue_stats()["completed"] == 0
        h.add_reply_queue()
        done = wait_until(lambda: w.proc.poll() is not None or h.queue_stats()["completed"] == 5, 90)
        assert done, w.output()[-3000:]
        _all_succeeded(h, ids, 60, [w])
