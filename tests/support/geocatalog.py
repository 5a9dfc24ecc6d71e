"""Fixtures that start the GeoCatalog emulator (owned by the emulator's tests).

``gc_emulator(**kwargs)`` starts a ``GeoCatalogEmulator`` on 127.0.0.1 with an ephemeral port and returns it;
every emulator started through it is stopped at teardown. Defaults suited to tests: ``operation_seconds=0.2``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
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
    """A small valid STAC Item (one asset) for ``collection``."""
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        "bbox": [0, 0, 1, 1],
        "properties": {"datetime": "2023-01-01T00:00:00Z"},
        "assets": {"data": {"href": href, "type": "image/tiff"}},
    }
    item.update(extra)
    return item


def wait_operation(location: str, headers: dict[str, str], timeout: float = 20.0) -> dict[str, Any]:
    """Poll an operation URL until it is terminal; returns its JSON (raises on timeout)."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(location, headers=headers, timeout=5).json()
        if body.get("status") not in {"Pending", "Running", "Canceling"}:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"operation still {body.get('status')} after {timeout} s: {location}")
        time.sleep(0.03)
