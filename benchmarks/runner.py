"""Run one scenario: start the emulators and the worker processes (or the baseline), send, collect, measure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import structlog
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from gcw_emulators.cluster import DEMO_WORKER_FLAGS, REPLY_QUEUE, REQUEST_QUEUE, Cluster
from gcw_emulators.demo.traffic import Outgoing, ResultCollector, send_requests

from benchmarks import measure
from benchmarks.collector import StreamingCollector
from benchmarks.scenarios import Scenario
from benchmarks.workload import COLLECTIONS, PRIVATE_STORAGE, ingest_requests

log = structlog.get_logger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class ScenarioResult:
    scenario: Scenario
    figures: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def _send_paced(client: ServiceBusClient, messages: list[Outgoing], rate: float) -> dict[str, float]:
    """Send at ``rate`` messages/s in small batches (every 20 ms); returns message_id → monotonic send time."""
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    i = 0
    with client.get_queue_sender(REQUEST_QUEUE) as sender:
        per_batch = _batch_size(messages)
        while i < len(messages):
            due = min(len(messages), int((time.monotonic() - start) * rate) + 1, i + per_batch)
            if due > i:
                batch = messages[i:due]
                now = time.monotonic()
                sender.send_messages(
                    [ServiceBusMessage(m.body, message_id=m.message_id, content_type="application/json") for m in batch]
                )
                for m in batch:
                    sent_at[m.message_id] = now
                i = due
            else:
                time.sleep(0.02)  # pacing: the offered rate is the point
    return sent_at


def _batch_size(messages: list[Outgoing]) -> int:
    """Messages per send call: the SDK caps a batch at 256 KiB."""
    largest = max((len(m.body) for m in messages), default=1)
    return max(1, min(50, 200_000 // largest))


def _epoch(value: object) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _phases(got: dict, sent_at: dict[str, float], wall: float) -> dict[str, float | None]:
    """Where the latency goes, from the result's own received_at/completed_at (the worker's clock, same box):
    queued = send → worker received it, processing = received → completed, publish = completed → result
    enqueued at the broker. p50 and p99 of each."""
    queued, processing, publish = [], [], []
    for mid, c in got.items():
        rec, done = _epoch(c.result.get("received_at")), _epoch(c.result.get("completed_at"))
        if rec is None or done is None:
            continue
        queued.append(rec - (sent_at[mid] + wall))
        processing.append(done - rec)
        if c.enqueued_at is not None:
            publish.append(c.enqueued_at - done)
    out: dict[str, float | None] = {}
    for name, values in (("queued", queued), ("processing", processing), ("publish", publish)):
        out[f"{name}_p50"] = measure.percentile(values, 50)
        out[f"{name}_p99"] = measure.percentile(values, 99)
    return out


def _max_in_flight(got: dict) -> int:
    """The most requests between ``received_at`` and ``completed_at`` at once, over every worker process."""
    events: list[tuple[float, int]] = []
    for c in got.values():
        rec, done = _epoch(c.result.get("received_at")), _epoch(c.result.get("completed_at"))
        if rec is not None and done is not None:
            events += [(rec, 1), (done, -1)]
    peak = now = 0
    for _, step in sorted(events):  # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


def _steady_throughput(times: list[float]) -> float | None:
    """Results/s between the 10th and 90th percentile of receive times (ramp-up and tail excluded)."""
    if len(times) < 50:
        return None
    times = sorted(times)
    lo, hi = int(0.1 * len(times)), int(0.9 * len(times)) - 1
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else None


class Run:
    """Runs scenarios in order; later ones may refer to earlier results (half rate, ratios)."""

    def __init__(
        self,
        *,
        profile_dir: Path | None = None,
        profile_gil: bool = False,
        profile_idle: bool = False,
        logs_dir: Path | None = None,
    ) -> None:
        self.results: dict[str, ScenarioResult] = {}
        self.profile_dir = profile_dir
        self.profile_gil = profile_gil
        self.profile_idle = profile_idle
        self.logs_dir = logs_dir

    def rate_for(self, s: Scenario) -> float | None:
        if s.rate is None:
            return None
        if isinstance(s.rate, str) and s.rate.startswith("half:"):
            ref = self.results.get(s.rate[5:])
            peak = ref.figures.get("throughput") if ref else None
            if not peak:
                raise RuntimeError(f"{s.name}: needs the peak of scenario {s.rate[5:]!r}, run it first")
            return peak / 2.0
        return float(s.rate)

    def run(self, s: Scenario) -> ScenarioResult:
        try:
            result = self._run(s)
        except Exception as exc:  # one failed scenario must not lose the others' figures
            log.exception("scenario_failed", scenario=s.name)
            result = ScenarioResult(s, error=f"{type(exc).__name__}: {exc}")
        self._derive(result)
        self.results[s.name] = result
        return result

    # ------------------------------------------------------------------------------------------------------
    def _run(self, s: Scenario) -> ScenarioResult:
        rate = self.rate_for(s)
        n = s.requests if rate is None else max(10, int(rate * s.paced_seconds))
        cluster = Cluster(
            workers=0 if s.baseline else s.processes,
            lock_duration=60.0,
            # the broker in a process of its own: in this one it shared the GIL with the GeoCatalog emulator and
            # the collector, and under load it waited for it (docs/benchmarks.md, change 15)
            servicebus_process=True,
            operation_seconds=s.emulator_durations,
            private_hosts=[PRIVATE_STORAGE],
            collections=list(COLLECTIONS),
            request_budget=s.emulator_budget,
            seed=7,
            worker_flags={
                **DEMO_WORKER_FLAGS,
                "concurrency": s.concurrency,
                "geocatalog_budget": s.budget_share or None,
                "log_level": "WARNING",
            },
            sas_api=True,
            extra_args=s.worker_args,
            stop_timeout=15,
            log_dir=self.logs_dir / s.name if self.logs_dir is not None else None,
        )
        messages = ingest_requests(s.name.replace("smoke-", "s")[:24], n, s.items_per_request)
        me = psutil.Process()
        with cluster:
            assert cluster.geocatalog is not None
            client = cluster.client
            with StreamingCollector(client, REPLY_QUEUE) as collector:
                if not s.baseline:
                    self._warm_up(client, collector, s)
                baselines = self._start_baselines(cluster, s, n) if s.baseline else []
                pids = [p.pid for p in baselines] if baselines else cluster.worker_pids()
                stats0 = cluster.geocatalog.stats()
                procs0 = measure.sample(pids)
                load0 = os.getloadavg()[0]
                harness0 = sum(me.cpu_times()[:2])
                separate = self._separate_processes(cluster)
                cpu0 = measure.cpu_sample([*pids, *separate.values()])
                profilers = self._start_profilers(s, pids)
                t0 = time.monotonic()
                if rate is None:
                    sent_at = send_requests(client, REQUEST_QUEUE, messages, batch_size=_batch_size(messages))
                else:
                    sent_at = _send_paced(client, messages, rate)
                sequential = s.baseline == "quickstart"
                timeout = 120.0 + n * (s.baseline_poll_seconds + s.operation_seconds if sequential else 0.05)
                collector.wait_for(sent_at, timeout=timeout)
                procs1 = measure.sample(pids)
                cpu1 = measure.cpu_sample([*pids, *separate.values()])
                self._stop_profilers(profilers)
                harness1 = sum(me.cpu_times()[:2])
                load1 = os.getloadavg()[0]
                stats1 = cluster.geocatalog.stats()
                collected = collector.snapshot()
                for proc in baselines:
                    self._stop_baseline(proc)
        result = self._figures(s, n, rate, t0, sent_at, collected, procs0, procs1, stats0, stats1, harness1 - harness0)
        result.figures["load_average_1m"] = [load0, load1]
        result.figures["cpu_s_by_part"] = measure.cpu_by_part(cpu0, cpu1, measured=pids, separate=separate)
        return result

    @staticmethod
    def _separate_processes(cluster: Cluster) -> dict[str, int]:
        """The emulators that run in a process of their own (name → pid), as ``measure.cpu_by_part`` names them."""
        if cluster.servicebus_proc is not None:
            return {"servicebus_emulator": cluster.servicebus_proc.pid}
        return {}

    def _warm_up(self, client: ServiceBusClient, collector: ResultCollector, s: Scenario) -> None:
        """A few requests per process so that links, pools and SAS tokens exist before measuring."""
        warm = ingest_requests(f"warm{s.name[:16]}", 4 * s.processes, 1)
        send_requests(client, REQUEST_QUEUE, warm)
        if not collector.wait_for([m.message_id for m in warm], timeout=90):
            raise RuntimeError(f"{s.name}: workers did not answer the warm-up requests within 90 s")

    def _start_profilers(self, s: Scenario, pids: list[int]) -> list[subprocess.Popen[bytes]]:
        """py-spy (sampling, every thread, no GIL needed; only the GIL holder with ``--profile-gil``; waiting
        threads too with ``--profile-idle``) on each measured process, collapsed-stack output."""
        if self.profile_dir is None:
            return []
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        procs = []
        for i, pid in enumerate(pids):
            out = self.profile_dir / f"{s.name}-{i}.txt"
            cmd = [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
                *(["--gil"] if self.profile_gil else []),
                *(["--idle"] if self.profile_idle else []),
            ]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # attached before the load starts
        return procs

    @staticmethod
    def _stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def _start_baselines(self, cluster: Cluster, s: Scenario, n: int) -> list[subprocess.Popen[bytes]]:
        """The quickstart loop (one process), or ``s.processes`` copies of the asyncio peer competing for the queue."""
        assert cluster.geocatalog is not None
        module, copies, extra = "benchmarks.baseline", 1, []
        if s.baseline == "peer":
            module, copies, extra = "benchmarks.peer", s.processes, ["--concurrency", str(s.concurrency)]
        cmd = [
            sys.executable,
            "-m",
            module,
            "--connection-string",
            cluster.connection_string,
            "--queue",
            REQUEST_QUEUE,
            "--reply-queue",
            REPLY_QUEUE,
            "--geocatalog-url",
            cluster.geocatalog.url,
            "--token",
            cluster.geocatalog.token,
            "--sas-api-url",
            cluster.geocatalog.url,
            "--poll-seconds",
            str(s.baseline_poll_seconds),
            "--count",
            str(n),
            "--hold",
            *extra,
        ]
        return [
            subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) for _ in range(copies)
        ]

    @staticmethod
    def _stop_baseline(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        proc.stdin.close()  # --hold: the baseline exits when its stdin closes
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    # ------------------------------------------------------------------------------------------------------
    def _figures(self, s, n, rate, t0, sent_at, collected, procs0, procs1, stats0, stats1, harness_cpu):  # type: ignore[no-untyped-def]
        got = {mid: collected[mid] for mid in sent_at if mid in collected}
        latencies = [c.received_at - sent_at[mid] for mid, c in got.items()]
        wall = time.time() - time.monotonic()  # monotonic → epoch offset (same clock as the in-process broker)
        published = [c.enqueued_at - (sent_at[mid] + wall) for mid, c in got.items() if c.enqueued_at is not None]
        phases = _phases(got, sent_at, wall)
        times = [c.received_at for c in got.values()]
        statuses: dict[str, int] = {}
        for c in got.values():
            statuses[str(c.result.get("status"))] = statuses.get(str(c.result.get("status")), 0) + 1
        elapsed = (max(times) - t0) if times else None
        overall = len(got) / elapsed if elapsed else None
        steady = _steady_throughput(times) if rate is None else overall
        items = n * s.items_per_request
        calls = measure.calls_by_kind(measure.stats_delta(stats0, stats1))
        gc_calls = sum(calls[k] for k in ("post", "put", "delete", "poll_get", "item_get", "other"))
        cpu = sum(procs1[p].cpu - procs0[p].cpu for p in procs1 if p in procs0)
        processes = [
            {
                "pid": p,
                "cpu_seconds": round(procs1[p].cpu - procs0[p].cpu, 3),
                "peak_rss_mb": round(procs1[p].peak_rss_mb, 1),
            }
            for p in procs1
            if p in procs0
        ]
        op_seconds = calls["accepted_writes"] * s.operation_seconds
        f: dict[str, Any] = {
            "requests": n,
            "items": items,
            "results": len(got),
            "succeeded": statuses.get("succeeded", 0),
            "failed": n - statuses.get("succeeded", 0),
            "statuses": statuses,
            "offered_rate": rate,
            "elapsed_s": elapsed,
            "throughput": steady if steady is not None else overall,
            "succeeded_per_s": statuses.get("succeeded", 0) / elapsed if elapsed else None,
            "throughput_overall": overall,
            "latency_p50": measure.percentile(latencies, 50),
            "latency_p95": measure.percentile(latencies, 95),
            "latency_p99": measure.percentile(latencies, 99),
            "latency_max": max(latencies) if latencies else None,
            "published_p50": measure.percentile(published, 50),
            "published_p95": measure.percentile(published, 95),
            "published_p99": measure.percentile(published, 99),
            **phases,
            "cpu_s_total": cpu,
            "cpu_ms_per_request": cpu / len(got) * 1000 if got else None,
            "peak_rss_mb_max": max((p["peak_rss_mb"] for p in processes), default=None),
            "harness_cpu_s": harness_cpu,
            "geocatalog_calls": gc_calls,
            "calls_per_item": gc_calls / items if items else None,
            "calls_per_item_by_kind": {k: calls[k] / items for k in ("post", "put", "delete", "poll_get", "item_get")},
            "sas_calls": calls["sas"],
            "throttled_429": calls["throttled"],
            "operations": calls["accepted_writes"],
            "items_per_operation": items / calls["accepted_writes"] if calls["accepted_writes"] else None,
            "poll_gets_per_op_second": calls["poll_get"] / op_seconds if op_seconds > 0 else None,
            "in_flight_max": _max_in_flight(got),
            "in_flight_per_process_max": _max_in_flight(got) / max(1, s.processes),
        }
        return ScenarioResult(s, figures=f, processes=processes, calls=calls)

    def _derive(self, r: ScenarioResult) -> None:
        s, f = r.scenario, r.figures
        if not f:
            return
        if s.compare_to and s.compare_to in self.results:
            ref = self.results[s.compare_to].figures.get("throughput")
            f["scale_ratio"] = f["throughput"] / ref if ref and f.get("throughput") else None
        if s.baseline_name and s.baseline_name in self.results:
            b = self.results[s.baseline_name].figures
            bt = b.get("throughput")
            f["vs_baseline_throughput"] = f["throughput"] / bt if bt and f.get("throughput") else None
            bl = b.get("latency_p50")
            f["vs_baseline_latency_p50"] = f["latency_p50"] / bl if bl and f.get("latency_p50") else None
            bc = b.get("calls_per_item")
            f["vs_baseline_calls_per_item"] = f["calls_per_item"] / bc if bc and f.get("calls_per_item") else None
        if s.peer_name and s.peer_name in self.results:
            peer = self.results[s.peer_name].figures
            for key in ("throughput", "succeeded_per_s", "cpu_ms_per_request", "calls_per_item", "latency_p50"):
                mine, theirs = f.get(key), peer.get(key)
                f[f"vs_peer_{key}"] = mine / theirs if mine and theirs else None
        f["targets"] = [
            {
                "label": t.label,
                "figure": t.figure,
                "op": t.op,
                "threshold": t.threshold,
                "value": f.get(t.figure),
                "met": t.met(f.get(t.figure)),
            }
            for t in s.targets
        ]
