"""``geocatalog-worker demo``."""

from __future__ import annotations

import logging
import sys

import click
import structlog

from gcw_emulators.demo.runner import DemoOptions, run_demo


@click.command("demo")
@click.option(
    "--requests",
    "n_requests",
    default=60,
    show_default=True,
    type=click.IntRange(10, 100_000),
    help="How many request messages to send (ingests, upserts, deletes and three special cases).",
)
@click.option("--workers", default=3, show_default=True, type=click.IntRange(1, 16), help="Worker processes.")
@click.option(
    "--concurrency",
    default=32,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Requests in flight per worker process.",
)
@click.option(
    "--operation-seconds",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="How long each GeoCatalog operation takes in the emulator.",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Share of GeoCatalog calls answered 503 or 429 (with Retry-After); the worker retries them.",
)
@click.option(
    "--timeout", default=300.0, show_default=True, type=click.FloatRange(1), help="Give up after this long per phase."
)
@click.option("--seed", default=7, show_default=True, help="Seed of the workload and of the injected faults.")
def demo_command(
    n_requests: int,
    workers: int,
    concurrency: int,
    operation_seconds: float,
    fault_rate: float,
    timeout: float,
    seed: int,
) -> None:
    """Run the whole job end to end on the embedded emulators.

    Starts a Service Bus emulator and a GeoCatalog emulator in this process, starts worker processes, sends a
    realistic workload, shows live progress, then the results by status, the dead-letter queue, a replay of the
    recoverable request and the final item counts. Exits 0 when every request reached the terminal result it
    should, 1 otherwise.
    """
    # The emulators run in this process: keep their info logs out of the demo's report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    opts = DemoOptions(
        requests=n_requests,
        workers=workers,
        concurrency=concurrency,
        operation_seconds=operation_seconds,
        fault_rate=fault_rate,
        timeout=timeout,
        seed=seed,
    )
    sys.exit(run_demo(opts, interactive=sys.stdout.isatty()))
