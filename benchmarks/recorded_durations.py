"""Little's law on the live service's operation timings: what concurrency the worker needs.

With the GeoCatalog emulator drawing operation durations from Microsoft's recordings (``--operation-seconds
recorded``: AddItem about 5-7 s), a request holds a concurrency slot for about one operation plus the poll lag,
so a process's throughput is about ``concurrency / (operation time + lag)``. This runs one worker process per
``--concurrency`` value against a backlog of single-item requests and prints the measured throughput, the time a
request is in the worker (``completed_at - received_at`` of its result) and the concurrency Little's law says a
target rate needs.

    .venv/bin/python -m benchmarks.recorded_durations --requests 400 --concurrency 16 --concurrency 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from gcw_emulators.builders import ingest_request, stac_item
from gcw_emulators.cluster import Cluster


def _seconds(a: str, b: str) -> float:
    return (
        datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
    ).total_seconds()


def measure(requests: int, concurrency: int, *, durations: str, seed: int) -> dict[str, float]:
    with Cluster(operation_seconds=durations, collections=["c1"], seed=seed, lock_duration=60) as cluster:
        worker = cluster.start_worker(concurrency=concurrency, health_port=0)
        cluster.wait_ready(worker)
        bodies = [ingest_request("c1", [stac_item(f"item-{concurrency}-{n}", "c1")]) for n in range(requests)]
        started = time.monotonic()
        cluster.send(bodies)
        replies = cluster.collect_replies(requests, timeout=requests * 10 / max(1, concurrency) + 120)
        elapsed = time.monotonic() - started
        cluster.terminate(worker)
    ok = [r for r in replies if r.body.get("status") == "succeeded"]
    inside = sorted(_seconds(r.body["received_at"], r.body["completed_at"]) for r in ok)
    rate = len(ok) / elapsed if elapsed else 0.0
    return {
        "concurrency": concurrency,
        "succeeded": len(ok),
        "req_per_s": rate,
        "in_worker_p50_s": statistics.median(inside) if inside else float("nan"),
        "in_worker_p95_s": inside[int(0.95 * (len(inside) - 1))] if inside else float("nan"),
        "littles_law_req_per_s": concurrency / statistics.mean(inside) if inside else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable (default 16 and 64)")
    parser.add_argument("--durations", default="recorded", help="the emulator's --operation-seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--target", type=float, default=500.0, help="req/s to size the concurrency for")
    args = parser.parse_args(argv)
    rows = [measure(args.requests, c, durations=args.durations, seed=args.seed) for c in args.concurrency or [16, 64]]
    print(f"operation durations: {args.durations}; {args.requests} single-item requests; 1 worker process")
    print(f"{'concurrency':>11} {'ok':>5} {'req/s':>7} {'in worker p50':>14} {'p95':>6} {'conc/p50 (Little)':>18}")
    for r in rows:
        print(
            f"{r['concurrency']:>11.0f} {r['succeeded']:>5.0f} {r['req_per_s']:>7.1f} {r['in_worker_p50_s']:>13.2f}s "
            f"{r['in_worker_p95_s']:>5.2f}s {r['littles_law_req_per_s']:>17.1f}"
        )
    p50 = statistics.median(r["in_worker_p50_s"] for r in rows)
    print(f"Little's law: {args.target:.0f} req/s needs about {args.target * p50:.0f} requests in flight in total")


if __name__ == "__main__":
    main()
