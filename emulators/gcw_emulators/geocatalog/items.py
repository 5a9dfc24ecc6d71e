"""What the live GeoCatalog does to an item it stores, as Microsoft's recordings show it.

Sources (Azure/azure-sdk-for-python, ``sdk/planetarycomputer/azure-planetarycomputer/tests/recordings/``;
docs/emulator-geocatalog.md names the files):

- asset hrefs are rewritten to the catalog's managed storage,
  ``https://<account>.blob.core.windows.net/<collection>-<sha256(collection)[:8]>/<sha256(item id)[:3]>/<item id>/
  <asset key>.<ext>``, the other asset fields unchanged, also after a PUT that resubmits an external href;
- ``stac_extensions`` are upgraded (projection v1.0.0 -> v1.1.0; eo v1.0.0 -> v1.1.0 inferred from stored items);
- ``properties`` keep exactly the submitted keys; the top level gains only ``_msft:ts`` and ``_msft:etag``;
- submitted ``links`` are dropped; a read shows exactly collection, parent, root and self;
- nested objects come back in PostgreSQL ``jsonb`` key order (shorter keys first, then bytewise), the top level in
  the fixed order the service serves.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any
from urllib.parse import urlsplit

from gcw_emulators.geocatalog.sas import BLOB_SUFFIX

# stac_extensions the service stores under a newer schema version (old -> new)
EXTENSION_UPGRADES = {
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json": (
        "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
    ),
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
}
# the order of the top-level keys of a served item (T14); keys not listed follow in jsonb order
TOP_LEVEL_ORDER = (
    "id",
    "bbox",
    "type",
    "links",
    "assets",
    "_msft:ts",
    "geometry",
    "_msft:etag",
    "collection",
    "properties",
    "stac_extensions",
    "stac_version",
)
SERVICE_KEYS = ("_msft:ts", "_msft:etag")


def managed_container(collection_id: str) -> str:
    """The collection's container in managed storage: ``naip-atl`` -> ``naip-atl-bde3e846``."""
    return f"{collection_id}-{hashlib.sha256(collection_id.encode()).hexdigest()[:8]}"


def managed_prefix(item_id: str) -> str:
    """The item's 3-hex directory: ``ga_m_3308421_se_16_060_20211114_delete_test`` -> ``10a``."""
    return hashlib.sha256(item_id.encode()).hexdigest()[:3]


def asset_extension(href: str) -> str:
    """``.tif`` for ``.../m_3308421.tif?sig=...``; ``""`` when the last path segment has no extension."""
    last = urlsplit(href).path.rstrip("/").rpartition("/")[2]
    stem, dot, ext = last.rpartition(".")
    return f".{ext}" if dot and stem and ext else ""


def managed_blob_path(collection_id: str, item_id: str, asset_key: str, source_href: str) -> tuple[str, str]:
    """(container, blob path) where the service copies one asset."""
    blob = f"{managed_prefix(item_id)}/{item_id}/{asset_key}{asset_extension(source_href)}"
    return managed_container(collection_id), blob


def managed_href(account: str, container: str, blob: str) -> str:
    return f"https://{account}{BLOB_SUFFIX}/{container}/{blob}"


def jsonb_order(value: Any) -> Any:
    """``value`` with every object's keys in PostgreSQL ``jsonb`` order: shorter keys first, then bytewise."""
    if isinstance(value, dict):
        return {k: jsonb_order(value[k]) for k in _jsonb_keys(tuple(value))}
    if isinstance(value, list):  # coordinates: mostly numbers, not worth a call each
        return [jsonb_order(v) if isinstance(v, dict | list) else v for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def _jsonb_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The ``jsonb`` order of an object's keys; items of one kind share their key sets, so it is computed once."""
    return tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))


def upgrade_extensions(extensions: Any) -> Any:
    if not isinstance(extensions, list):
        return extensions
    return [EXTENSION_UPGRADES.get(e, e) if isinstance(e, str) else e for e in extensions]


def stored_item(item: dict[str, Any], assets: dict[str, Any], ts: str, etag: str) -> dict[str, Any]:
    """The document the service keeps for ``item`` once its assets were copied (``assets``: the rewritten ones)."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "links" or key in SERVICE_KEYS:
            continue
        if key == "assets":
            out[key] = jsonb_order(assets)
        elif key == "stac_extensions":
            out[key] = upgrade_extensions(value)
        elif isinstance(value, dict):
            out[key] = jsonb_order(value)
        else:
            out[key] = value
    out["_msft:ts"] = ts
    out["_msft:etag"] = etag
    return out


def served_item(stored: dict[str, Any], links: list[dict[str, Any]]) -> dict[str, Any]:
    """A stored item as a GET shows it: the four links added, top-level keys in the recorded order."""
    doc = dict(stored, links=links)
    out = {k: doc[k] for k in TOP_LEVEL_ORDER if k in doc}
    for key in sorted((k for k in doc if k not in out), key=lambda k: (len(k.encode()), k.encode())):
        out[key] = doc[key]
    return out


def item_not_found(collection_id: str, item_id: str) -> str:
    """The 404 message of a GET of a missing item (T14)."""
    return (
        f"Resource not found at '/stac/collections/{collection_id}/items/{item_id}' with parameters "
        f"{{'collection_id': '{collection_id}', 'item_id': '{item_id}'}}. Check the parameters and try again."
    )


def collection_not_found(collection_id: str) -> str:
    """The 404 message of a GET of a missing collection (collection lifecycle test_01, test_03)."""
    return f"Collection '{collection_id}' not found. Please verify the collection ID and try again."


def public_access_restricted(href: str) -> str:
    """The message of an update whose asset sits on a storage account without public access (T11)."""
    return (
        "Asset transformation exception. Reason: Error retrieving content from public source. Reason: Public "
        f"access is not permitted on this storage account. Source: {href}. Source: {href}"
    )
