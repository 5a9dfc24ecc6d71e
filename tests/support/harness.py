"""The end-to-end tests' view of ``gcw_emulators.cluster.Cluster``: both emulators, N ``geocatalog-worker run``
subprocesses, the real SDK, sockets.

``Harness`` is the ``Cluster`` with the tests' worker flags (short drains, retries and breaker pauses, so the
suites stay fast); the rest (``stac_item``, ``ingest_request``, ``wait_until``, the queue names, ...) is re-exported
from the emulators package, which owns it because the demo and the benchmarks use it too::

    with Harness(lock_duration=3, operation_seconds=0.2, collections=["c1"]) as h:
        w = h.start_worker(concurrency=8)
        h.wait_ready(w)
        h.send([ingest_request("c1", [stac_item("a", "c1")])], message_ids=["m1"])
        replies = h.collect_replies(1, timeout=30)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from gcw_emulators.builders import delete_request, ingest_request, stac_item
from gcw_emulators.cluster import REPLY_QUEUE, REQUEST_QUEUE, Cluster, Reply, WorkerProcess, wait_until

__all__ = [
    "REPLY_QUEUE",
    "REQUEST_QUEUE",
    "TEST_WORKER_FLAGS",
    "Harness",
    "Reply",
    "WorkerProcess",
    "delete_request",
    "ingest_request",
    "stac_item",
    "wait_until",
]

# Every test worker's flags unless the test overrides them.
TEST_WORKER_FLAGS: Mapping[str, object] = {
    "concurrency": 16,
    "drain_seconds": 10,
    "retry_base_seconds": 0.5,
    "retry_max_seconds": 5,
    "breaker_open_seconds": 1,
    "log_level": "INFO",
}


class Harness(Cluster):
    """A ``Cluster`` whose workers get ``TEST_WORKER_FLAGS``; every ``Cluster`` keyword is accepted."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("worker_flags", TEST_WORKER_FLAGS)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> Harness:
        self.start()
        return self


def _bench(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.support.harness --requests 300 --concurrency 64``: end-to-end figures (not a test)."""
    import argparse

    import psutil

    parser = argparse.ArgumentParser(description=_bench.__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--operation-seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    with Harness(lock_duration=30, operation_seconds=args.operation_seconds, collections=["c1"]) as h:
        workers = [h.start_worker(concurrency=args.concurrency, geocatalog_budget=1000) for _ in range(args.workers)]
        for w in workers:
            h.wait_ready(w)
        procs = [psutil.Process(w.pid) for w in workers]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        bodies = [ingest_request("c1", [stac_item(f"b{i}", "c1")]) for i in range(args.requests)]
        started = time.monotonic()
        ids = h.send(bodies)
        replies = h.collect_replies(len(ids), timeout=600)
        wall = time.monotonic() - started
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
        assert h.geocatalog is not None
        posts = h.geocatalog.stats()["requests"].get("POST /stac/collections/{collectionId}/items", {})
        print(
            f"requests={len(ids)} replies={len(replies)} distinct={len({r.body['request_id'] for r in replies})} "
            f"workers={args.workers} concurrency={args.concurrency} wall={wall:.2f}s "
            f"throughput={len(ids) / wall:.1f} req/s (send included) worker_cpu={cpu:.2f}s "
            f"cpu_per_request={cpu / len(ids) * 1000:.2f} ms ingest_posts={sum(posts.values())}"
        )


if __name__ == "__main__":
    _bench()
