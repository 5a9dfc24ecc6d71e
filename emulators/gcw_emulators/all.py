"""``geocatalog-worker emulator all``: both emulators, the queues and a collection, and the ``run`` command for them.

The quickest way to try the worker by hand (docs/emulators.md "Everything on one machine"): it starts the Service
Bus emulator with the request and reply queues, the GeoCatalog emulator with a collection, and prints the exact
``geocatalog-worker run`` (and ``check``) command that works against them. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import shlex
import signal
import threading
from typing import Any

import click

from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator

PRIVATE_STORAGE = "privatedemo.blob.core.windows.net"


def worker_command(
    name: str, servicebus: ServiceBusEmulator, geocatalog: GeoCatalogEmulator, request_queue: str, reply_queue: str
) -> list[str]:
    """The ``geocatalog-worker run``/``check`` command line for these emulators."""
    return [
        "geocatalog-worker",
        name,
        "--servicebus-connection-string",
        servicebus.connection_string,
        "--request-queue",
        request_queue,
        "--reply-queue",
        reply_queue,
        "--geocatalog-url",
        geocatalog.url,
        "--geocatalog-token",
        geocatalog.token,
        "--sas-api-url",
        geocatalog.url,
        "--sign-host",
        PRIVATE_STORAGE,
    ]


@click.command("all")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address both emulators bind to.")
@click.option("--servicebus-port", type=click.IntRange(0, 65535), default=5672, show_default=True)
@click.option("--geocatalog-port", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option("--request-queue", default="requests", show_default=True)
@click.option("--reply-queue", default="replies", show_default=True)
@click.option(
    "--collection",
    "collections",
    multiple=True,
    default=("demo",),
    show_default=True,
    help="Collections that exist from the start (repeatable).",
)
@click.option(
    "--operation-seconds",
    default="recorded",
    show_default=True,
    help="GeoCatalog operation durations: 'recorded' (the live service's), seconds, 'uniform:LOW,HIGH'.",
)
def all_command(
    host: str,
    servicebus_port: int,
    geocatalog_port: int,
    request_queue: str,
    reply_queue: str,
    collections: tuple[str, ...],
    operation_seconds: str,
) -> None:
    """Start both emulators with the queues and collections, print the worker's command for them, serve."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    servicebus = ServiceBusEmulator(
        host=host,
        port=servicebus_port,
        queues=[QueueConfig(request_queue), QueueConfig(reply_queue, requires_duplicate_detection=True)],
    ).start()
    try:
        duration: float | str = float(operation_seconds)
    except ValueError:
        duration = operation_seconds
    geocatalog = GeoCatalogEmulator(
        host=host,
        port=geocatalog_port,
        operation_seconds=duration,
        private_hosts=[PRIVATE_STORAGE],
        collections=list(collections),
    ).start()
    try:
        click.echo(f"Service Bus emulator: {servicebus.connection_string}")
        click.echo(f"GeoCatalog emulator:  {geocatalog.url} (collections: {', '.join(collections)})")
        click.echo("Run the worker against them with:")
        click.echo("  " + shlex.join(worker_command("run", servicebus, geocatalog, request_queue, reply_queue)))
        click.echo("or check the configuration first with the same flags:")
        click.echo("  " + shlex.join(worker_command("check", servicebus, geocatalog, request_queue, reply_queue)))
        click.echo("Ctrl-C stops both emulators.", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        geocatalog.stop()
        servicebus.stop()
