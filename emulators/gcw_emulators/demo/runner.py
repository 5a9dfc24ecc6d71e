"""The demo's script: start everything, send the workload, show progress, report, replay, verify."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import click

from gcw_emulators.cluster import DEMO_WORKER_FLAGS, REPLY_QUEUE, REQUEST_QUEUE, Cluster, wait_until
from gcw_emulators.demo import workload as wl
from gcw_emulators.demo.storage import storage_stage
from gcw_emulators.demo.traffic import Collected, Outgoing, ResultCollector, send_requests


@dataclass
class DemoOptions:
    requests: int = 60
    workers: int = 3
    concurrency: int = 32
    operation_seconds: float = 1.0
    fault_rate: float = 0.0
    timeout: float = 180.0
    seed: int = 7


def _outgoing(requests: list[wl.DemoRequest]) -> list[Outgoing]:
    return [
        Outgoing(message_id=r.message_id, body=r.payload(), correlation_id=f"corr-{r.message_id}", reply_to=REPLY_QUEUE)
        for r in requests
    ]


class Progress:
    """One status line: refreshed in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, echo: Callable[[str], None], interactive: bool) -> None:
        self.echo = echo
        self.interactive = interactive
        self._last = 0.0

    def show(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.interactive:
            click.echo("\r" + line.ljust(100), nl=False)
        elif force or now - self._last >= 2.0:
            self.echo("  " + line)
            self._last = now

    def done(self) -> None:
        if self.interactive:
            click.echo("")


def _wait_phase(
    name: str,
    ids: list[str],
    collector: ResultCollector,
    cluster: Cluster,
    started: float,
    timeout: float,
    progress: Progress,
) -> bool:
    assert cluster.servicebus is not None
    deadline = time.monotonic() + timeout
    total = len(ids)
    while True:
        snap = collector.snapshot()
        done = sum(1 for i in ids if i in snap)
        stats = cluster.servicebus.stats()["entities"].get(REQUEST_QUEUE, {})
        elapsed = time.monotonic() - started
        line = (
            f"{name}: {done}/{total} done | in flight {stats.get('locked', 0)} | queued {stats.get('active', 0)}"
            f" | dead-lettered {stats.get('dead_letter', 0)} | {collector.count() / max(elapsed, 1e-9):.1f} results/s"
        )
        finished = done == total
        progress.show(line, force=finished)
        if finished or time.monotonic() > deadline:
            progress.done()
            return finished
        time.sleep(0.25)  # the progress line refreshes 4 times a second


def run_demo(opts: DemoOptions, echo: Callable[[str], None] = click.echo, interactive: bool = False) -> int:
    """Returns the process exit code: 0 when every request reached the terminal result it should."""
    phase1, phase2 = wl.build_workload(opts.requests, seed=opts.seed)
    faults = []
    if opts.fault_rate > 0:
        faults = [f"status=503,rate={opts.fault_rate / 2:g}", f"status=429,rate={opts.fault_rate / 2:g}"]
    cluster = Cluster(
        workers=opts.workers,
        lock_duration=30.0,
        operation_seconds=opts.operation_seconds,
        private_hosts=[wl.PRIVATE_STORAGE, wl.UNSIGNABLE_STORAGE],
        collections=list(wl.COLLECTIONS),
        faults=faults,
        seed=opts.seed,
        worker_flags={**DEMO_WORKER_FLAGS, "concurrency": opts.concurrency},
        sas_api=True,
        stop_timeout=15,
    )
    echo(click.style("geocatalog-worker demo", bold=True))
    echo(f"  {len(phase1) + len(phase2)} requests, {opts.workers} worker processes x concurrency {opts.concurrency},")
    echo(f"  GeoCatalog operations take {opts.operation_seconds:g} s, injected fault rate {opts.fault_rate:.0%}")
    with cluster:
        assert cluster.servicebus is not None and cluster.geocatalog is not None
        echo(f"  Service Bus emulator  {cluster.servicebus.connection_string.split(';')[0]}")
        echo(f"  GeoCatalog emulator   {cluster.geocatalog.url}  (private storage: {wl.PRIVATE_STORAGE})")
        echo(f"  workers               pids {', '.join(map(str, cluster.worker_pids()))}  logs in {cluster.log_dir}")
        keep = "kept" if os.environ.get("GCW_KEEP_LOGS") else "deleted at the end (GCW_KEEP_LOGS=1 keeps them)"
        echo(f"                        the worker logs (JSON lines, one file per worker) are {keep}")
        client = cluster.client
        with ResultCollector(client, REPLY_QUEUE) as collector:
            started = time.monotonic()
            progress = Progress(echo, interactive)
            echo(
                click.style(
                    "\n1. ingest: new items, a malformed request, a GeoCatalog failure, a missing collection", bold=True
                )
            )
            send_requests(client, REQUEST_QUEUE, _outgoing(phase1))
            ok1 = _wait_phase(
                "phase 1", [r.message_id for r in phase1], collector, cluster, started, opts.timeout, progress
            )
            echo(click.style("\n2. upserts and deletes of ingested items", bold=True))
            send_requests(client, REQUEST_QUEUE, _outgoing(phase2))
            ok2 = _wait_phase(
                "phase 2", [r.message_id for r in phase2], collector, cluster, started, opts.timeout, progress
            )
            elapsed = time.monotonic() - started
            results = collector.snapshot()

            echo(click.style("\n3. results", bold=True))
            rows = Counter()
            mismatches = []
            for r in phase1 + phase2:
                got = results.get(r.message_id)
                status = got.result.get("status") if got else "missing"
                rows[(r.kind, status)] += 1
                if status != r.expect:
                    mismatches.append((r.message_id, r.expect, status))
            echo(f"  {'request kind':<22}{'result':<12}{'count':>6}")
            for (kind, status), count in sorted(rows.items()):
                echo(f"  {kind:<22}{status:<12}{count:>6}")
            echo(
                f"  {len(results)} results in {elapsed:.1f} s ({len(results) / max(elapsed, 1e-9):.1f}/s), "
                f"duplicate results: {len(collector.duplicates)}"
            )
            for message_id in ("demo-malformed", "demo-geocatalog-failure", "demo-missing-collection"):
                got = results.get(message_id)
                if got and got.result.get("error"):
                    error = got.result["error"]
                    echo(f"  {message_id}: {EXPLAINED.get(message_id, '')}")
                    echo(f"    {error.get('code')}: {error.get('message')}")

            replay_ok = _dead_letters_and_replay(cluster, collector, echo, opts.timeout)

            echo(click.style("\n5. the catalog", bold=True))
            stats = cluster.geocatalog.stats()
            for collection, count in sorted(stats.get("items", {}).items()):
                echo(f"  {collection:<28}{count:>6} items")
            ops = stats.get("operations", {})
            echo(f"  GeoCatalog operations by status: {dict(sorted(ops.items()))}")
            expected = _expected_item_counts(phase1, phase2)
            counts_ok = all(stats.get("items", {}).get(c, 0) == n for c, n in expected.items())
            echo(f"  expected {dict(sorted(expected.items()))}: {'matches' if counts_ok else 'MISMATCH'}")

            storage_ok = storage_stage(cluster, collector, echo, opts.timeout)
            echo("\nstopping: the workers drain (SIGTERM, in-flight requests finish), then the emulators stop ...")

        ok = ok1 and ok2 and counts_ok and not mismatches and not collector.duplicates and replay_ok and storage_ok
        for message_id, expected, got_status in mismatches:
            echo(click.style(f"  unexpected: {message_id} expected {expected}, got {got_status}", fg="red"))
        echo(
            click.style(
                "\ndemo passed: every request reached its terminal result" if ok else "\ndemo FAILED",
                bold=True,
                fg="green" if ok else "red",
            )
        )
        return 0 if ok else 1


EXPLAINED = {
    "demo-malformed": "the request itself is wrong (a field names what), so it is answered 'invalid' and "
    "dead-lettered at once: no retry can help",
    "demo-geocatalog-failure": "GeoCatalog accepted the item but its operation failed (the service could not read "
    "the asset), so the request is answered 'failed' and dead-lettered for an operator",
    "demo-missing-collection": "the collection does not exist yet: answered 'failed' and dead-lettered; once the "
    "operator creates it, a replay from the dead-letter queue succeeds (stage 4)",
}


def _expected_item_counts(phase1: list[wl.DemoRequest], phase2: list[wl.DemoRequest]) -> dict[str, int]:
    """Items each collection should hold at the end: ingested, minus deleted, plus the replayed one."""
    present: dict[str, set[str]] = {}
    for r in phase1:
        if r.kind in ("ingest", "missing-collection"):
            present.setdefault(r.body["collection"], set()).update(r.item_ids)
    for r in phase2:
        if r.kind == "delete":
            present[r.body["collection"]].difference_update(r.item_ids)
    return {collection: len(ids) for collection, ids in present.items()}


def _dlq(cluster: Cluster, *args: str) -> str:
    """Run a real ``geocatalog-worker dlq`` command, as an operator would, and return what it printed."""
    assert cluster.servicebus is not None
    env = {**os.environ, "GCW_SERVICEBUS_CONNECTION_STRING": cluster.servicebus.connection_string}
    cmd = [sys.executable, "-m", "worker", "dlq", *args, "--request-queue", REQUEST_QUEUE]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    # stdout is the report; stderr carries the progress bar (and, on failure, the error worth showing).
    return (done.stdout if done.returncode == 0 else done.stdout + done.stderr).rstrip()


def _dead_letters_and_replay(
    cluster: Cluster,
    collector: ResultCollector,
    echo: Callable[[str], None],
    timeout: float,
) -> bool:
    """Show the dead-letter queue grouped by reason, fix the cause of the recoverable one, replay it."""
    assert cluster.geocatalog is not None
    echo(click.style("\n4. the dead-letter queue", bold=True))
    for args in (("summary",), ("list",)):
        echo(f"  $ geocatalog-worker dlq {' '.join(args)} --request-queue {REQUEST_QUEUE}")
        echo("    " + _dlq(cluster, *args).replace("\n", "\n    "))
    echo(f"  The operator creates the missing collection '{wl.MISSING}' and replays its request:")
    cluster.geocatalog.create_collection(wl.MISSING)
    echo(f"  $ geocatalog-worker dlq replay --collection {wl.MISSING} --request-queue {REQUEST_QUEUE}")
    echo("    " + _dlq(cluster, "replay", "--collection", wl.MISSING).replace("\n", "\n    "))
    original = "demo-missing-collection"

    def replayed() -> Collected | None:
        for request_id, got in collector.snapshot().items():
            if request_id != original and got.correlation_id == f"corr-{original}":
                return got
        return None

    wait_until(lambda: replayed() is not None, timeout, interval=0.2)
    got = replayed()
    status = got.result.get("status") if got else "missing"
    echo(f"  replayed request {got.result.get('request_id') if got else '?'}: {status}")
    return status == "succeeded"
