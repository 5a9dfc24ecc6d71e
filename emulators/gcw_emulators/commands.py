"""The sub-commands this package adds to ``geocatalog-worker`` (entry point group ``geocatalog_worker.commands``).

Each value is ``(target, short help)``; the target is imported only when the command is invoked.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gcw_emulators.demo.cli:demo_command", "Run the whole job end to end on the embedded emulators."),
    "emulator": ("gcw_emulators.cli:emulator_group", "Run a local Service Bus or GeoCatalog emulator."),
}
