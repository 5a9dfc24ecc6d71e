"""End to end: ``geocatalog-worker run --burst SECONDS`` (backfills, a KEDA ScaledJob): drain the backlog, including
the retries it schedules itself, then exit 0 once the request queue has stayed empty for SECONDS."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support.harness import Harness, ingest_request, stac_item

pytestmark = pytest.mark.timeout(120)


def test_burst_drains_the_backlog_with_its_retries_then_exits_zero() -> None:
    faults = ["status=503,path=/stac/collections/c1/items,method=POST,count=4"]
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"], faults=faults) as h:
        n = 20
        ids = h.send([ingest_request("c1", [stac_item(f"b-{i}", "c1")]) for i in range(n)])
        w = h.start_worker(
            burst=2,
            concurrency=8,
            max_attempts=10,
            breaker_threshold=50,
            geocatalog_retry_seconds=0.2,
            retry_base_seconds=8,
            retry_max_seconds=9,  # a retry due later than the burst wait
        )
        assert w.proc.wait(timeout=90) == 0, w.output()[-4000:]
        stats = h.queue_stats()
        assert (stats["active"], stats["scheduled"], stats["dead_letter"], stats["locked"]) == (0, 0, 0, 0), stats
        replies = h.collect_replies(n, timeout=10, settle_extra=0.5)
        assert Counter(r.body["request_id"] for r in replies) == Counter(ids)
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body for r in replies]
        assert w.events("request_rescheduled"), "the fault should have caused a scheduled retry"
        (finished,) = w.events("burst_finished")
        assert finished["empty_seconds"] == 2
        assert w.events("worker_stopped")[0]["exit_status"] == 0


def test_burst_on_an_empty_queue_exits_zero_after_the_wait() -> None:
    with Harness(collections=["c1"]) as h:
        started = time.monotonic()
        w = h.start_worker(burst=1.5)
        assert w.proc.wait(timeout=60) == 0, w.output()[-4000:]
        assert time.monotonic() - started >= 1.5
        assert w.events("burst_finished")


def test_burst_must_be_positive() -> None:
    with Harness(collections=["c1"]) as h:
        w = h.start_worker(burst=0)
        assert w.proc.wait(timeout=30) == 2
        assert "--burst" in w.output()
