"""Fixtures that start the Service Bus emulator (owned by the emulator's tests).

``sb_emulator`` is a factory: ``emu = sb_emulator(queues=[QueueConfig("q", lock_duration=2)])`` starts an
emulator on 127.0.0.1 with an ephemeral port and stops it at teardown. Any ``ServiceBusEmulator`` keyword
(``topics``, ``config_file``, ``data_dir``, ``status_port``) is passed through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gcw_emulators.servicebus import ServiceBusEmulator


@pytest.fixture
def sb_emulator(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServiceBusEmulator]]:
    started: list[ServiceBusEmulator] = []

    def start(**kwargs: Any) -> ServiceBusEmulator:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        emu = ServiceBusEmulator(**kwargs).start()
        started.append(emu)
        return emu

    yield start
    for emu in reversed(started):
        emu.stop()
