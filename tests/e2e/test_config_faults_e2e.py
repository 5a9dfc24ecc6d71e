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
