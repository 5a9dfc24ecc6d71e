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


def publish_static_catalog(
    emu: GeoCatalogEmulator,
    items: list[dict[str, Any]],
    *,
    container: str = "static-catalog",
    account: str = "emulator",
    assets: dict[str, tuple[bytes, str]] | None = None,
) -> str:
    """Publish a static STAC catalog on the emulator's blob store and return the URL of its ``catalog.json``.

    The layout is the one ``stac-utils`` writes (``catalog.json``, ``<id>/<id>.json``, relative links): each item
    in ``items`` is stored under its id with its ``links`` replaced by ``root``/``parent`` links and, for every
    asset key in ``assets`` (key -> (bytes, media type)), a blob ``<id>/<key>`` next to the item that the item's
    asset of that key points at with a relative href. This is what an ``IngestionStaticCatalog`` run reads.
    """
    import json

    def put(path: str, doc: dict[str, Any]) -> str:
        return emu.put_blob(path, json.dumps(doc).encode(), account=account, container=container)

    links: list[dict[str, Any]] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for item in items:
        iid = item["id"]
        up = [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
        doc = dict(item, links=up)
        doc["assets"] = dict(doc.get("assets", {}))
        for key, (data, media_type) in (assets or {}).items():
            emu.put_blob(f"{iid}/{key}", data, account=account, container=container, content_type=media_type)
            doc["assets"][key] = {**doc["assets"].get(key, {}), "href": f"./{key}", "type": media_type}
        put(f"{iid}/{iid}.json", doc)
        links.append({"rel": "item", "href": f"./{iid}/{iid}.json", "type": "application/geo+json"})
    catalog = {
        "type": "Catalog",
        "id": container,
        "stac_version": "1.0.0",
        "description": f"Static catalog of {len(items)} items for ingestion runs",
        "links": links,
    }
    return put("catalog.json", catalog)


def ingestion_environment(emu: GeoCatalogEmulator, catalog_url: str) -> dict[str, str]:
    """The variables Microsoft's ingestion sample and tests read (``planetary_computer_01_ingestion_management``),
    pointed at this emulator: the static catalog ``catalog_url`` (see ``publish_static_catalog``), a SAS-token
    source for the catalog's container (a token the emulator issued for it), and a different container for the
    managed-identity source, with the emulated GeoCatalog's own identity."""
    from gcw_emulators.geocatalog.ingestion import EMULATOR_IDENTITY

    container_url = catalog_url.rsplit("/", 1)[0]
    account, container = container_url.split("/_blobs/", 1)[1].split("/", 1)
    mi_container = f"{container_url}-identity"
    return {
        "AZURE_INGESTION_CATALOG_URL": catalog_url,
        "PLANETARYCOMPUTER_INGESTION_CATALOG_URL": catalog_url,
        "AZURE_INGESTION_CONTAINER_URI": mi_container,
        "PLANETARYCOMPUTER_INGESTION_CONTAINER_URI": mi_container,
        "PLANETARYCOMPUTER_MANAGED_IDENTITY_OBJECT_ID": EMULATOR_IDENTITY.object_id,
        "AZURE_INGESTION_SAS_CONTAINER_URI": container_url,
        "AZURE_INGESTION_SAS_TOKEN": emu.issue_sas(account, container),
    }
