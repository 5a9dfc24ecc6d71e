"""End to end: configuration faults hold intake instead of dead-lettering the backlog (issue 17).

Real ``geocatalog-worker run`` subprocesses against both emulators. GeoCatalog answers 403 on every STAC call for
``GCW_TEST_FAULT_SECONDS`` (default 8 s, longer than the 5 s message lock, so the held messages' locks must be
renewed; the issue's 60 s is ``GCW_TEST_FAULT_SECONDS=60``).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.support.harness import Harness, ingest_request, stac_item, wait_until

pytestmark = pytest.mark.timeout(240)

FAULT_SECONDS = float(os.environ.get("GCW_TEST_FAULT_SECONDS", "8"))


def test_geocatalog_403_holds_intake_names_the_cause_and_the_backlog_finishes_after() -> None:
    with Harness(lock_duration=5, max_delivery_count=2, operation_seconds=0.1, collections=["c1"]) as h:
        w = h.start_worker(concurrency=4, breaker_open_seconds=1, breaker_max_open_seconds=2)
        h.wait_ready(w)
        assert h.geocatalog is not None
        h.geocatalog.set_faults(["status=403,path=/stac"])
        started = time.monotonic()
        n = 12
        ids = h.send([ingest_request("c1", [stac_item(f"held-{i}", "c1")]) for i in range(n)])

        def names_the_cause() -> bool:
            status, body = h.http(w, "/readyz")
            return status == 503 and json.loads(body)["failed"].get("geocatalog", {}).get("cause") == (
                "geocatalog_forbidden"
            )

        assert wait_until(names_the_cause, 30), h.http(w, "/readyz")
        assert h.metric(w, "gcw_config_fault", 'cause="geocatalog_forbidden"') == 1
        detail = json.loads(h.http(w, "/readyz")[1])["failed"]["geocatalog"]["detail"]
        assert "403" in detail and h.geocatalog.token not in detail

        time.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - started)))  # the fault's window, by design
        stats = h.queue_stats()
        assert stats["dead_letter"] == 0, stats
        assert stats["active"] >= n - 4, stats  # intake was held: at most --concurrency messages taken
        h.geocatalog.clear_faults()

        replies = h.collect_replies(n, timeout=60, settle_extra=1.0)
        assert sorted(r.body["request_id"] for r in replies) == sorted(ids)
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body for r in replies]
        assert h.dead_letters() == []
        assert wait_until(lambda: h.http(w, "/readyz")[0] == 200, 20)
        assert h.metric(w, "gcw_config_fault", 'cause="geocatalog_forbidden"') == 0
        assert len(w.events("configuration_fault")) == 1  # one log line, not one per request
        assert len(w.events("configuration_fault_cleared")) == 1
        assert h.geocatalog.stats()["items"]["c1"] == n


def _readyz(h: Harness, w) -> tuple[int, dict]:  # type: ignore[no-untyped-def,type-arg]
    status, body = h.http(w, "/readyz")
    return status, json.loads(body)


def test_missing_reply_queue_and_unreachable_geocatalog_are_reported_at_start_and_nothing_is_taken() -> None:
    with Harness(collections=["c1"]) as h:
        assert h.geocatalog is not None
        ids = h.send([ingest_request("c1", [stac_item("early", "c1")])])
        w = h.start_worker(reply_queue="no-such-replies", allowed_reply_to=["replies"])
        assert wait_until(lambda: w.health_port is not None and bool(w.events("preflight_check")), 30), w.output()
        checks = {e["check"]: e for e in w.events("preflight_check")}
        assert checks["send_reply"]["result"] == "FAILED"
        assert checks["send_reply"]["cause"] == "servicebus_entity_not_found"
        status, body = _readyz(h, w)
        assert status == 503 and body["failed"]["send_reply"]["cause"] == "servicebus_entity_not_found"
        assert h.queue_stats()["active"] == 1  # intake held: the request waits in the queue
        h.terminate(w)

        h.geocatalog.set_faults(["status=403,path=/stac"])
        w = h.start_worker()
        assert wait_until(lambda: w.health_port is not None and bool(w.events("preflight_check")), 30), w.output()
        assert wait_until(
            lambda: _readyz(h, w)[1]["failed"].get("geocatalog", {}).get("cause") == "geocatalog_forbidden", 10
        ), _readyz(h, w)
        assert h.queue_stats()["active"] == 1  # a start-up fault holds intake before any request is taken
        h.geocatalog.clear_faults()
        replies = h.collect_replies(1, timeout=30)
        assert [r.body["request_id"] for r in replies] == ids and replies[0].body["status"] == "succeeded"
        assert wait_until(lambda: _readyz(h, w)[0] == 200, 10)
