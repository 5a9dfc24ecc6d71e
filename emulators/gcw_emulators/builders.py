"""The one builder of small STAC items and worker request bodies, shared by tests, the demo and the benchmarks.

``stac_item("a", "c1")`` is a valid STAC 1.0.0 Item with one asset; keywords change what a caller cares about
(the asset href and media type, the geometry, the datetime, extra properties, any other top-level field) and the
bbox always follows the geometry. ``ingest_request`` and ``delete_request`` wrap items or ids in a request body
as described in docs/messages.md.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

POINT = {"type": "Point", "coordinates": [10.0, 50.0]}
UNIT_SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
DATETIME = "2024-05-01T10:00:00Z"


def point(lon: float, lat: float) -> dict[str, Any]:
    """A GeoJSON Point."""
    return {"type": "Point", "coordinates": [lon, lat]}


def _positions(coordinates: Any) -> Iterator[Sequence[float]]:
    if coordinates and isinstance(coordinates[0], int | float):
        yield coordinates
        return
    for inner in coordinates:
        yield from _positions(inner)


def bbox_of(geometry: Mapping[str, Any]) -> list[float]:
    """The 2D bbox ``[west, south, east, north]`` of a GeoJSON geometry (no antimeridian handling)."""
    positions = list(_positions(geometry["coordinates"]))
    lons = [p[0] for p in positions]
    lats = [p[1] for p in positions]
    return [min(lons), min(lats), max(lons), max(lats)]


def stac_item(
    item_id: str,
    collection: str | None = None,
    *,
    href: str | None = None,
    asset_type: str | None = None,
    geometry: Mapping[str, Any] = POINT,
    datetime: str = DATETIME,
    properties: Mapping[str, Any] | None = None,
    links: Sequence[Mapping[str, Any]] | None = (),
    **extra: Any,
) -> dict[str, Any]:
    """A small valid STAC Item with one asset (``data``).

    ``href`` defaults to ``https://example.com/<collection>/<item_id>.tif``; ``asset_type`` adds the asset's
    media type; ``properties`` are added next to ``datetime``; ``links=None`` leaves ``links`` out; ``extra``
    sets any other top-level field (``stac_extensions=[...]``, or a value that replaces a built one).
    """
    asset: dict[str, Any] = {"href": href or f"https://example.com/{collection}/{item_id}.tif"}
    if asset_type is not None:
        asset["type"] = asset_type
    item: dict[str, Any] = {"type": "Feature", "stac_version": "1.0.0", "id": item_id}
    if collection is not None:
        item["collection"] = collection
    item["geometry"] = copy.deepcopy(dict(geometry))
    item["bbox"] = bbox_of(geometry)
    item["properties"] = {"datetime": datetime, **(properties or {})}
    item["assets"] = {"data": asset}
    if links is not None:
        item["links"] = copy.deepcopy([dict(link) for link in links])
    item.update(extra)
    return item


def ingest_request(collection: str, items: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """An ``ingest`` request body (version 1); ``extra`` adds top-level fields (``item_urls``, ``reply_to``...)."""
    return {"version": 1, "action": "ingest", "collection": collection, "items": list(items), **extra}


def delete_request(collection: str, item_ids: Sequence[str]) -> dict[str, Any]:
    """A ``delete`` request body (version 1)."""
    return {"version": 1, "action": "delete", "collection": collection, "item_ids": list(item_ids)}
