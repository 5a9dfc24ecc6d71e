"""Is the item the catalog holds the one we asked for? The content digest and the service-owned fields.

The live GeoCatalog does not give an item back as it was submitted (facts from Microsoft's recordings, see
docs/emulator-geocatalog.md): asset hrefs come back rewritten to the catalog's managed storage
(``https://<account>.blob.core.windows.net/<collection>-<8 hex>/<3 hex>/<item id>/<asset key>.<ext>``, also after
a PUT that resubmits the external href), ``stac_extensions`` come back upgraded (projection v1.0.0 → v1.1.0),
the submitted ``links`` are replaced by the service's four, and ``_msft:ts`` / ``_msft:etag`` are added at the
top level. ``properties`` keep exactly the submitted keys.

So a field-by-field comparison of the stored item with the submitted one is always false, and the worker
would report its own writes as conflicts and rewrite unchanged items. The worker therefore writes a
deterministic **content digest** into the item's ``properties`` (``gcw:digest``, the one place the service
keeps as submitted): the SHA-256 of the item as the request gave it, in canonical JSON, without the fields the
service owns and without SAS query parameters (a fresh token per signing does not change the content). "Already
what we wrote" is then: the stored item's digest equals the submitted one.

An item that carries no digest (written by another tool, or with ``--no-content-digest``) is compared field by
field with the service-owned fields relaxed: links and ``_msft:*`` ignored, extension schema versions ignored,
an asset href equal when it is the same URL without SAS parameters or when the stored one is the catalog's
managed copy of that very asset (its path names the item and the asset key).

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "DIGEST_PROPERTY",
    "SAS_PARAMS",
    "content_digest",
    "is_managed_href",
    "managed_container",
    "same_content",
    "strip_sas",
    "with_digest",
]

DIGEST_PROPERTY = "gcw:digest"

# Query parameters that belong to a (service, account or user-delegation) SAS, incl. the signed response-header
# overrides: they are not part of an asset's identity, and they are dropped before a fresh token is added.
SAS_PARAMS = frozenset(
    {
        "sv", "ss", "srt", "sp", "se", "st", "spr", "sip", "sig", "sr", "si", "sdd", "ses",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "sduoid",
        "rscc", "rscd", "rsce", "rscl", "rsct",
    }
)  # fmt: skip

_SERVICE_PREFIXES = ("_msft:", "msft:_")
_EXTENSION_VERSION = re.compile(r"/v\d+(?:\.\d+)*(?:-[0-9A-Za-z.]+)?/")


def strip_sas(href: str) -> str:
    """``href`` without its SAS parameters; every other query parameter kept, in order."""
    if "?" not in href:
        return href
    parts = urlsplit(href)
    if not parts.query:
        return href
    kept = [p for p in parts.query.split("&") if p and unquote(p.split("=", 1)[0]).lower() not in SAS_PARAMS]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))


def managed_container(collection: str) -> str:
    """The container of the collection's managed storage: ``<collection>-<first 8 hex of sha256(collection)>``."""
    return f"{collection}-{hashlib.sha256(collection.encode()).hexdigest()[:8]}"


def _item_prefix(item_id: str) -> str:
    return hashlib.sha256(item_id.encode()).hexdigest()[:3]


def is_managed_href(href: str, collection: str, item_id: str, asset_key: str | None = None) -> bool:
    """Whether ``href`` is the catalog's managed copy of an asset of ``item_id`` in ``collection``.

    The path ends ``<managed container>/<3 hex of sha256(item id)>/<item id>/<asset key>[.<ext>]``; the host is
    not checked (the managed account's name is the service's choice)."""
    try:
        segments = [unquote(s) for s in urlsplit(href).path.split("/") if s]
    except ValueError:  # not a URL (e.g. a malformed bracketed host)
        return False
    if len(segments) < 4:
        return False
    container, prefix, owner, name = segments[-4:]
    if (container, prefix, owner) != (managed_container(collection), _item_prefix(item_id), item_id):
        return False
    return asset_key is None or name == asset_key or name.startswith(f"{asset_key}.")


