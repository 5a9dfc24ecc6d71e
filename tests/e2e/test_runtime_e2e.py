"""End to end: both emulators in process, real ``geocatalog-worker run`` subprocesses, the real SDK, sockets.

Lock durations and operation times are short (seconds) so the suite stays fast.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.support.harness import Harness, delete_request, ingest_request, stac_item, wait_until

pytestmark = pytest.mark.timeout(180)


def by_request(replies):  # type: ignore[no-untyped-def]
    return {r.body["request_id"]: r for r in replies}


def assert_exactly_once(replies, ids) -> None:  # type: ignore[no-untyped-def]
    counts = Counter(r.body["request_id"] for r in replies)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    assert not duplicates, f"answered more than once: {duplicates}"
    missing = set(ids) - set(counts)
    assert not missing, f"never answered: {sorted(missing)}"


def test_ingest_then_delete_many_requests_with_correct_correlation() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"]) as h:
        workers = [h.start_worker(concurrency=16) for _ in range(2)]
        for w in workers:
            h.wait_ready(w)
        n = 30
        ingest_ids = h.send(
            [ingest_request("c1", [stac_item(f"item-{i}", "c1"), stac_item(f"item-{i}b", "c1")]) for i in range(n)],
            correlation_ids=[f"corr-{i}" if i % 2 else None for i in range(n)],
        )
        replies = h.collect_replies(n, timeout=60, settle_extra=1.0)
        assert_exactly_once(replies, ingest_ids)
        got = by_request(replies)
        for i, mid in enumerate(ingest_ids):
            r = got[mid]
            assert r.body["status"] == "succeeded", r.body
            assert r.correlation_id == (f"corr-{i}" if i % 2 else mid)
            assert r.body["correlation_id"] == r.correlation_id
            assert r.message_id == f"result-{mid}"
            assert sorted(item["id"] for item in r.body["items"]) == sorted([f"item-{i}", f"item-{i}b"])
        assert h.geocatalog is not None
        assert h.geocatalog.stats()["items"].get("c1") == 2 * n

        delete_ids = h.send([delete_request("c1", [f"item-{i}", f"item-{i}b"]) for i in range(n)])
        replies = h.collect_replies(n, timeout=60, settle_extra=1.0)
        assert_exactly_once(replies, delete_ids)
        assert all(r.body["status"] == "succeeded" and r.body["action"] == "delete" for r in replies)
        assert h.geocatalog.stats()["items"].get("c1", 0) == 0
        assert h.queue_stats()["active"] == 0 and h.queue_stats()["dead_letter"] == 0
        # both workers took a share (competing consumers)
        assert all(w.events("request_completed") for w in workers), "one worker took everything"
        assert (
            h.metric(workers[0], "gcw_requests_finished_total") + h.metric(workers[1], "gcw_requests_finished_total")
            == 2 * n
        )

        # every delivery's queue wait, and every settled request's enqueue -> settle time, by result status
        def total(name: str, labels: str = "") -> float:
            return sum(h.metric(w, name, labels) for w in workers)

        assert wait_until(lambda: total("gcw_request_end_to_end_seconds_count", 'status="succeeded"') == 2 * n, 10), (
            total("gcw_request_end_to_end_seconds_count")
        )
        assert total("gcw_message_age_seconds_count") == total("gcw_requests_received_total") >= 2 * n
        assert total("gcw_request_end_to_end_seconds_sum") >= total("gcw_message_age_seconds_sum") > 0


def test_invalid_input_is_dead_lettered_and_answered_invalid() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1) as h:
        w = h.start_worker(concurrency=4)
        h.wait_ready(w)
        bad_item = stac_item("x", "c1")
        bad_item["properties"]["datetime"] = "yesterday"
        ids = h.send(
            [b"{not json", ingest_request("c1", [bad_item]), {"version": 99, "action": "ingest"}],
            correlation_ids=["bad-0", "bad-1", "bad-2"],
        )
        replies = h.collect_replies(3, timeout=30, settle_extra=0.5)
        assert_exactly_once(replies, ids)
        got = by_request(replies)
        for i, mid in enumerate(ids):
            assert got[mid].body["status"] == "invalid"
            assert got[mid].correlation_id == f"bad-{i}"
        assert "items[0].properties.datetime" in got[ids[1]].body["error"]["message"]
        assert wait_until(lambda: len(h.dead_letters()) == 3, 10)
        dlq = {m.message_id: m for m in h.dead_letters()}
        assert set(dlq) == set(ids)
        for m in dlq.values():
            assert m.dead_letter_reason == "InvalidRequest"
            assert m.dead_letter_error_description and len(m.dead_letter_error_description) <= 4096
        assert "datetime" in dlq[ids[1]].dead_letter_error_description
        assert h.metric(w, "gcw_requests_dead_lettered_total", 'reason="InvalidRequest"') == 3
        assert h.metric(w, "gcw_requests_finished_total", 'status="invalid"') == 3
        # the worker logs never carry the connection string's key or the bearer token
        assert h.servicebus is not None and h.geocatalog is not None
        key = h.servicebus.connection_string.split("SharedAccessKey=")[1].split(";")[0]
        assert key not in w.output() and f"Bearer {h.geocatalog.token}" not in w.output()


def test_lock_is_renewed_across_an_operation_longer_than_the_lock() -> None:
    with Harness(lock_duration=2, operation_seconds=5, collections=["c1"]) as h:
        w = h.start_worker(concurrency=4)
        h.wait_ready(w)
        ids = h.send([ingest_request("c1", [stac_item("slow", "c1")])])
        replies = h.collect_replies(1, timeout=40, settle_extra=2.0)
        assert_exactly_once(replies, ids)
        assert replies[0].body["status"] == "succeeded"
        assert replies[0].body["attempts"] == 1
        assert h.metric(w, "gcw_lock_renewals_total") >= 2
        assert h.metric(w, "gcw_locks_lost_total") == 0
        assert h.queue_stats()["completed"] == 1 and h.queue_stats()["active"] == 0


@pytest.mark.slow
def test_sigkill_mid_flight_another_worker_takes_over_nothing_lost_nothing_twice() -> None:
    with Harness(lock_duration=2, operation_seconds=1.5, collections=["c1"]) as h:
        a = h.start_worker(concurrency=8)
        h.wait_ready(a)
        n = 24
        ids = h.send([ingest_request("c1", [stac_item(f"k-{i}", "c1")]) for i in range(n)])
        assert wait_until(lambda: h.metric(a, "gcw_requests_in_flight") >= 4, 20)
        h.kill(a)
        b = h.start_worker(concurrency=8)
        replies = h.collect_replies(n, timeout=90, settle_extra=3.0)
        assert_exactly_once(replies, ids)
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body for r in replies]
        assert h.geocatalog is not None and h.geocatalog.stats()["items"]["c1"] == n
        assert h.queue_stats()["active"] == 0 and h.queue_stats()["dead_letter"] == 0
        assert b.events("request_completed")


def test_sigterm_drains_in_flight_requests_and_exits_zero() -> None:
    with Harness(lock_duration=5, operation_seconds=2, collections=["c1"]) as h:
        w = h.start_worker(concurrency=8, drain_seconds=20)
        h.wait_ready(w)
        ids = h.send([ingest_request("c1", [stac_item(f"d-{i}", "c1")]) for i in range(4)])
        assert wait_until(lambda: h.metric(w, "gcw_requests_in_flight") == 4, 20)
        w.proc.send_signal(15)
        # readiness flips while the in-flight work finishes
        assert wait_until(lambda: h.http(w, "/readyz")[0] == 503, 5)
        assert h.http(w, "/healthz")[0] == 200
        assert w.proc.wait(timeout=40) == 0
        replies = h.collect_replies(4, timeout=10, settle_extra=0.5)
        assert_exactly_once(replies, ids)
        assert h.queue_stats()["active"] == 0 and h.queue_stats()["completed"] == 4
        assert w.events("drain_started") and w.events("worker_stopped")


def test_sigterm_past_the_drain_deadline_abandons_for_immediate_redelivery() -> None:
    with Harness(lock_duration=30, operation_seconds=6, collections=["c1"]) as h:
        w = h.start_worker(concurrency=8, drain_seconds=0.5)
        h.wait_ready(w)
        ids = h.send([ingest_request("c1", [stac_item(f"e-{i}", "c1")]) for i in range(3)])
        assert wait_until(lambda: h.metric(w, "gcw_requests_in_flight") == 3, 20)
        started = time.monotonic()
        assert h.terminate(w, timeout=30) == 0
        assert time.monotonic() - started < 15
        assert len(w.events("message_abandoned")) == 3
        # abandoned, not left locked for 30 s: another worker answers them right away
        assert wait_until(lambda: h.queue_stats()["active"] == 3, 5)
        b = h.start_worker(concurrency=8)
        replies = h.collect_replies(3, timeout=25, settle_extra=1.0)
        assert_exactly_once(replies, ids)
        assert all(r.body["status"] == "succeeded" for r in replies)
        assert b.events("request_completed")


def test_transient_faults_are_retried_to_success() -> None:
    faults = ["status=503,path=/stac/collections/c1/items,method=POST,count=6"]
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"], faults=faults) as h:
        w = h.start_worker(concurrency=4, max_attempts=10, breaker_threshold=50)
        h.wait_ready(w)
        ids = h.send([ingest_request("c1", [stac_item(f"t-{i}", "c1")]) for i in range(2)])
        replies = h.collect_replies(2, timeout=60, settle_extra=1.0)
        assert_exactly_once(replies, ids)
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body for r in replies]
        assert h.geocatalog is not None and h.geocatalog.stats()["faults_injected"]
        assert max(r.body["attempts"] for r in replies) > 1
        assert h.metric(w, "gcw_requests_retried_total") >= 1
        assert w.events("request_rescheduled")
        assert h.queue_stats()["dead_letter"] == 0


@pytest.mark.slow
def test_circuit_breaker_holds_messages_during_an_outage_and_resumes() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"]) as h:
        w = h.start_worker(
            concurrency=4, max_attempts=4, breaker_threshold=2, breaker_open_seconds=1, geocatalog_retry_seconds=1
        )
        h.wait_ready(w)
        assert h.geocatalog is not None
        h.geocatalog.set_faults(["outage=12"])
        n = 20
        ids = h.send([ingest_request("c1", [stac_item(f"o-{i}", "c1")]) for i in range(n)])
        assert wait_until(lambda: h.metric(w, "gcw_circuit_breaker_open") == 1, 20)
        # while open, the backlog stays in the queue instead of burning attempts: through an open period, a
        # failed probe and the re-opening that follows
        assert wait_until(lambda: [e["state"] for e in w.events("circuit_breaker")].count("open") >= 2, 30)
        assert h.queue_stats()["active"] >= n - 8
        assert h.metric(w, "gcw_requests_received_total") < n
        replies = h.collect_replies(n, timeout=90, settle_extra=1.0)
        assert_exactly_once(replies, ids)
        assert all(r.body["status"] == "succeeded" for r in replies), [r.body["status"] for r in replies]
        assert h.queue_stats()["dead_letter"] == 0
        assert h.metric(w, "gcw_circuit_breaker_open") == 0
        states = [e["state"] for e in w.events("circuit_breaker")]
        assert "open" in states and states[-1] == "closed"


def test_health_and_readiness_are_truthful() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, servicebus_process=True) as h:
        w = h.start_worker(concurrency=2)
        h.wait_ready(w)
        # one startup line with the effective configuration, and no secret in it
        (configured,) = w.events("worker_configured")
        assert configured["request_queue"] and configured["reply_queue"] and configured["geocatalog_url"]
        assert configured["servicebus_endpoint"].startswith("sb://") and configured["concurrency"] == 2
        key = h.connection_string.split("SharedAccessKey=")[1].split(";")[0]
        assert key and key not in json.dumps(configured)
        status, body = h.http(w, "/readyz")
        assert status == 200 and json.loads(body)["connected"] is True
        assert h.http(w, "/healthz")[0] == 200
        _, text = h.http(w, "/metrics")
        for name in ("gcw_requests_received_total", "gcw_requests_in_flight", "gcw_lock_renewals_total"):
            assert name in text
        h.kill_servicebus()  # the broker goes away: readiness must say so, liveness must not
        assert wait_until(lambda: h.http(w, "/readyz")[0] == 503, 60), w.output()[-2000:]
        assert json.loads(h.http(w, "/readyz")[1])["connected"] is False
        assert h.http(w, "/healthz")[0] == 200
        assert h.terminate(w, timeout=60) == 0


def test_invalid_configuration_fails_at_start_with_a_clear_message() -> None:
    with Harness() as h:
        w = h.start_worker(geocatalog_url="not-a-url")
        assert w.proc.wait(timeout=30) == 2
        assert wait_until(lambda: "--geocatalog-url (GCW_GEOCATALOG_URL) must be an http(s) URL" in w.output(), 5)
        assert h.servicebus is not None
        key = h.servicebus.connection_string.split("SharedAccessKey=")[1].split(";")[0]
        assert key not in w.output()


def test_lock_lost_cancels_the_work_publishes_nothing_and_redelivery_takes_over() -> None:
    # renewal capped at 1 s with a 2 s lock and a 4 s operation: every delivery loses its lock
    with Harness(lock_duration=2, max_delivery_count=2, operation_seconds=4, collections=["c1"]) as h:
        w = h.start_worker(concurrency=2, max_lock_renewal_seconds=1)
        h.wait_ready(w)
        h.send([ingest_request("c1", [stac_item("lost", "c1")])])
        assert wait_until(lambda: h.queue_stats()["dead_letter"] == 1, 40)
        assert h.collect_replies(1, timeout=3) == []  # nothing published for a message whose lock was lost
        dead = h.dead_letters()
        assert dead[0].dead_letter_reason == "MaxDeliveryCountExceeded"
        assert h.metric(w, "gcw_locks_lost_total") >= 2
        assert len(w.events("lock_lost")) >= 2
        assert wait_until(lambda: len(w.events("result_discarded")) >= 1, 10)


def test_sigint_stops_like_sigterm() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1) as h:
        w = h.start_worker(concurrency=2)
        h.wait_ready(w)
        w.proc.send_signal(2)
        assert w.proc.wait(timeout=30) == 0
        assert wait_until(lambda: bool(w.events("worker_stopped")), 5)
        assert w.events("signal_received")[0]["signal"] == "SIGINT"
        assert w.events("worker_stopped")[0]["exit_status"] == 0


@pytest.mark.slow
def test_sessions_spread_across_workers_in_order_with_session_replies() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"], sessions=True) as h:
        workers = [h.start_worker(concurrency=8, max_sessions=2, session_idle_seconds=1) for _ in range(2)]
        for w in workers:
            h.wait_ready(w)
        sessions = [f"s{k}" for k in range(4)]
        bodies, sids, reply_sids = [], [], []
        for n in range(5):
            for sid in sessions:
                bodies.append(ingest_request("c1", [stac_item(f"{sid}-{n}", "c1")]))
                sids.append(sid)
                reply_sids.append(f"r-{sid}")
        ids = h.send(bodies, session_ids=sids, reply_to_session_ids=reply_sids)
        replies = h.collect_replies(len(ids), timeout=90, settle_extra=1.0)
        assert_exactly_once(replies, ids)
        assert all(r.body["status"] == "succeeded" for r in replies)
        for r in replies:
            assert r.session_id == "r-" + r.body["items"][0]["id"].split("-")[0]
        # in order within each session: completion order of its requests follows the send order
        completed = sorted((e["timestamp"], e["message_id"]) for w in workers for e in w.events("request_completed"))
        position = {mid: i for i, mid in enumerate(ids)}
        for sid in sessions:
            mine = [position[mid] for _, mid in completed if sids[position[mid]] == sid]
            assert mine == sorted(mine), (sid, mine)
        assert all(w.events("session_accepted") for w in workers), "one worker held every session"


def test_a_request_whose_reply_cannot_be_sent_is_never_completed() -> None:
    # reply_to names an allowed entity that does not exist: the reply fails, the request is abandoned (never
    # completed without its reply) and Service Bus dead-letters it after max_delivery_count deliveries
    with Harness(lock_duration=5, max_delivery_count=2, operation_seconds=0.1, collections=["c1"]) as h:
        w = h.start_worker(concurrency=2, allowed_reply_to=["ghost"])
        h.wait_ready(w)
        with h.client.get_queue_sender("requests") as sender:
            from azure.servicebus import ServiceBusMessage

            body = json.dumps(ingest_request("c1", [stac_item("g1", "c1")])).encode()
            sender.send_messages(ServiceBusMessage(body, message_id="to-ghost", reply_to="ghost"))
        assert wait_until(lambda: h.queue_stats()["dead_letter"] == 1, 60), w.output()[-3000:]
        assert h.dead_letters()[0].dead_letter_reason == "MaxDeliveryCountExceeded"
        assert h.queue_stats()["completed"] == 0
        # both deliveries' failed replies and abandons are logged before the broker dead-letters (read from stdout)
        assert wait_until(lambda: len(w.events("message_abandoned")) >= 2, 10), w.output()[-3000:]
        assert len(w.events("reply_failed")) >= 2
        assert h.collect_replies(1, timeout=2) == []
