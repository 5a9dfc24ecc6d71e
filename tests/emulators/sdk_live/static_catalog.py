"""A static STAC catalog on the emulator's blob store, for ``IngestionStaticCatalog`` runs, and the variables that
point Microsoft's ingestion sample and tests (``planetary_computer_01_ingestion_management``) at it.

Their own catalog URL is a file on GitHub (``raw.githubusercontent.com/.../naip/catalog.json``), not reachable
here; ``AZURE_INGESTION_CATALOG_URL`` (tests) and ``PLANETARYCOMPUTER_INGESTION_CATALOG_URL`` (sample) replace it.
"""

from __future__ import annotations

import json
from typing import Any

from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.geocatalog.ingestion import EMULATOR_IDENTITY

ACCOUNT, CONTAINER = "emulator", "static-catalog"


def catalog_url(emu: GeoCatalogEmulator, container: str = CONTAINER, account: str = ACCOUNT) -> str:
    return f"{emu.url}/_blobs/{account}/{container}/catalog.json"


def publish_static_catalog(
    emu: GeoCatalogEmulator,
    items: list[dict[str, Any]],
    *,
    files: dict[str, tuple[bytes, str]] | None = None,
    container: str = CONTAINER,
    account: str = ACCOUNT,
) -> str:
    """Publish ``items`` as a static catalog and return the URL of its ``catalog.json``.

    The layout is the one stac-utils writes: ``catalog.json`` linking ``./<id>/<id>.json`` (relative ``item``
    links), each item with ``root``/``parent`` links back and, for every name in ``files`` (name -> (bytes, media
    type)), a blob ``<id>/<name>`` next to it, which an asset href ``./<name>`` in the item names.
    """

    def put(path: str, data: bytes, media_type: str = "application/json") -> None:
        emu.put_blob(path, data, account=account, container=container, content_type=media_type)

    links: list[dict[str, Any]] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for item in items:
        iid = item["id"]
        up = [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
        for name, (data, media_type) in (files or {}).items():
            put(f"{iid}/{name}", data, media_type)
        put(f"{iid}/{iid}.json", json.dumps(dict(item, links=up)).encode(), "application/geo+json")
        links.append({"rel": "item", "href": f"./{iid}/{iid}.json", "type": "application/geo+json"})
    catalog = {
        "type": "Catalog",
        "id": container,
        "stac_version": "1.0.0",
        "description": f"A static catalog of {len(items)} items for ingestion runs (emulator seed)",
        "links": links,
    }
    put("catalog.json", json.dumps(catalog).encode())
    return catalog_url(emu, container, account)


def ingestion_environment(emu: GeoCatalogEmulator, url: str | None = None) -> dict[str, str]:
    """The ingestion variables of the sample and the tests: the catalog (``url``, default ``catalog_url(emu)``), a
    SAS-token source for its container (a token this emulator issued for it) and another container for the
    managed-identity source, with the emulated GeoCatalog's own identity."""
    url = url or catalog_url(emu)
    container_url = url.rsplit("/", 1)[0]
    account, container = container_url.split("/_blobs/", 1)[1].split("/", 1)
    identity_container = f"{container_url}-identity"
    return {
        "AZURE_INGESTION_CATALOG_URL": url,
        "PLANETARYCOMPUTER_INGESTION_CATALOG_URL": url,
        "AZURE_INGESTION_CONTAINER_URI": identity_container,
        "PLANETARYCOMPUTER_INGESTION_CONTAINER_URI": identity_container,
        "PLANETARYCOMPUTER_MANAGED_IDENTITY_OBJECT_ID": EMULATOR_IDENTITY.object_id,
        "AZURE_INGESTION_SAS_CONTAINER_URI": container_url,
        "AZURE_INGESTION_SAS_TOKEN": emu.issue_sas(account, container),
    }
