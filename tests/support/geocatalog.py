"""Fixtures that start the GeoCatalog emulator (owned by the emulator's tests).

``gc_emulator(**kwargs)`` starts a ``GeoCatalogEmulator`` on 127.0.0.1 with an ephemeral port and returns it;
every emulator started through it is stopped at teardown. Defaults suited to tests: ``operation_seconds=0.2``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gcw_emulators.builders import UNIT_SQUARE, stac_item
from gcw_emulators.cluster import wait_until
from gcw_emulators.geocatalog import GeoCatalogEmulator


@pytest.fixture
def gc_emulator() -> Iterator[Callable[..., GeoCatalogEmulator]]:
    started: list[GeoCatalogEmulator] = []

    def factory(**kwargs: Any) -> GeoCatalogEmulator:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        kwargs.setdefault("operation_seconds", 0.2)
        emu = GeoCatalogEmulator(**kwargs)
        started.append(emu)
        return emu.start()

    yield factory
    for emu in reversed(started):
        emu.stop()


def make_stac_item(
    item_id: str,
    collection: str,
    href: str = "https://public.example.com/data/x.tif",
    **extra: Any,
) -> dict[str, Any]:
    """``gcw_emulators.builders.stac_item`` in the shape the emulator's tests use: a unit-square polygon, one
    ``image/tiff`` asset at a public href, no links; ``extra`` sets top-level fields."""
    return stac_item(
        item_id,
        collection,
        href=href,
        asset_type="image/tiff",
        geometry=UNIT_SQUARE,
        datetime="2023-01-01T00:00:00Z",
        links=None,
        **extra,
    )


def wait_operation(location: str, headers: dict[str, str], timeout: float = 20.0) -> dict[str, Any]:
    """Poll an operation URL until it is terminal; returns its JSON (raises on timeout)."""
    import requests

    last: list[dict[str, Any]] = []

    def terminal() -> bool:
        last[:] = [requests.get(location, headers=headers, timeout=5).json()]
        return last[0].get("status") not in {"Pending", "Running", "Canceling"}

    if not wait_until(terminal, timeout, interval=0.03):
        raise TimeoutError(f"operation still {last[0].get('status')} after {timeout} s: {location}")
    return last[0]
