"""Figures from the operating system and the emulators: CPU time, peak RSS, latency percentiles, API calls."""

from __future__ import annotations

import math
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