def _canonical_assets(assets: Any) -> Any:
    if not isinstance(assets, Mapping):
        return assets
    out: dict[str, Any] = {}
    for key, asset in assets.items():
        if not isinstance(asset, Mapping):
            out[key] = asset
            continue
        a = {k: v for k, v in asset.items() if not k.startswith(_SERVICE_PREFIXES)}
        if isinstance(a.get("href"), str):
            a["href"] = strip_sas(a["href"])
        alternates = a.get("alternate")
        if isinstance(alternates, Mapping):
            a["alternate"] = _canonical_assets(alternates)
        out[key] = a
    return out


def _canonical(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "links" or key.startswith(_SERVICE_PREFIXES):
            continue
        if key == "properties" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k != DIGEST_PROPERTY}
        elif key == "assets":
            value = _canonical_assets(value)
        out[key] = value
    return out


def content_digest(item: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the item's canonical JSON (sorted keys, compact), without service-owned fields,
    ``links``, the digest property itself and SAS parameters."""
    text = json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def with_digest(item: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``item`` whose ``properties`` carry its content digest (any older digest replaced)."""
    out = dict(item)
    props = item.get("properties")
    out["properties"] = {**(props if isinstance(props, Mapping) else {}), DIGEST_PROPERTY: content_digest(item)}
    return out


def _digest_of(item: Mapping[str, Any]) -> str | None:
    props = item.get("properties")
    value = props.get(DIGEST_PROPERTY) if isinstance(props, Mapping) else None
    return value if isinstance(value, str) else None


def _extension_names(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return value
    return sorted({_EXTENSION_VERSION.sub("/", v) for v in value})


def _same_href(stored: Any, submitted: Any, collection: str, item_id: str, key: str) -> bool:
    if not isinstance(stored, str) or not isinstance(submitted, str):
        return stored == submitted
    if strip_sas(stored) == strip_sas(submitted):
        return True
    return is_managed_href(stored, collection, item_id, key)


def _same_assets(stored: Any, submitted: Any, collection: str, item_id: str) -> bool:
    if not isinstance(stored, Mapping) or not isinstance(submitted, Mapping) or stored.keys() != submitted.keys():
        return stored == submitted
    for key, want in submitted.items():
        have = stored[key]
        if not isinstance(want, Mapping) or not isinstance(have, Mapping):
            if have != want:
                return False
            continue
        w = {k: v for k, v in want.items() if not k.startswith(_SERVICE_PREFIXES)}
        h = {k: v for k, v in have.items() if not k.startswith(_SERVICE_PREFIXES)}
        if w.keys() != h.keys() or not _same_href(h.get("href"), w.get("href"), collection, item_id, key):
            return False
        if any(h[k] != v for k, v in w.items() if k not in ("href", "alternate")):
            return False
        if "alternate" in w and _canonical_assets(h["alternate"]) != _canonical_assets(w["alternate"]):
            return False
    return True


def _equivalent(stored: Mapping[str, Any], submitted: Mapping[str, Any]) -> bool:
    collection = submitted.get("collection")
    item_id = submitted.get("id")
    if not isinstance(collection, str) or not isinstance(item_id, str):
        return _canonical(stored) == _canonical(submitted)
    for key, want in submitted.items():
        if key == "links" or key.startswith(_SERVICE_PREFIXES):
            continue
        have = stored.get(key)
        if key == "assets":
            if not _same_assets(have, want, collection, item_id):
                return False
        elif key == "stac_extensions":
            if _extension_names(have) != _extension_names(want):
                return False
        elif key == "properties" and isinstance(want, Mapping) and isinstance(have, Mapping):
            kept = {k: v for k, v in have.items() if not k.startswith(_SERVICE_PREFIXES) and k != DIGEST_PROPERTY}
            if kept != {k: v for k, v in want.items() if k != DIGEST_PROPERTY}:
                return False
        elif have != want:
            return False
    return True


def same_content(stored: Mapping[str, Any], submitted: Mapping[str, Any]) -> bool:
    """Whether the stored item is what ``submitted`` asked for.

    When both carry a digest, the digests decide (the service keeps ``properties`` as submitted). Otherwise
    (an item written by another tool, or digests turned off) the fields are compared with the service-owned
    ones relaxed, see the module docstring."""
    want, have = _digest_of(submitted), _digest_of(stored)
    if want is not None and have is not None:
        return have == want
    return _equivalent(stored, submitted)
