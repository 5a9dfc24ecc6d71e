"""Figures from the operating system and the emulators: CPU time, peak RSS, latency percentiles, API calls."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the kernel's peak resident set) of a live process, in MiB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (psutil cpu_times, children excluded)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


@dataclass
class ProcSample:
    pid: int
    cpu: float
    peak_rss_mb: float


def sample(pids: Iterable[int]) -> dict[int, ProcSample]:
    out: dict[int, ProcSample] = {}
    for pid in pids:
        cpu, rss = cpu_seconds(pid), peak_rss_mb(pid)
        if cpu is not None and rss is not None:
            out[pid] = ProcSample(pid, cpu, rss)
    return out


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per route and status, the emulator's request counts between two ``/_emulator/stats`` snapshots."""
    out: dict[str, dict[str, int]] = {}
    old = before.get("requests", {})
    for route, statuses in after.get("requests", {}).items():
        for status, count in statuses.items():
            diff = count - old.get(route, {}).get(status, 0)
            if diff:
                out.setdefault(route, {})[str(status)] = diff
    return out


# Route keys of the GeoCatalog emulator's stats → the kinds the benchmarks report.
CALL_KINDS = {
    "POST /stac/collections/{collectionId}/items": "post",
    "PUT /stac/collections/{collectionId}/items/{itemId}": "put",
    "PATCH /stac/collections/{collectionId}/items/{itemId}": "put",
    "DELETE /stac/collections/{collectionId}/items/{itemId}": "delete",
    "GET /inma/operations/{operationId}": "poll_get",
    "GET /inma/operations": "poll_get",  # the operation watcher's list read (worker/adapters/geocatalog/watcher.py)
    "GET /stac/collections/{collectionId}/items/{itemId}": "item_get",
}


def calls_by_kind(delta: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """GeoCatalog calls by kind (post, put, delete, poll_get, item_get, sas, other) plus ``throttled`` (429s)
    and ``accepted_writes`` (202 answers to POST/PUT/PATCH/DELETE, i.e. operations created)."""
    kinds = {"post": 0, "put": 0, "delete": 0, "poll_get": 0, "item_get": 0, "sas": 0, "other": 0}
    throttled = accepted = 0
    for route, statuses in delta.items():
        n = sum(statuses.values())
        if route.startswith("GET /_emulator") or "/_emulator" in route:
            continue
        kind = CALL_KINDS.get(route)
        if kind is None:
            kind = "sas" if "/sas/" in route else "other"
        kinds[kind] += n
        throttled += statuses.get("429", 0)
        if kind in ("post", "put", "delete"):
            accepted += statuses.get("202", 0)
    return {**kinds, "throttled": throttled, "accepted_writes": accepted}


# Threads of the runner's own process → the part of the harness they are (their ``threading`` names: the
# emulators' event loops in ``gcw_emulators``, the collector in ``gcw_emulators.demo.traffic``); the main thread
# sends the requests and then waits for the results; anything else (the SDK's, the readers of the workers' output)
# is ``runner_other``, and threads that ended within the window show only in the process's total.
THREAD_ROLES = (
    ("servicebus-", "servicebus_emulator"),
    ("geocatalog-emulator", "geocatalog_emulator"),
    ("result-collector", "collector"),
    ("MainThread", "load_generator"),
)
RUNNER_ROLES = ("servicebus_emulator", "geocatalog_emulator", "collector", "load_generator", "runner_other")


@dataclass
class CpuSample:
    """CPU seconds (user + system) so far: of this process by role of its threads, of whole processes by pid,
    and of the whole machine (busy and total, all CPUs: what the other jobs on the box used is in it)."""

    roles: dict[str, float]
    process: float
    pids: dict[int, float]
    machine_busy: float
    machine_total: float
    steal: float


def _role(name: str) -> str:
    for prefix, role in THREAD_ROLES:
        if name.startswith(prefix):
            return role
    return "runner_other"


def cpu_sample(pids: Iterable[int] = ()) -> CpuSample:
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    me = psutil.Process()
    roles = dict.fromkeys(RUNNER_ROLES, 0.0)
    for t in me.threads():
        roles[_role(names.get(t.id, ""))] += t.user_time + t.system_time
    times = me.cpu_times()
    m = psutil.cpu_times()  # Linux fields; user and nice include guest time, steal is the hypervisor's
    busy = m.user + m.nice + m.system + m.irq + m.softirq
    return CpuSample(
        roles=roles,
        process=times.user + times.system,
        pids={pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None},
        machine_busy=busy,
        machine_total=busy + m.idle + m.iowait,
        steal=m.steal,
    )


def cpu_by_part(
    before: CpuSample, after: CpuSample, *, measured: Iterable[int], separate: Mapping[str, int]
) -> dict[str, float]:
    """Where the machine's CPU went between two samples, in CPU seconds: ``workers`` (the ``measured``
    processes), each process of ``separate`` (name → pid: an emulator in its own process), the runner's
    threads by role, and ``other_jobs`` (everything else on the box: other users' processes, the kernel's
    work not charged to a process); ``available`` is the wall time x CPUs less ``steal`` (the hypervisor's)."""

    def delta(pid: int) -> float:
        return after.pids.get(pid, 0.0) - before.pids.get(pid, 0.0)

    out: dict[str, float] = {"workers": sum(delta(p) for p in measured)}
    for name, pid in separate.items():
        out[name] = delta(pid)
    for role in RUNNER_ROLES:
        out[role] = out.get(role, 0.0) + after.roles[role] - before.roles[role]
    threads = sum(after.roles.values()) - sum(before.roles.values())
    out["runner_other"] += max(0.0, (after.process - before.process) - threads)  # threads gone since
    busy = after.machine_busy - before.machine_busy
    out["other_jobs"] = max(0.0, busy - sum(out.values()))
    out["available"] = after.machine_total - before.machine_total
    out["steal"] = after.steal - before.steal
    return {k: round(v, 3) for k, v in out.items()}
