"""The ``geocatalog-worker`` command line: a click root group.

Each command lives with the module that owns it and is imported only when it is invoked, so that ``--help``
stays fast. Other installed distributions add commands through the entry point group
``geocatalog_worker.commands`` (a ``{name: ("module:attribute", short help)}`` mapping): that is how
``geocatalog-worker-emulators`` adds ``demo`` and ``emulator`` without the product (or its image) carrying them.
Every option also reads an environment variable (``GCW_<OPTION>``); see docs/configuration.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import click

from worker import __version__

# command name -> ("module:attribute" of a click.Command, short help)
_BUILTIN: dict[str, tuple[str, str]] = {
    "run": ("worker.servicebus.cli:run_command", "Consume request messages and process them (the pod's process)."),
    "check": (
        "worker.servicebus.cli:check_command",
        "Check Service Bus rights and the GeoCatalog endpoint with run's flags; print a table.",
    ),
    "dlq": ("worker.recovery.cli:dlq_group", "Inspect, group, replay, export and purge the dead-letter queue."),
}
# commands a user may look for that only an optional distribution provides
_OPTIONAL: dict[str, str] = {
    "demo": "geocatalog-worker-emulators",
    "emulator": "geocatalog-worker-emulators",
}
ENTRY_POINT_GROUP = "geocatalog_worker.commands"


def _commands() -> dict[str, tuple[str, str]]:
    """The built-in commands plus those that installed plugins add (a plugin cannot replace a built-in)."""
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        table: dict[str, tuple[str, str]] = ep.load()
        found.update(table)
    found.update(_BUILTIN)
    return found


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _commands().get(cmd_name)
        if target is None:
            if cmd_name in _OPTIONAL:
                raise click.UsageError(
                    f"'{cmd_name}' comes with the {_OPTIONAL[cmd_name]} distribution, which is not installed; "
                    "from a checkout: pip install ./emulators (make demo and make test do it)"
                )
            return None
        module_name, _, attribute = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] not in {"worker", "gcw_emulators"}:
                raise click.ClickException(f"'{cmd_name}' needs the missing dependency {exc.name!r}") from exc
            raise
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the short help without importing every command.
        commands = _commands()
        rows = [(name, commands[name][1]) for name in sorted(commands)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "GCW"})
@click.version_option(__version__, prog_name="geocatalog-worker")
def main() -> None:
    """Feed Microsoft Planetary Computer Pro (GeoCatalog) from Azure Service Bus.

    Request messages ask to ingest STAC items into a collection or to delete items from it. The worker
    validates them, signs asset hrefs, submits them to the GeoCatalog STAC API, polls the operations,
    publishes one result per request to a reply queue and only then settles the request.
    """
