"""``python -m benchmarks run [--smoke] [--scenario NAME ...] [--json OUT]`` and ``python -m benchmarks list``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import structlog

from benchmarks import report, scenarios
from benchmarks.runner import Run

DEFAULT_JSON = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run scenarios and print the table and targets")
    run_p.add_argument("--smoke", action="store_true", help="tiny scenarios (CI: checks the runner, not timing)")
    run_p.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    run_p.add_argument("--json", type=Path, help="write the JSON document here (default benchmarks/results/)")
    run_p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each measured process with py-spy (collapsed stacks) into DIR",
    )
    run_p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil), i.e. where the CPU goes",
    )
    run_p.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: also sample threads while they wait (py-spy --idle): where a thread's time goes",
    )
    run_p.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="keep the workers' logs (at WARNING) of each scenario in DIR/<scenario>/worker-<n>.log",
    )
    list_p = sub.add_parser("list", help="list the scenarios")
    list_p.add_argument("--smoke", action="store_true")
    show_p = sub.add_parser("show", help="print a JSON result as the markdown table of docs/benchmarks.md")
    show_p.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "show":
        doc = json.loads(args.file.read_text())
        print(report.markdown(doc))
        print()
        print(report.cpu_markdown(doc))
        return 0

    chosen = scenarios.select(scenarios.smoke() if args.smoke else scenarios.full(), getattr(args, "scenario", None))
    if args.command == "list":
        for s in chosen:
            print(f"{s.name:28} {s.description}")
        return 0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("uamqp").setLevel(logging.WARNING)
    run = Run(
        profile_dir=args.profile, profile_gil=args.profile_gil, profile_idle=args.profile_idle, logs_dir=args.keep_logs
    )
    results = []
    for s in chosen:
        print(f"== {s.name}: {s.description}", flush=True)
        started = time.monotonic()
        r = run.run(s)
        results.append(r)
        f = r.figures
        print(f"   {r.error or ''}{_line(f)} ({time.monotonic() - started:.0f} s)", flush=True)
        if f:
            print(f"   {report.cpu_line(f)}", flush=True)
    print()
    print(report.table(results))
    print()
    print("targets (issue 9):")
    print(report.targets(results) or "  (none in these scenarios)")
    m = report.machine()
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}")
    doc = report.document(results, smoke=args.smoke)
    out = args.json or DEFAULT_JSON / f"{'smoke' if args.smoke else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report.write_json(doc, out)
    print(f"JSON: {out}")
    return 1 if any(r.error for r in results) else 0


def _line(f: dict) -> str:
    if not f:
        return ""
    tp, p99 = f.get("throughput"), f.get("latency_p99")
    return (
        f"{f['results']}/{f['requests']} results, {tp or 0:,.1f} req/s, p99 {p99 or 0:.2f} s, "
        f"CPU {f.get('cpu_ms_per_request') or 0:.2f} ms/req, {f.get('calls_per_item') or 0:.3f} calls/item"
    )
