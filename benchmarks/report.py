"""The table and the JSON document of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks.runner import ScenarioResult


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


COLUMNS = [
    ("scenario", None),
    ("req", "requests"),
    ("ok", "succeeded"),
    ("req/s", "throughput"),
    ("p50 s", "latency_p50"),
    ("p95 s", "latency_p95"),
    ("p99 s", "latency_p99"),
    ("pub p99", "published_p99"),
    ("CPU ms/req", "cpu_ms_per_request"),
    ("RSS MB", "peak_rss_mb_max"),
    ("in flight", "in_flight_max"),
    ("calls/item", "calls_per_item"),
    ("POST", "post"),
    ("PUT", "put"),
    ("DEL", "delete"),
    ("poll GET", "poll_get"),
    ("item GET", "item_get"),
    ("429", "throttled_429"),
    ("polls/op-s", "poll_gets_per_op_second"),
    ("ratio", "ratio"),
    ("x peer", "vs_peer_throughput"),
    ("CPU x peer", "vs_peer_cpu_ms_per_request"),
]


def table(results: list[ScenarioResult]) -> str:
    rows = []
    for r in results:
        f = r.figures
        if r.error or not f:
            rows.append([r.scenario.name, "ERROR"] + [""] * (len(COLUMNS) - 2))
            continue
        ratio = f.get("vs_baseline_throughput") or f.get("scale_ratio")
        row = [r.scenario.name]
        for _, key in COLUMNS[1:]:
            if key == "ratio":
                tag = "x base" if f.get("vs_baseline_throughput") else ("x ref" if f.get("scale_ratio") else "")
                row.append(f"{_fmt(ratio, 1)}{tag}" if ratio else "-")
            elif key in ("post", "put", "delete", "poll_get", "item_get"):
                row.append(_fmt(r.calls.get(key)))
            elif key == "in_flight_max":
                row.append(_fmt(f.get(key)))
            elif key.startswith("vs_peer_"):
                row.append(_fmt(f.get(key), 2) if f.get(key) else "-")
            elif key in ("calls_per_item", "poll_gets_per_op_second"):
                row.append(_fmt(f.get(key), 3))
            else:
                row.append(_fmt(f.get(key), 1 if key in ("throughput", "peak_rss_mb_max") else 2))
        rows.append(row)
    header = [c for c, _ in COLUMNS]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths, strict=False)))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{r.scenario.name}: {r.error}" for r in results if r.error]
    return "\n".join(lines)


def targets(results: list[ScenarioResult]) -> str:
    lines = []
    for r in results:
        for t in r.figures.get("targets", []):
            mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            lines.append(
                f"  [{mark:>7}] {r.scenario.name}: {t['label']}: {t['figure']} = {_fmt(t['value'], 3)} "
                f"(target {t['op']} {t['threshold']:g})"
            )
    return "\n".join(lines)


def document(results: list[ScenarioResult], *, smoke: bool) -> dict[str, Any]:
    return {
        "machine": machine(),
        "smoke": smoke,
        "scenarios": [
            {
                "name": r.scenario.name,
                "description": r.scenario.description,
                "settings": {
                    "operation_seconds": r.scenario.emulator_durations,
                    "items_per_request": r.scenario.items_per_request,
                    "concurrency": r.scenario.concurrency,
                    "processes": 0 if r.scenario.baseline else r.scenario.processes,
                    "baseline": r.scenario.baseline,
                    "emulator_budget": r.scenario.emulator_budget,
                    "geocatalog_budget_per_process": r.scenario.budget_share,
                },
                "error": r.error,
                "figures": r.figures,
                "calls": r.calls,
                "processes": r.processes,
            }
            for r in results
        ],
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def markdown(doc: dict[str, Any]) -> str:
    """The figures table of docs/benchmarks.md, from a JSON document."""
    head = (
        "| scenario | req | req/s | p50 s | p99 s | proc p99 s | CPU ms/req | RSS MB | in flight | calls/item | POST "
        "| poll GET | 429 | polls/op-s | ratio | x peer | CPU x peer |"
    )
    lines = [head, "|" + "---|" * 17]
    for s in doc["scenarios"]:
        f, c = s["figures"], s["calls"]
        if s["error"] or not f:
            lines.append(f"| {s['name']} | error: {s['error']} |" + " |" * 15)
            continue
        ratio = ""
        if f.get("vs_baseline_throughput"):
            ratio = f"{f['vs_baseline_throughput']:,.0f}x base"
        elif f.get("scale_ratio"):
            ratio = f"{f['scale_ratio']:.1f}x"
        cells = [
            s["name"],
            f["requests"],
            _fmt(f["throughput"], 1),
            _fmt(f["latency_p50"]),
            _fmt(f["latency_p99"]),
            _fmt(f.get("processing_p99")),
            _fmt(f["cpu_ms_per_request"]),
            _fmt(f["peak_rss_mb_max"], 1),
            f.get("in_flight_max", "-"),
            _fmt(f["calls_per_item"], 3),
            c.get("post"),
            c.get("poll_get"),
            c.get("throttled"),
            _fmt(f["poll_gets_per_op_second"]),
            ratio or "-",
            _fmt(f.get("vs_peer_throughput")) if f.get("vs_peer_throughput") else "-",
            _fmt(f.get("vs_peer_cpu_ms_per_request")) if f.get("vs_peer_cpu_ms_per_request") else "-",
        ]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines)


CPU_PARTS = (
    ("workers", "workers"),
    ("servicebus_emulator", "SB broker"),
    ("geocatalog_emulator", "GeoCatalog"),
    ("collector", "collector"),
    ("load_generator", "producer"),
    ("runner_other", "runner other"),
    ("other_jobs", "other jobs"),
)


def cpu_line(figures: dict[str, Any]) -> str:
    """Where the CPU went in one scenario's measured window (``cpu_s_by_part``), one line."""
    parts = figures.get("cpu_s_by_part")
    if not parts:
        return ""
    shown = ", ".join(f"{label} {parts.get(key, 0.0):.1f}" for key, label in CPU_PARTS)
    return f"CPU s: {shown} of {parts['available']:.1f} available"


def cpu_markdown(doc: dict[str, Any]) -> str:
    """Where the 2 CPUs went per scenario (CPU seconds in the measured window), from a JSON document."""
    head = "| scenario | " + " | ".join(label for _, label in CPU_PARTS) + " | available | idle |"
    lines = [head, "|" + "---|" * (len(CPU_PARTS) + 3)]
    for s in doc["scenarios"]:
        parts = s["figures"].get("cpu_s_by_part") if s["figures"] else None
        if not parts:
            continue
        used = sum(parts.get(key, 0.0) for key, _ in CPU_PARTS)
        cells = [s["name"], *(_fmt(parts.get(key, 0.0), 1) for key, _ in CPU_PARTS)]
        cells += [_fmt(parts["available"], 1), _fmt(max(0.0, parts["available"] - used), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
