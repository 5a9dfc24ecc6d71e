"""The benchmark runner works end to end and produces every figure (``python -m benchmarks run --smoke``).

Checks structure and consistency, never timing: speed goals are read from the printed figures (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import measure, report, scenarios

REPO = Path(__file__).resolve().parents[2]

FIGURES = (
    "throughput",
    "throughput_overall",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "cpu_ms_per_request",
    "peak_rss_mb_max",
    "calls_per_item",
    "calls_per_item_by_kind",
    "poll_gets_per_op_second",
    "throttled_429",
    "operations",
    "items_per_operation",
)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert measure.percentile(values, 50) == 50.0
    assert measure.percentile(values, 99) == 99.0
    assert measure.percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert measure.percentile([], 50) is None


def test_calls_by_kind_counts_routes_and_429s() -> None:
    before = {"requests": {"POST /stac/collections/{collectionId}/items": {"202": 2}}}
    after = {
        "requests": {
            "POST /stac/collections/{collectionId}/items": {"202": 5, "429": 1},
            "GET /inma/operations/{operationId}": {"200": 7},
            "GET /api/sas/v1/token/{account}/{container}": {"200": 1},
            "GET /_emulator/stats": {"200": 3},
        }
    }
    calls = measure.calls_by_kind(measure.stats_delta(before, after))
    assert calls["post"] == 4 and calls["poll_get"] == 7 and calls["sas"] == 1
    assert calls["throttled"] == 1 and calls["accepted_writes"] == 3 and calls["other"] == 0


def test_peak_rss_and_cpu_come_from_the_os() -> None:
    import os

    rss = measure.peak_rss_mb(os.getpid())
    cpu = measure.cpu_seconds(os.getpid())
    assert rss is not None and rss > 1.0
    assert cpu is not None and cpu > 0.0


def test_cpu_by_part_charges_each_thread_to_its_role() -> None:
    import threading
    import time

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    before = measure.cpu_sample()
    # a thread named as the GeoCatalog emulator's event loop, and one the runner does not know
    for name in ("geocatalog-emulator", "someone-else"):
        t = threading.Thread(target=spin, args=(0.2,), name=name)
        t.start()
        t.join()
    spun, stay = threading.Event(), threading.Event()
    collector = threading.Thread(target=lambda: (spin(0.2), spun.set(), stay.wait(10)), name="result-collector")
    collector.start()
    assert spun.wait(10)
    after = measure.cpu_sample()  # while the collector's thread is alive
    stay.set()
    collector.join()
    parts = measure.cpu_by_part(before, after, measured=[], separate={})
    assert parts["collector"] >= 0.19
    # the two threads ended before the sample: their CPU is the process's, charged to "runner_other"
    assert parts["runner_other"] >= 0.39 and parts["geocatalog_emulator"] < 0.05
    assert parts["available"] > 0 and parts["workers"] == 0.0
    assert set(parts) >= {*measure.RUNNER_ROLES, "workers", "other_jobs", "available", "steal"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets (issue 9):" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["python"]
    by_name = {s["name"]: s for s in doc["scenarios"]}
    assert set(by_name) == {s.name for s in scenarios.smoke()}
    for s in doc["scenarios"]:
        f = s["figures"]
        assert s["error"] is None, s["error"]
        assert f["results"] == f["requests"] == f["succeeded"], (s["name"], f["statuses"])
        for key in FIGURES:
            assert key in f, (s["name"], key)
        assert f["throughput"] > 0 and 0 < f["latency_p50"] <= f["latency_p95"] <= f["latency_p99"]
        assert f["cpu_ms_per_request"] > 0 and f["peak_rss_mb_max"] > 10
        assert f["calls_per_item"] > 0 and f["operations"] >= 1 and f["poll_gets_per_op_second"] > 0
        assert len(s["processes"]) == max(1, s["settings"]["processes"])
        parts = f["cpu_s_by_part"]
        # two readings of the same processes' CPU (the /proc samples and the workers' own totals), each to a
        # 10 ms clock tick: they may differ by up to a tick each way
        assert parts["workers"] == pytest.approx(f["cpu_s_total"], abs=0.021)
        assert parts["available"] > 0 and all(v >= 0 for v in parts.values()), parts
    # CPU clock ticks are 10 ms: a tiny scenario may show none for a part, the whole run does not
    for parts in (("servicebus_emulator",), ("geocatalog_emulator",), ("collector", "load_generator")):
        assert sum(s["figures"]["cpu_s_by_part"][p] for s in doc["scenarios"] for p in parts) > 0, parts
        for t in f["targets"]:
            assert t["met"] in (True, False) and t["value"] is not None, (s["name"], t)
    assert by_name["smoke-op02-1item-p1"]["figures"]["vs_baseline_throughput"] > 0
    assert by_name["smoke-budget-50items-p2"]["figures"]["scale_ratio"] > 0
    assert by_name["smoke-budget-50items-p2"]["settings"]["operation_seconds"] == "uniform:0.1,0.3"
    half = by_name["smoke-op02-half"]["figures"]
    assert half["offered_rate"] == pytest.approx(by_name["smoke-op02-1item-p1"]["figures"]["throughput"] / 2)
    # the baseline is the quickstart: one POST per request and at least one poll GET per operation
    table = report.markdown(doc)
    assert all(f"| {name} |" in table for name in by_name) and "error" not in table
    assert all(f"| {name} |" in report.cpu_markdown(doc) for name in by_name)
    base = by_name["smoke-baseline"]
    assert base["calls"]["post"] == base["figures"]["requests"]
    assert base["calls"]["poll_get"] >= base["calls"]["post"]
    # the asyncio peer: one POST per request too, its own process measured, and the worker's ratios against it
    peer = by_name["smoke-peer"]
    assert peer["settings"]["baseline"] == "peer" and base["settings"]["baseline"] == "quickstart"
    assert peer["calls"]["post"] == peer["figures"]["requests"]
    mine = by_name["smoke-op02-1item-p1"]["figures"]
    assert mine["vs_peer_throughput"] == pytest.approx(mine["throughput"] / peer["figures"]["throughput"])
    assert mine["vs_peer_cpu_ms_per_request"] == pytest.approx(
        mine["cpu_ms_per_request"] / peer["figures"]["cpu_ms_per_request"]
    )


# -- the performance fixes the benchmarks led to (pure logic, no network) ---------------------------------------


def _item(i: int) -> dict:
    return {"type": "Feature", "id": f"b-{i}", "collection": "c", "properties": {"datetime": "2024-01-01T00:00:00Z"}}


def test_rate_limiter_delay_estimates_without_reserving() -> None:
    from worker.adapters.ratelimit import RateLimiter

    now = [100.0]
    limiter = RateLimiter(10.0, burst=1.0, clock=lambda: now[0])
    assert limiter.delay() == 0.0  # one token in the bucket
    assert limiter.delay() == 0.0  # asking reserves nothing
    assert limiter.reserve() == 0.0
    assert limiter.delay() == pytest.approx(0.1)  # the next token comes in 1/rate
    assert limiter.reserve() == pytest.approx(0.1)
    assert limiter.delay() == pytest.approx(0.2)  # behind the queued caller


def test_batch_stays_open_while_the_budget_is_backed_up() -> None:
    import threading

    from tests.support.fakes import FakeCatalog
    from worker.processing.batching import Batcher, BatchSettings

    class Limited(FakeCatalog):
        class rate_limiter:  # quacks like RateLimiter.delay() and .rate
            rate = 1000.0  # no write-slot wait of its own: the 0.4 s is the limiter's

            @staticmethod
            def delay() -> float:
                return 0.4

    fake = Limited()
    with Batcher(fake, BatchSettings(linger=0.01, budget_linger_max=0.4)) as batcher:
        results = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(batcher.submit("c", [_item(i)], request_id=f"r{i}")))
            for i in range(3)
        ]
        for t in threads:  # 100 ms apart: far beyond the 10 ms linger, inside the budget wait
            t.start()
            threading.Event().wait(0.1)
        for t in threads:
            t.join(10)
    assert all(r.all_succeeded for r in results) and len(results) == 3
    assert fake.post_sizes == [3]


def test_blocked_submit_is_woken_by_its_cancel_event() -> None:
    import threading
    import time

    from tests.support.fakes import FakeCatalog
    from worker.domain.errors import Cancelled
    from worker.processing.batching import Batcher, BatchSettings

    class Slow(FakeCatalog):
        def create_items(self, collection, items, *, cancel=None):  # type: ignore[no-untyped-def]
            time.sleep(1.0)  # a slow POST: the caller is blocked in submit() meanwhile
            return super().create_items(collection, items, cancel=cancel)

    cancel = threading.Event()
    with Batcher(Slow(), BatchSettings(linger=0.0)) as batcher:
        threading.Timer(0.2, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(Cancelled):
            batcher.submit("c", [_item(1)], cancel=cancel, request_id="r1")
        assert time.monotonic() - started < 0.8  # woken by the watcher, not by the slow operation
