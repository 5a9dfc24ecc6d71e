"""``geocatalog-worker emulator servicebus``: run the broker in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import structlog

from gcw_emulators.servicebus.access import AccessPolicy, parse_policy_flag
from gcw_emulators.servicebus.config import ConfigError, QueueConfig


def _policies(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[AccessPolicy]:
    try:
        return [parse_policy_flag(value) for value in values]
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@click.command("servicebus")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=5672, show_default=True, type=click.IntRange(0, 65535),
              help="AMQP port; 0 picks a free one (printed on the first line).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Entities in Microsoft's Service Bus emulator Config.json format.")
@click.option("--queue", "queues", multiple=True, metavar="NAME", help="Declare a queue (repeatable).")
@click.option("--lock-duration", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
              help="Lock duration in seconds for --queue queues.")
@click.option("--max-delivery-count", type=click.IntRange(min=1), default=10, show_default=True,
              help="Max delivery count for --queue queues.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep messages in SQLite here so a restart loses nothing accepted (memory only without it).")
@click.option("--max-message-size", type=click.IntRange(min=1024), default=256 * 1024, show_default=True,
              help="Largest message accepted, in bytes (Standard tier: 262144; Premium: up to 104857600).")
@click.option("--status-port", type=click.IntRange(0, 65535), default=None,
              help="Serve JSON counts per entity over HTTP on this port (0 = pick one).")
@click.option("--management-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the ServiceBusAdministrationClient API over HTTPS on this port (Microsoft's emulator: "
                   "5300; 0 = pick one). Prints its connection string and the CA certificate to trust.")
@click.option("--amqps-port", type=click.IntRange(0, 65535), default=None,
              help="Also accept AMQP over TLS here, for clients without UseDevelopmentEmulator (they dial 5671).")
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the local CA (ca.pem) and server certificate are kept and reused "
                   "[default: DATA_DIR/tls, else a temporary folder].")
@click.option("--policy", "policies", multiple=True, callback=_policies, metavar="[ENTITY/]NAME:RIGHTS:KEY",
              help="A shared access policy besides RootManageSharedAccessKey (repeatable): RIGHTS is a comma list of "
              "Listen, Send, Manage; 'ENTITY/' puts it on one queue or topic, else on the namespace. "
              "Example: requests/worker:Listen:s3cret.")
def servicebus_command(host: str, port: int, config_file: Path | None, queues: tuple[str, ...],
                       lock_duration: float, max_delivery_count: int, data_dir: Path | None,
                       max_message_size: int, status_port: int | None, management_port: int | None,
                       amqps_port: int | None, tls_dir: Path | None, policies: list[AccessPolicy]) -> None:
    """An AMQP 1.0 broker that the unmodified azure-servicebus SDK connects to.

    Prints the connection string (with the actual port) on the first line, then runs until SIGINT/SIGTERM.
    """
    from gcw_emulators.servicebus.emulator import EmulatorError, ServiceBusEmulator

    if not structlog.is_configured():      # stdout is for the connection string; logs go to stderr
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    if not queues and config_file is None and management_port is None:
        raise click.UsageError("declare entities with --queue NAME (repeatable) and/or --config Config.json, "
                               "or create them through --management-port")
    try:
        declared = [QueueConfig(name, lock_duration=lock_duration, max_delivery_count=max_delivery_count)
                    for name in queues]
        emu = ServiceBusEmulator(host=host, port=port, queues=declared, config_file=config_file,
                                 data_dir=data_dir, status_port=status_port, max_message_size=max_message_size,
                                 management_port=management_port, amqps_port=amqps_port, tls_dir=tls_dir,
                                 policies=policies)
        emu.start()
    except (ConfigError, EmulatorError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    click.echo(emu.connection_string)
    if emu.status_url:
        click.echo(f"status: {emu.status_url}")
    click.echo(f"entities: {', '.join(emu.store.entity_paths()) if emu.store else ''}")
    if emu.management_port is not None:
        click.echo(f"management: {emu.management_connection_string}")
    if emu.amqps_port is not None:
        click.echo(f"amqps: {emu.host}:{emu.amqps_port}")
    if emu.ca_cert is not None:
        click.echo(f"ca: {emu.ca_cert}")
    click.echo("policies: " + ", ".join(p.describe() for p in emu.access.policies))
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        click.echo("stopped", err=True)
