"""Outage recovery end to end: a real ``geocatalog-worker run`` dead-letters requests during a GeoCatalog outage,
``geocatalog-worker dlq replay`` re-sends them once it is over, and the worker answers them with success."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support.harness import Harness, ingest_request, stac_item, wait_until
from worker.cli import main

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]


def test_replayed_requests_are_processed_to_success_after_an_outage() -> None:
    outage = ["status=503,path=/stac/collections/c1/items,method=POST,count=100000"]
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"], faults=outage) as h:
        assert h.servicebus is not None and h.geocatalog is not None
        w = h.start_worker(concurrency=4, max_attempts=1, breaker_threshold=1000)
        h.wait_ready(w)
        n = 3
        ids = h.send(
            [ingest_request("c1", [stac_item(f"r-{i}", "c1")]) for i in range(n)],
            correlation_ids=["corr-0", None, "corr-2"],
        )
        failed = h.collect_replies(n, timeout=60, settle_extra=0.5)
        assert sorted(r.body["status"] for r in failed) == ["failed"] * n
        assert wait_until(lambda: h.queue_stats()["dead_letter"] == n, 30)
        assert {m.dead_letter_reason for m in h.dead_letters()} == {"RetriesExhausted"}

        h.geocatalog.set_faults([])  # the outage is over
        cs = h.servicebus.connection_string
        args = ["dlq", "replay", "--servicebus-connection-string", cs, "--request-queue", "requests"]
        result = CliRunner().invoke(main, [*args, "--reason", "RetriesExhausted", "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["replayed"] == n

        replies = h.collect_replies(n, timeout=60, settle_extra=1.0)
        assert len(replies) == n, [r.body for r in replies]
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body for r in replies]
        # the producer still correlates: original correlation id, or the original message id when it had none
        assert sorted(r.correlation_id for r in replies) == sorted(["corr-0", ids[1], "corr-2"])
        assert h.geocatalog.stats()["items"].get("c1") == n
        assert h.queue_stats()["dead_letter"] == 0 and h.queue_stats()["active"] == 0
