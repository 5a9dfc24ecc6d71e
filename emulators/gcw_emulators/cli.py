"""``geocatalog-worker emulator servicebus|geocatalog|all``: each emulator's command lives in its own package."""

from __future__ import annotations

import importlib

import click

_EMULATORS: dict[str, tuple[str, str]] = {
    "all": (
        "gcw_emulators.all:all_command",
        "Both emulators with the queues and a collection, and the worker's run command for them.",
    ),
    "servicebus": (
        "gcw_emulators.servicebus.cli:servicebus_command",
        "An AMQP 1.0 broker that the unmodified azure-servicebus SDK connects to.",
    ),
    "geocatalog": (
        "gcw_emulators.geocatalog.cli:geocatalog_command",
        "The GeoCatalog data-plane and SAS APIs over HTTP, with fault injection.",
    ),
}


class _EmulatorGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_EMULATORS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _EMULATORS:
            return None
        module_name, _, attribute = _EMULATORS[cmd_name][0].partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Emulators"):
            formatter.write_dl([(name, _EMULATORS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=_EmulatorGroup)
def emulator_group() -> None:
    """Run a local emulator. Both bind to 127.0.0.1 by default and stop cleanly on SIGINT/SIGTERM."""
