"""The ``geocatalog-worker`` command line: a click root group.

Each command lives with the module that owns it and is imported only when it is invoked, so that the
production image (without the ``emulators`` extra) never imports emulator code, and ``--help`` stays fast.
Every option also reads an environment variable (``GCW_<OPTION>``); see docs/configuration.md.
"""

from __future__ import annotations

import importlib

import click

from worker import __version__

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.runtime.cli:run_command", "Consume request messages and process them (the pod's process)."),
    "dlq": ("worker.recovery.cli:dlq_group", "Inspect, group, replay, export and purge the dead-letter queue."),
    "demo": ("worker.demo.cli:demo_command", "Run the whole job end to end on the embedded emulators."),
    "emulator": ("worker.emulators.cli:emulator_group", "Run a local Service Bus or GeoCatalog emulator."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] != "worker":
                raise click.ClickException(
                    f"'{cmd_name}' needs the optional dependency {exc.name!r}; "
                    "install with: pip install 'geocatalog-worker[emulators]'"
                ) from exc
            raise
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the short help without importing every command.
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
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
