"""Chaos: many requests in flight across 3 worker processes; workers are SIGKILLed at random and restarted, and the
Service Bus emulator (durable, with a data_dir) is stopped and restarted once on the same port.

Afterwards every request has exactly one result (or a dead-letter entry with a reason), no item was written twice
(the GeoCatalog emulator's operations count each successful item write), nothing is left locked or active, and no
secret is in any log line, result or dead-letter description.

CI runs a few hundred requests; ``GCW_SOAK=1`` runs 1,000 with more kills. ``GCW_CHAOS_DURATIONS=recorded`` runs it
with the live service's recorded operation timings (AddItem about 7 s) instead of the quick 0.3-1.5 s.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time

import pytest

from tests.e2e.reliability.support import SOAK, ReliabilityHarness, assert_exactly_once, assert_no_secrets
from tests.support.harness import ingest_request, stac_item, wait_until

pytestmark = [pytest.mark.timeout(900 if SOAK else 300), pytest.mark.slow]

COLLECTION = "chaos"
DURATIONS = os.environ.get("GCW_CHAOS_DURATIONS", "uniform:0.3,1.5")


def successful_item_writes(h: ReliabilityHarness) -> int:
    """Items the catalog actually wrote, summed over every applied item operation."""
    assert h.geocatalog is not None
    h.geocatalog.stats()  # applies every finished operation
    total = 0
    for op in h.geocatalog.catalog.store.list_operations():
        if op.type in ("AddItem", "UpdateItem") and op.outcome is not None:
            total += int(op.additional_information.get("TotalSuccessfulItems", "0"))
    return total


def test_sigkill_workers_and_restart_servicebus_nothing_lost_nothing_twice() -> None:
    n = 1000 if SOAK else 240
    kills = 20 if SOAK else 6
    rng = random.Random(20261124)
    with ReliabilityHarness(
        durable=True,
        lock_duration=3,
        max_delivery_count=10,
        operation_seconds=DURATIONS,
        collections=[COLLECTION],
    ) as h:
        common = {"concurrency": 8, "max_attempts": 8, "batch_linger_ms": 20}
        live = [h.start_worker(**common) for _ in range(3)]
        for w in live:
            h.wait_ready(w)
        bodies = [
            ingest_request(COLLECTION, [stac_item(f"i{i}-a", COLLECTION), stac_item(f"i{i}-b", COLLECTION)])
            for i in range(n)
        ]
        ids = [f"chaos-{i:04d}" for i in range(n)]
        sender = threading.Thread(target=h.send, args=(bodies,), kwargs={"message_ids": ids}, daemon=True)
        sender.start()
        sender.join(timeout=120)
        assert not sender.is_alive(), "sending the requests hung"

        # the chaos: SIGKILL a random worker, restart it; once, halfway, restart the broker
        assert wait_until(lambda: h.queue_stats()["locked"] > 0, 30)
        interrupted = 0  # requests in flight in the killed processes
        for k in range(kills):
            time.sleep(rng.uniform(1.0, 3.0))  # chaos at random moments: the time between kills is the point
            victim = live.pop(rng.randrange(len(live)))
            with contextlib.suppress(Exception):  # a just-restarted worker may not serve metrics yet
                interrupted += int(h.metric(victim, "gcw_requests_in_flight"))
            h.kill(victim)
            live.append(h.start_worker(**common))
            if k == kills // 2:
                h.restart_servicebus(down_seconds=1.0)

        replies = h.collect_replies(n, timeout=600 if SOAK else 180, settle_extra=3.0)
        dead = h.dead_letter_records()
        answered = {r.body["request_id"] for r in replies}
        dead_ids = {d["message_id"] for d in dead}
        for d in dead:
            assert d["reason"], f"dead-lettered without a reason: {d}"
        # exactly one result each, or a dead-letter entry with a reason
        assert_exactly_once(replies, set(ids) - dead_ids)
        assert answered | dead_ids >= set(ids)
        statuses = {r.body["status"] for r in replies}
        assert statuses <= {"succeeded"}, [r.body for r in replies if r.body["status"] != "succeeded"][:3]
        assert not dead, f"dead-lettered under chaos: {[(d['message_id'], d['reason']) for d in dead][:5]}"

        # nothing written twice, everything written once
        assert h.geocatalog is not None
        assert h.geocatalog.stats()["items"][COLLECTION] == 2 * n
        assert successful_item_writes(h) == 2 * n
        stats = h.queue_stats()
        assert stats["active"] == 0 and stats["locked"] == 0 and stats["scheduled"] == 0, stats
        assert_no_secrets(h, replies, h.workers)
        # the chaos really hit work in flight
        print(f"chaos: {n} requests, {kills} kills, {interrupted} requests in flight in killed workers")
        assert interrupted > 0
