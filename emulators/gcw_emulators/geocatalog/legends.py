"""Map legends (``/data/legend/...``): class maps and interval maps as JSON, colour maps as a horizontal PNG.

The colour maps are rio-tiler's (``rio_tiler.colormap.cmap``: matplotlib's ``viridis``, ``rdylgn``... as 256-entry
RGBA tables). The class and interval maps are Planetary Computer's own; the emulator carries the two Microsoft's
tests and samples read, with the values the live service answered (recordings ``test_06 ... get_class_map_legend``
and ``... get_interval_legend``).
"""

from __future__ import annotations

import numpy as np
from rio_tiler.colormap import cmap
from rio_tiler.errors import InvalidColorMapName
from rio_tiler.utils import render

from gcw_emulators.geocatalog.errors import ApiError

RGBA = tuple[int, int, int, int]
# Monitoring Trends in Burn Severity: 0 no data, 1 unburned to low ... 4 high, 5 increased greenness, 6 non-mapping
CLASS_MAPS: dict[str, dict[str, RGBA]] = {
    "mtbs-severity": {
        "0": (0, 0, 0, 0),
        "1": (0, 100, 0, 255),
        "2": (127, 255, 212, 255),
        "3": (255, 255, 0, 255),
        "4": (255, 0, 0, 255),
        "5": (127, 255, 0, 255),
        "6": (255, 255, 255, 255),
    },
}
# MODIS burned area (MCD64A1): burn day of year in monthly intervals, RGBA as hex; [-2, 0] no burn / unmapped
_MODIS_64A1 = [(-2, 0, "00000000"), (1, 32, "ffffb2ff"), (32, 60, "ffec93ff"), (60, 91, "feda73ff")]
_MODIS_64A1 += [(91, 121, "fec659ff"), (121, 152, "feaf4dff"), (152, 182, "fd9842ff"), (182, 213, "fb7e37ff")]
_MODIS_64A1 += [(213, 244, "f6602dff"), (244, 274, "f14223ff"), (274, 305, "e22b22ff"), (305, 335, "d01524ff")]
_MODIS_64A1 += [(335, 366, "bd0026ff")]


def _rgba(hex_colour: str) -> RGBA:
    r, g, b, a = (int(hex_colour[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


INTERVAL_MAPS: dict[str, list[tuple[tuple[int, int], RGBA]]] = {
    "modis-64A1": [((low, high), _rgba(colour)) for low, high, colour in _MODIS_64A1],
}


def class_map(name: str) -> dict[str, list[int]]:
    found = CLASS_MAPS.get(name)
    if found is None:
        raise ApiError(404, "NotFound", f"classmapName: unknown class map {name!r} (known: {', '.join(CLASS_MAPS)})")
    return {value: list(colour) for value, colour in found.items()}


def interval_map(name: str) -> list[list[list[int]]]:
    found = INTERVAL_MAPS.get(name)
    if found is None:
        known = ", ".join(INTERVAL_MAPS)
        raise ApiError(404, "NotFound", f"classmapName: unknown interval map {name!r} (known: {known})")
    return [[list(bounds), list(colour)] for bounds, colour in found]


def _size(raw: str | None, default: int, name: str) -> int:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "InvalidInputData", f"{name}: {raw!r} is not a number", name) from None
    if not 1 <= value <= 4096:
        raise ApiError(400, "InvalidInputData", f"{name}: must be 1..4096 pixels", name)
    return int(value)


def _trim(raw: str | None, name: str) -> int:
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "InvalidInputData", f"{name}: {raw!r} is not an integer", name) from None
    if not 0 <= value < 128:
        raise ApiError(400, "InvalidInputData", f"{name}: must be 0..127 colour entries", name)
    return value


def colormap_png(
    name: str,
    width: str | None = None,
    height: str | None = None,
    trim_start: str | None = None,
    trim_end: str | None = None,
) -> bytes:
    """The colour map ``name`` as a horizontal RGBA PNG ramp (``width`` x ``height`` pixels, default 256 x 20);
    ``trim_start``/``trim_end`` drop entries from either end of the 256-entry table."""
    try:
        table = cmap.get(name.lower())
    except InvalidColorMapName:
        raise ApiError(404, "NotFound", f"colorMapName: unknown colour map {name!r}", "colorMapName") from None
    w, h = _size(width, 256, "width"), _size(height, 20, "height")
    start, end = _trim(trim_start, "trim_start"), _trim(trim_end, "trim_end")
    keys = sorted(table)[start : len(table) - end]
    colours = np.array([table[k] for k in keys], dtype="uint8")  # (n, 4)
    columns = colours[np.linspace(0, len(colours) - 1, w).round().astype(int)]  # (w, 4)
    rgba = np.repeat(columns[None, :, :], h, axis=0).transpose(2, 0, 1)  # (4, h, w)
    return render(rgba[:3], mask=rgba[3], img_format="PNG")
