"""STAC shape checks done synchronously (400 + Azure error shape), each naming the field and the reason.

Where the service's rules are unknown or contradictory the stricter rule is used (docs/emulator-geocatalog.md).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from gcw_emulators.geocatalog.errors import ApiError, invalid

ITEM_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # DOC-LIM 1-64 chars, stricter than DOC-TRB (< 150, + , ( ))
ASSET_KEY = re.compile(r"^[A-Za-z0-9_\-+,().:]{1,255}$")
COLLECTION_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_ITEM_BYTES = 1024 * 1024
MAX_ASSETS = 100
GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}


def check_collection_id(collection_id: str) -> None:
    if not COLLECTION_ID.match(collection_id):
        raise invalid(
            f"collection id {collection_id!r} must be 1-64 characters of letters, digits, '-', '_' or '.'",
            "collectionId",
            code="InvalidInputData",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_position(pos: Any, where: str) -> None:
    if not isinstance(pos, list) or len(pos) not in (2, 3) or not all(_is_number(v) for v in pos):
        raise invalid("a position must be [longitude, latitude] or [longitude, latitude, height] numbers", where)
    if not -180 <= pos[0] <= 180 or not -90 <= pos[1] <= 90:
        raise invalid(f"position {pos} is outside longitude -180..180 / latitude -90..90", where)


def _check_ring(ring: Any, where: str) -> None:
    if not isinstance(ring, list) or len(ring) < 4:
        raise invalid("a polygon ring needs at least 4 positions", where)
    for i, pos in enumerate(ring):
        _check_position(pos, f"{where}[{i}]")
    if ring[0] != ring[-1]:
        raise invalid("a polygon ring must be closed (first position == last position)", where)


def check_geometry(geom: Any, where: str) -> None:
    if not isinstance(geom, dict):
        raise invalid("must be a GeoJSON geometry object", where)
    gtype = geom.get("type")
    if gtype == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list) or not parts:
            raise invalid("a GeometryCollection needs a non-empty 'geometries' array", f"{where}.geometries")
        for i, part in enumerate(parts):
            check_geometry(part, f"{where}.geometries[{i}]")
        return
    if gtype not in GEOMETRY_TYPES:
        raise invalid(f"unknown geometry type {gtype!r}", f"{where}.type")
    coords = geom.get("coordinates")
    cw = f"{where}.coordinates"
    if gtype == "Point":
        _check_position(coords, cw)
        return
    if not isinstance(coords, list) or not coords:
        raise invalid("must be a non-empty array", cw)
    if gtype in ("MultiPoint", "LineString"):
        if gtype == "LineString" and len(coords) < 2:
            raise invalid("a LineString needs at least 2 positions", cw)
        for i, pos in enumerate(coords):
            _check_position(pos, f"{cw}[{i}]")
    elif gtype == "MultiLineString":
        for i, line in enumerate(coords):
            if not isinstance(line, list) or len(line) < 2:
                raise invalid("a LineString needs at least 2 positions", f"{cw}[{i}]")
            for j, pos in enumerate(line):
                _check_position(pos, f"{cw}[{i}][{j}]")
    elif gtype == "Polygon":
        for i, ring in enumerate(coords):
            _check_ring(ring, f"{cw}[{i}]")
    else:  # MultiPolygon
        for i, poly in enumerate(coords):
            if not isinstance(poly, list) or not poly:
                raise invalid("a polygon needs at least one ring", f"{cw}[{i}]")
            for j, ring in enumerate(poly):
                _check_ring(ring, f"{cw}[{i}][{j}]")


def check_bbox(bbox: Any, where: str) -> None:
    if not isinstance(bbox, list) or len(bbox) not in (4, 6) or not all(_is_number(v) for v in bbox):
        raise invalid("must be an array of 4 (or 6) numbers", where)
    half = len(bbox) // 2
    west, south, east, north = bbox[0], bbox[1], bbox[half], bbox[half + 1]
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise invalid(f"{bbox} is outside longitude -180..180 / latitude -90..90", where)
    if south > north:
        raise invalid(f"south ({south}) is greater than north ({north})", where)


def parse_datetime(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise invalid("must be an RFC 3339 date-time string", where)
    text = value.replace("z", "Z")
    if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text):
        raise invalid(f"{value!r} is not an RFC 3339 date-time (e.g. 2023-01-01T00:00:00Z)", where)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{value!r} is not a valid date-time", where) from None


def check_properties(props: Any, where: str) -> None:
    if not isinstance(props, dict):
        raise invalid("must be an object", where)
    if "datetime" not in props:
        raise invalid("'datetime' is required (null only with start_datetime and end_datetime)", f"{where}.datetime")
    if props["datetime"] is None:
        if "start_datetime" not in props or "end_datetime" not in props:
            raise invalid("is null, so start_datetime and end_datetime are required", f"{where}.datetime")
    else:
        parse_datetime(props["datetime"], f"{where}.datetime")
    start = end = None
    if "start_datetime" in props:
        start = parse_datetime(props["start_datetime"], f"{where}.start_datetime")
    if "end_datetime" in props:
        end = parse_datetime(props["end_datetime"], f"{where}.end_datetime")
    if start and end and start > end:
        raise invalid("start_datetime is after end_datetime", f"{where}.start_datetime")


def check_assets(assets: Any, where: str) -> None:
    if not isinstance(assets, dict):
        raise invalid("must be an object of asset key -> asset", where)
    if len(assets) > MAX_ASSETS:
        raise invalid(f"has {len(assets)} assets; at most {MAX_ASSETS} are allowed", where, code="TotalAssetsExceeded")
    for key, asset in assets.items():
        if not ASSET_KEY.match(key):
            raise invalid("asset keys use letters, digits and - _ + , ( ) . : (1-255 chars)", f"{where}.{key}")
        if not isinstance(asset, dict):
            raise invalid("must be an object", f"{where}.{key}")
        href = asset.get("href")
        if not isinstance(href, str) or not href.strip():
            raise invalid("'href' is required and must be a non-empty string", f"{where}.{key}.href")
        if not re.match(r"^(https?|s3)://[^\s/]+", href):
            raise invalid("must be an absolute http(s) or s3 URL", f"{where}.{key}.href", code="InvalidAssetHref")


def check_item(item: Any, collection_id: str, where: str = "item", item_id: str | None = None) -> None:
    """Validate one STAC Item for ``collection_id`` (and, for PUT, the path's ``item_id``)."""
    if not isinstance(item, dict):
        raise invalid("must be a STAC Item object", where)
    if item.get("type") != "Feature":
        raise invalid(f"'type' must be 'Feature', got {item.get('type')!r}", f"{where}.type")
    iid = item.get("id")
    if not isinstance(iid, str) or not ITEM_ID.match(iid):
        raise invalid(
            f"{iid!r} is not a valid item id (1-64 characters of letters, digits, '-', '_', '.')", f"{where}.id"
        )
    if item_id is not None and iid != item_id:
        raise invalid(f"body id {iid!r} does not match the item id {item_id!r} in the path", f"{where}.id")
    coll = item.get("collection")
    if coll != collection_id:
        raise invalid(f"must equal the target collection {collection_id!r}, got {coll!r}", f"{where}.collection")
    if "geometry" not in item:
        raise invalid("is required", f"{where}.geometry")
    check_geometry(item["geometry"], f"{where}.geometry")
    if "bbox" not in item:
        raise invalid("is required", f"{where}.bbox")
    check_bbox(item["bbox"], f"{where}.bbox")
    check_properties(item.get("properties"), f"{where}.properties")
    if "assets" not in item:
        raise invalid("is required", f"{where}.assets")
    check_assets(item["assets"], f"{where}.assets")
    for key in ("links", "stac_extensions"):
        if key in item and not isinstance(item[key], list):
            raise invalid("must be an array", f"{where}.{key}")
    size = len(json.dumps(item, separators=(",", ":")).encode())
    if size > MAX_ITEM_BYTES:
        raise ApiError(
            400,
            "ItemSizeExceeded",
            f"{where}: item {iid!r} is {size} bytes; the maximum allowed size is 1 MB ({MAX_ITEM_BYTES} bytes)",
            target=where,
        )


def items_from_body(body: Any, collection_id: str, max_items: int) -> list[dict[str, Any]]:
    """The items of a POST body (an Item or an ItemCollection), each validated."""
    if not isinstance(body, dict):
        raise invalid("the body must be a STAC Item or ItemCollection object", "body")
    btype = body.get("type")
    if btype == "Feature":
        check_item(body, collection_id)
        return [body]
    if btype != "FeatureCollection":
        raise invalid(f"'type' must be 'Feature' or 'FeatureCollection', got {btype!r}", "type")
    features = body.get("features")
    if not isinstance(features, list) or not features:
        raise invalid("must be a non-empty array of STAC Items", "features")
    if len(features) > max_items:
        raise ApiError(
            400,
            "PostItemCollectionSizeExceeded",
            f"features: {len(features)} items exceed the emulator's limit of {max_items} per POST",
            target="features",
        )
    seen: set[str] = set()
    for i, feature in enumerate(features):
        check_item(feature, collection_id, where=f"features[{i}]")
        if feature["id"] in seen:
            raise invalid(f"item id {feature['id']!r} appears more than once in the batch", f"features[{i}].id")
        seen.add(feature["id"])
    return features
