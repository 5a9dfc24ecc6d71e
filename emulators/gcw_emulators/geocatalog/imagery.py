"""Small but real NAIP-like imagery for the emulator's tiler: a Cloud Optimized GeoTIFF written with rasterio.

NAIP quarter-quads (the ``naip-atl`` items of Microsoft's recordings, e.g. ``ga_m_3308421_se_16_060_20211114``) are
4-band (red, green, blue, near-infrared) ``uint8`` COGs in UTM (EPSG:26916 for Atlanta) at 0.6 m. ``naip_cog``
writes the same kind of file over an item's WGS84 bbox at a coarse resolution (``size`` pixels on the longer side,
512 by default: tens of kilobytes) so tiles, crops, points and statistics are computed from real pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import MemoryFile
from rasterio.shutil import copy as copy_dataset
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds

if TYPE_CHECKING:
    from gcw_emulators.geocatalog.server import GeoCatalogEmulator

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
NAIP_CRS = "EPSG:26916"  # NAD83 / UTM zone 16N, the CRS of the Atlanta quarter-quads


def _landscape(height: int, width: int, seed: int) -> np.ndarray:
    """Four uint8 bands of smooth fields, roads and water: varied values so statistics and histograms are real."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype("float32")
    base = np.zeros((height, width), dtype="float32")
    for _ in range(6):  # a few overlapping waves of different directions and wavelengths
        fx, fy, phase = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 2 * np.pi)
        base += np.sin(xx * fx + yy * fy + phase)
    base = (base - base.min()) / max(float(np.ptp(base)), 1e-6)
    # field-sized texture (8x8 pixel parcels), not per-pixel noise: the file stays small once compressed
    parcels = rng.normal(0, 0.05, size=(height // 8 + 1, width // 8 + 1)).astype("float32")
    noise = np.kron(parcels, np.ones((8, 8), dtype="float32"))[:height, :width]
    water = base < 0.18
    road = (np.abs((xx + yy * 0.3) % 97 - 48) < 1.5) | (np.abs(yy % 131 - 65) < 1.2)
    red = 40 + 170 * base + 255 * noise
    green = 60 + 150 * (1 - np.abs(base - 0.5)) + 255 * noise
    blue = 50 + 120 * base + 255 * noise
    nir = 20 + 220 * (1 - base) + 255 * noise  # vegetation (low base) is bright in the near infrared
    bands = np.stack([red, green, blue, nir])
    bands[:, water] = np.array([30, 60, 90, 12], dtype="float32")[:, None]
    bands[:, road & ~water] = np.array([170, 168, 165, 120], dtype="float32")[:, None]
    return np.clip(bands, 1, 254).astype("uint8")


def naip_cog(bbox: tuple[float, float, float, float] | list[float], *, size: int = 512, seed: int = 0) -> bytes:
    """A 4-band uint8 COG in EPSG:26916 covering the WGS84 ``bbox`` (west, south, east, north).

    ``size`` is the longer side in pixels; the COG has internal 256x256 tiles and overviews, like NAIP's.
    """
    west, south, east, north = (float(v) for v in bbox)
    if not (west < east and south < north):
        raise ValueError(f"bbox: {list(bbox)} is not west < east and south < north")
    if not 16 <= size <= 4096:
        raise ValueError(f"size: {size} must be 16..4096 pixels")
    left, bottom, right, top = transform_bounds("EPSG:4326", NAIP_CRS, west, south, east, north)
    scale = size / max(right - left, top - bottom)
    width, height = max(1, round((right - left) * scale)), max(1, round((top - bottom) * scale))
    profile = {
        "driver": "GTiff",
        "count": 4,
        "dtype": "uint8",
        "width": width,
        "height": height,
        "crs": NAIP_CRS,
        "transform": from_bounds(left, bottom, right, top, width, height),
    }
    with MemoryFile() as source:
        with source.open(**profile) as dst:
            dst.write(_landscape(height, width, seed))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
            levels = [f for f in (2, 4, 8, 16, 32) if max(width, height) // f >= 64]
            dst.build_overviews(levels, Resampling.average)
        # a COG by layout: tiled, overviews copied after the full-resolution image, band 4 "undefined" (not alpha)
        with source.open() as src, MemoryFile() as out:
            copy_dataset(
                src,
                out.name,
                driver="GTiff",
                tiled=True,
                blockxsize=256,
                blockysize=256,
                compress="DEFLATE",
                predictor=2,
                photometric="RGB",
                alpha="UNSPECIFIED",
                copy_src_overviews=True,
            )
            return bytes(out.read())


NAIP_BANDS = [
    {"name": "Red", "common_name": "red"},
    {"name": "Green", "common_name": "green"},
    {"name": "Blue", "common_name": "blue"},
    {"name": "NIR", "common_name": "nir", "description": "near-infrared"},
]


def naip_item(collection_id: str, item_id: str, bbox: Sequence[float], when: str) -> dict[str, Any]:
    """A minimal NAIP-like STAC item over ``bbox`` (WGS84), without assets."""
    west, south, east, north = (float(v) for v in bbox)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection_id,
        "bbox": [west, south, east, north],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": when, "gsd": 0.6, "proj:epsg": 26916},
        "assets": {},
        "links": [],
    }


def seed_imagery(
    emulator: GeoCatalogEmulator,
    collection_id: str,
    item: dict[str, Any],
    *,
    asset_key: str = "image",
    size: int = 512,
    seed: int = 0,
) -> dict[str, Any]:
    """Store ``item`` in ``collection_id`` now with a real NAIP-like COG (over the item's bbox) as its
    ``asset_key`` asset, copied into managed storage as an ingestion copies it; returns the stored item.

    The COG is put on the emulator's own blob store (account ``emulator``, container ``imagery``) first, so the
    item's href is an emulator URL like any ingested asset's source."""
    bbox = item.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"item {item.get('id')!r}: a 4-number bbox is required to place its imagery")
    data = naip_cog(bbox, size=size, seed=seed)
    href = emulator.put_blob(
        f"{collection_id}/{item['id']}/{asset_key}.tif", data, container="imagery", content_type=COG_MEDIA_TYPE
    )
    asset = {"href": href, "type": COG_MEDIA_TYPE, "roles": ["data"], "title": "RGBIR COG tile", "eo:bands": NAIP_BANDS}
    doc = {**item, "assets": {**(item.get("assets") or {}), asset_key: asset}}
    return emulator.catalog.add_item_now(collection_id, doc)
