"""The data API (``/data/...``): a titiler-pgstac style tiler over the emulator's own items and blob store.

Item routes (``/data/mosaic/collections/{c}/items/{i}/...``) read the item's raster assets with rio-tiler's
``STACReader``; mosaic routes (``/data/mosaic/searches/{id}/...`` after ``POST /data/mosaic/register``, and
``/data/mosaic/collections/{c}/...`` for a whole collection) run the search over the catalog and mosaic the items
with ``rio_tiler.mosaic.mosaic_reader`` (first item wins). Asset bytes come from the blob store
(``Catalog.asset_bytes``: the managed-storage copy made at ingestion); they are opened as in-memory GDAL files, so
no read ever leaves the process. An asset without raster bytes there (the placeholder the emulator stores for an
external href it cannot copy) is not offered; asking for it is a 404 naming it.

Query parameters keep titiler's names (``assets``, ``asset_bidx`` as ``image|1,2,3``, ``expression``, ``rescale``,
``colormap_name``, ``colormap``, ``color_formula``, ``nodata``, ``resampling``, ``return_mask``, ``buffer``,
``padding``, ``width``/``height``/``max_size``, ``coord-crs``/``dst_crs``); response shapes follow Microsoft's
recordings (docs/emulator-geocatalog.md "Sources").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import morecantile
import structlog
from aiohttp import web
from morecantile import TileMatrixSet
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rio_tiler.colormap import cmap as colormaps
from rio_tiler.errors import (
    EmptyMosaicError,
    InvalidAssetName,
    InvalidColorMapName,
    InvalidExpression,
    MissingAssets,
    NoAssetFoundError,
    PointOutsideBounds,
    RioTilerError,
    TileOutsideBounds,
)
from rio_tiler.io import Reader, STACReader
from rio_tiler.io.stac import DEFAULT_VALID_TYPE
from rio_tiler.models import ImageData, PointData
from rio_tiler.mosaic import mosaic_reader

from gcw_emulators.geocatalog import legends, search
from gcw_emulators.geocatalog.catalog import parse_interval
from gcw_emulators.geocatalog.errors import ApiError

if TYPE_CHECKING:
    from gcw_emulators.geocatalog.app import GeoCatalogApp

log = structlog.get_logger(__name__)
WGS84 = CRS.from_epsg(4326)
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
WGS84_URI = "http://www.opengis.net/def/crs/EPSG/0/4326"
# format -> (GDAL driver, media type); titiler's ImageType
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", "image/png"),
    "pngraw": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
    "jpg": ("JPEG", "image/jpg"),
    "webp": ("WEBP", "image/webp"),
    "tif": ("GTiff", "image/tiff; application=geotiff"),
    "jp2": ("JP2OpenJPEG", "image/jp2"),
    "npy": ("NPY", "application/x-binary"),
}
UNSUPPORTED = ("algorithm", "algorithm_params", "subdataset_name", "subdataset_bands", "sel", "sel_method")
TILE = re.compile(r"^(?P<y>\d+(?:\.0+)?)(?:@(?P<scale>\d+(?:\.0+)?)x)?(?:\.(?P<format>\w+))?$")
SIZE = re.compile(r"^(?P<width>\d+)x(?P<height>\d+)\.(?P<format>\w+)$")
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
BBOX = re.compile(rf"^(?P<coords>{NUMBER}(?:,{NUMBER}){{3}})(?:\.(?P<format>\w+))?$")
POINT = re.compile(rf"^(?P<lon>{NUMBER}),(?P<lat>{NUMBER})$")


def _json(body: Any, content_type: str = "application/json") -> web.Response:
    """JSON with exactly this Content-Type (the service sends no charset: recordings of test_04, test_05)."""
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), headers={"Content-Type": content_type})


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "InvalidInputData", f"{field}: {message}", field)


# ---------------------------------------------------------------------------------------------------- rasters
class Rasters:
    """Asset bytes opened as in-memory GDAL files (``/vsimem/...``), the most recent ``capacity`` kept open."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._files: OrderedDict[str, MemoryFile] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, data: bytes) -> str:
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        with self._lock:
            found = self._files.get(digest)
            if found is None:
                found = MemoryFile(data, ext=".tif")
                self._files[digest] = found
                while len(self._files) > self.capacity:
                    self._files.popitem(last=False)[1].close()
            self._files.move_to_end(digest)
            return found.name


def _is_raster(asset: dict[str, Any], data: bytes) -> bool:
    media = str(asset.get("type") or "")
    tiff = data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    return tiff and (not media or media in DEFAULT_VALID_TYPE or media.startswith("image/tiff"))


# ---------------------------------------------------------------------------------------------------- parameters
class Params:
    """The titiler query parameters of one request, validated (a 400 naming the parameter otherwise)."""

    def __init__(self, query: Any) -> None:
        self.query = query
        for name in UNSUPPORTED:
            if name in query:
                raise _bad(name, "not supported by the emulator's tiler")
        self.assets: list[str] = [a for raw in query.getall("assets", []) for a in raw.split(",") if a]
        self.bidx = self._asset_bidx(query.getall("asset_bidx", []))
        self.expression: str | None = query.get("expression") or None
        self.asset_as_band = self._bool("asset_as_band")
        self.nodata = self._nodata(query.get("nodata"))
        self.unscale = self._bool("unscale")
        self.resampling = query.get("resampling") or None
        self.reproject = query.get("reproject") or None
        self.buffer = self._float("buffer")
        self.padding = self._int("padding")
        self.rescale = [self._range(raw) for raw in query.getall("rescale", [])]
        self.color_formula: str | None = query.get("color_formula") or None
        self.colormap = self._colormap(query.get("colormap_name"), query.get("colormap"))
        self.return_mask = query.get("return_mask", "true").lower() != "false"

    def _bool(self, name: str) -> bool:
        raw = self.query.get(name)
        if raw is None:
            return False
        if raw.lower() not in ("true", "false"):
            raise _bad(name, f"{raw!r} is not true or false")
        return raw.lower() == "true"

    def _float(self, name: str) -> float | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise _bad(name, f"{raw!r} is not a number") from None

    def _int(self, name: str) -> int | None:
        value = self._float(name)
        if value is None:
            return None
        if value != int(value) or value < 0:
            raise _bad(name, f"{value:g} is not a non-negative integer")
        return int(value)

    @staticmethod
    def _nodata(raw: str | None) -> float | None:
        if raw is None or raw == "":
            return None
        try:
            return float(raw)  # "nan" and "inf" too
        except ValueError:
            raise _bad("nodata", f"{raw!r} is not a number") from None

    @staticmethod
    def _range(raw: str) -> tuple[float, float]:
        try:
            low, high = (float(v) for v in raw.split(","))
        except ValueError:
            raise _bad("rescale", f"{raw!r} is not 'min,max'") from None
        return low, high

    @staticmethod
    def _asset_bidx(values: Sequence[str]) -> dict[str, list[int]]:
        """``image|1,2,3`` (the SDK joins several with commas: ``image|1,2,nir|1``) -> {"image": [1, 2, 3]}."""
        out: dict[str, list[int]] = {}
        current: str | None = None
        for token in (t.strip() for raw in values for t in raw.split(",")):
            if not token:
                continue
            if "|" in token:
                current, _, token = token.partition("|")
                out[current] = []
            if current is None or not token.isdigit() or int(token) < 1:
                raise _bad("asset_bidx", f"{','.join(values)!r} is not 'asset|1,2,3'")
            out[current].append(int(token))
        return out

    @staticmethod
    def _colormap(name: str | None, raw: str | None) -> dict[Any, Any] | None:
        if name and raw:
            raise _bad("colormap", "give colormap_name or colormap, not both")
        if name:
            try:
                return colormaps.get(name.lower())
            except InvalidColorMapName:
                raise _bad("colormap_name", f"unknown colour map {name!r}") from None
        if raw:
            try:
                parsed = json.loads(raw)
                return {int(k): tuple(v) for k, v in parsed.items()}
            except (ValueError, TypeError, AttributeError):
                raise _bad("colormap", "not a JSON object of value -> [r, g, b, a]") from None
        return None

    def asset_list(self, default: Sequence[str]) -> list[Any]:
        names = self.assets or ([] if self.expression else list(default))
        unknown = [name for name in self.bidx if name not in names]
        if unknown:
            raise _bad("asset_bidx", f"asset(s) {', '.join(unknown)} are not in assets")
        return [{"name": n, "indexes": self.bidx[n]} if n in self.bidx else n for n in names]

    def read_options(self, image: bool = True) -> dict[str, Any]:
        """Options of rio-tiler's reads; ``image`` for those returning an image (tile, part, preview, feature)."""
        opts: dict[str, Any] = {"asset_as_band": self.asset_as_band} if image else {}
        if self.expression:
            opts["expression"] = self.expression
        if self.nodata is not None:
            opts["nodata"] = self.nodata
        if self.unscale:
            opts["unscale"] = True
        if self.resampling:
            opts["resampling_method"] = self.resampling
        if self.reproject:
            opts["reproject_method"] = self.reproject
        return opts

    def tile_options(self) -> dict[str, Any]:
        opts = self.read_options()
        if self.buffer is not None:
            opts["buffer"] = self.buffer
        if self.padding is not None:
            opts["padding"] = self.padding
        return opts

    def render(self, image: ImageData, fmt: str | None) -> web.Response:
        if self.rescale:
            image.rescale(in_range=self.rescale)
        if self.color_formula:
            image.apply_color_formula(self.color_formula)
        if fmt is None:  # titiler: JPEG when every pixel is valid, PNG (with its mask) otherwise
            fmt = "jpeg" if image.mask.all() else "png"
        driver, media = FORMATS[fmt]
        add_mask = self.return_mask and driver not in ("JPEG", "NPY")
        content = image.render(img_format=driver, colormap=self.colormap, add_mask=add_mask)
        return web.Response(body=content, headers={"Content-Type": media})


def _format(raw: str | None, field: str = "format") -> str | None:
    if raw is None:
        return None
    fmt = raw.lower()
    if fmt not in FORMATS:
        raise _bad(field, f"{raw!r} is not one of {', '.join(FORMATS)}")
    return fmt


def _int_path(raw: str, field: str) -> int:
    try:
        value = float(raw)
    except ValueError:
        raise _bad(field, f"{raw!r} is not a number") from None
    if value != int(value) or value < 0:
        raise _bad(field, f"{raw!r} is not a non-negative integer")
    return int(value)


def _tms(tms_id: str) -> TileMatrixSet:
    try:
        return morecantile.tms.get(tms_id)
    except morecantile.errors.InvalidIdentifier:
        known = ", ".join(morecantile.tms.list())
        raise ApiError(
            404, "NotFound", f"tileMatrixSetId: unknown tile matrix set {tms_id!r} (known: {known})"
        ) from None


def _size_query(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, f"{raw!r} is not a number of pixels") from None
    if not 1 <= value <= 4096:
        raise _bad(name, "must be 1..4096 pixels")
    return int(value)


def _crs(query: Any, name: str) -> CRS | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return CRS.from_user_input(raw)
    except Exception:
        raise _bad(name, f"{raw!r} is not a coordinate reference system") from None


def _geometry(body: Any) -> dict[str, Any]:
    """The geometry of a GeoJSON Feature (or a bare geometry) in a request body."""
    if isinstance(body, dict) and body.get("type") == "Feature":
        body = body.get("geometry")
    if not isinstance(body, dict) or body.get("type") not in ("Polygon", "MultiPolygon"):
        raise _bad("body", "expected a GeoJSON Feature with a Polygon or MultiPolygon geometry")
    return body


def _geometry_bbox(geometry: dict[str, Any]) -> list[float]:
    coords: list[Any] = geometry.get("coordinates") or []
    points: list[Sequence[float]] = []
    stack = [coords]
    while stack:
        node = stack.pop()
        if node and isinstance(node[0], (int, float)):
            points.append(node)
        else:
            stack.extend(node)
    if not points:
        raise _bad("body", "the geometry has no coordinates")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _union(boxes: Sequence[Sequence[float]]) -> list[float]:
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _statistics(image: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    """Band statistics keyed ``{asset}_{band}`` (``image_b1``), as the service answers merged statistics."""
    stats = image.statistics(**options)
    names = dict(zip(image.band_names, image.band_descriptions, strict=False))
    return {names.get(band) or band: value.model_dump(mode="json") for band, value in stats.items()}


def _errors(exc: Exception) -> ApiError:
    if isinstance(exc, (TileOutsideBounds, PointOutsideBounds, NoAssetFoundError, EmptyMosaicError)):
        return ApiError(404, "NotFound", str(exc) or "no data for this request")
    if isinstance(exc, (InvalidAssetName, MissingAssets, InvalidExpression)):
        return ApiError(400, "InvalidInputData", str(exc))
    return ApiError(400, "InvalidInputData", f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------------- searches
class Searches:
    """Registered mosaic searches (``POST /data/mosaic/register``), by hash; in memory."""

    KEYS = ("collections", "ids", "bbox", "intersects", "datetime", "filter", "filter-lang", "sortby", "query")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._searches: dict[str, dict[str, Any]] = {}

    def register(self, body: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("body", "a search registration must be a JSON object")
        unknown = sorted(set(body) - {*self.KEYS, "metadata", "filter_lang", "sort_by"})
        if unknown:
            raise _bad(unknown[0], "not a search field (" + ", ".join(self.KEYS) + ")")
        query = {k: v for k, v in body.items() if k in self.KEYS and v is not None}
        if "filter" in query:  # validated now: a bad filter is a 400 at registration, as pgstac's is
            search.compile_filter(query["filter"], query.get("filter-lang"), default_lang="cql2-json")
        search.parse_sortby(query.get("sortby"))
        meta = {"type": "mosaic", **(body.get("metadata") or {}), **(metadata or {})}
        digest = hashlib.md5(
            json.dumps({"search": query, "metadata": meta}, sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()
        with self._lock:
            entry = self._searches.setdefault(digest, {"hash": digest, "search": query, "metadata": meta, "uses": 0})
        return entry

    def get(self, search_id: str) -> dict[str, Any]:
        with self._lock:
            entry = self._searches.get(search_id)
            if entry is None:
                raise ApiError(404, "NotFound", f"searchId: no registered search {search_id!r}", "searchId")
            entry["uses"] += 1
            entry["lastused"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return dict(entry)


def _where(query: dict[str, Any]) -> str:
    """pgstac's SQL-ish ``_where`` of a search (informational)."""
    parts = []
    if query.get("collections"):
        parts.append("collection IN (" + ", ".join(f"'{c}'" for c in query["collections"]) + ")")
    if query.get("ids"):
        parts.append("id IN (" + ", ".join(f"'{i}'" for i in query["ids"]) + ")")
    expr = search.compile_filter(query.get("filter"), query.get("filter-lang"), default_lang="cql2-json")
    if expr is not None:
        parts.append(f"({expr.to_text()})")
    return " AND ".join(parts) or " TRUE "


def _orderby(query: dict[str, Any]) -> str:
    keys = search.parse_sortby(query.get("sortby"))
    fields = [f"{k.field} {'DESC' if k.descending else 'ASC'}" for k in keys] or ["datetime DESC"]
    return ", ".join([*fields, "id DESC"] if all(k.field != "id" for k in keys) else fields)


# ---------------------------------------------------------------------------------------------------- the tiler
class Tiler:
    def __init__(self, app: GeoCatalogApp) -> None:
        self.app = app
        self.catalog = app.catalog
        self.rasters = Rasters()
        self.searches = Searches()

    # ------------------------------------------------------------ sources
    def _readable(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item with its raster assets' hrefs pointing at in-memory files; other assets dropped."""
        assets = {}
        for key, asset in (item.get("assets") or {}).items():
            if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
                continue
            data = self.catalog.asset_bytes(asset["href"])
            if data is not None and _is_raster(asset, data):
                assets[key] = {**asset, "href": self.rasters.path(data)}
        doc = {k: v for k, v in item.items() if k not in ("assets", "links")}
        doc.setdefault("type", "Feature")
        doc.setdefault("stac_version", "1.0.0")
        doc.setdefault("properties", {}).setdefault("datetime", None)
        return {**doc, "assets": assets, "links": []}

    def _check_assets(self, item: dict[str, Any], readable: dict[str, Any], params: Params) -> None:
        for name in params.assets:
            if name in readable["assets"]:
                continue
            if name in (item.get("assets") or {}):
                message = f"assets: asset {name!r} of item {item['id']!r} has no raster data in the emulator's storage"
            else:
                message = f"assets: item {item['id']!r} has no asset {name!r}"
            raise ApiError(404, "NotFound", message, "assets")

    def _item(self, request: web.Request, params: Params | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        item = self.catalog.get_item(request.match_info["collectionId"], request.match_info["itemId"])
        readable = self._readable(item)
        if params is not None:
            self._check_assets(item, readable, params)
        if not readable["assets"]:
            raise ApiError(404, "NotFound", f"item {item['id']!r} has no raster asset in the emulator's storage")
        return item, readable

    def _search_items(self, query: dict[str, Any], bbox: Sequence[float] | None = None) -> list[dict[str, Any]]:
        interval = None
        if query.get("datetime"):
            interval = parse_interval(str(query["datetime"]))
        items = self.catalog.find_items(query.get("collections"), ids=query.get("ids"), interval=interval)
        expressions = [
            search.compile_filter(query.get("filter"), query.get("filter-lang"), default_lang="cql2-json"),
            search.intersects_filter(query.get("intersects")),
        ]
        found = search.apply(items, expressions, search.parse_sortby(query.get("sortby")))
        if query.get("bbox"):
            found = [i for i in found if _bbox_intersects(i.get("bbox") or query["bbox"], query["bbox"])]
        if bbox is not None:
            found = [i for i in found if _bbox_intersects(i.get("bbox") or bbox, bbox)]
        return found

    def _mosaic_query(self, request: web.Request) -> dict[str, Any]:
        if "searchId" in request.match_info:
            return self.searches.get(request.match_info["searchId"])["search"]
        cid = request.match_info["collectionId"]
        self.catalog.get_collection(cid)
        return {"collections": [cid]}

    def _limit(self, request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raw = request.query.get("items_limit") or request.query.get("scan_limit")
        if raw is None:
            return items
        limit = _int_path(raw, "items_limit")
        return items[: max(limit, 1)]

    # ------------------------------------------------------------ reading
    @staticmethod
    async def _run(fn: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except ApiError:
            raise
        except (RioTilerError, ValueError, KeyError) as exc:
            raise _errors(exc) from None

    @staticmethod
    def _read_doc(
        doc: dict[str, Any], params: Params, method: str, tms: TileMatrixSet | None, *args: Any, **kwargs: Any
    ) -> ImageData:
        """``method`` (tile, part, feature, preview) of one item's assets (the first one unless ``assets``)."""
        with STACReader(None, item=doc, tms=tms or WEB_MERCATOR) as src:
            image: ImageData = getattr(src, method)(*args, assets=params.asset_list(src.assets[:1]), **kwargs)
            return image

    def _image_reader(
        self,
        request: web.Request,
        params: Params,
        area: Sequence[float],
        method: str,
        *args: Any,
        tms: TileMatrixSet | None = None,
        **kwargs: Any,
    ) -> Callable[[], ImageData]:
        """What reads the image of this request's source: its item, or the mosaic of the items over ``area``."""
        if "itemId" in request.match_info:
            _item, readable = self._item(request, params)
            return lambda: self._read_doc(readable, params, method, tms, *args, **kwargs)
        items = self._limit(request, self._search_items(self._mosaic_query(request), area))
        return lambda: self._mosaic(items, params, method, *args, tms=tms, **kwargs)

    def _mosaic(
        self,
        items: list[dict[str, Any]],
        params: Params,
        method: str,
        *args: Any,
        tms: TileMatrixSet | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """``method`` (tile, part, feature) over the items, first item first (pixel selection: first)."""
        readable = [r for r in (self._readable(i) for i in items) if r["assets"]]
        if not readable:
            raise ApiError(404, "NotFound", "no item of the mosaic with raster data covers this area")

        def read(doc: dict[str, Any], *a: Any, **kw: Any) -> ImageData:
            return self._read_doc(doc, params, method, tms, *a, **kw)

        image, _used = mosaic_reader(readable, read, *args, allowed_exceptions=(TileOutsideBounds,), **kwargs)
        return image

    # ------------------------------------------------------------ tile matrix sets, legends
    async def tile_matrix_sets(self, request: web.Request) -> web.Response:
        return _json(morecantile.tms.list())

    async def tile_matrix_set(self, request: web.Request) -> web.Response:
        tms = _tms(request.match_info["tileMatrixSetId"])
        return _json(tms.model_dump(exclude_none=True, mode="json"))

    async def class_map(self, request: web.Request) -> web.Response:
        return _json(legends.class_map(request.match_info["classmapName"]))

    async def interval_map(self, request: web.Request) -> web.Response:
        return _json(legends.interval_map(request.match_info["classmapName"]))

    async def colormap_legend(self, request: web.Request) -> web.Response:
        q = request.query
        png = legends.colormap_png(
            request.match_info["colorMapName"], q.get("width"), q.get("height"), q.get("trim_start"), q.get("trim_end")
        )
        return web.Response(body=png, headers={"Content-Type": "image/png"})

    # ------------------------------------------------------------ item metadata
    async def item_bounds(self, request: web.Request) -> web.Response:
        item = self.catalog.get_item(request.match_info["collectionId"], request.match_info["itemId"])
        return _json({"bounds": item.get("bbox") or _geometry_bbox(item["geometry"])})

    async def item_assets(self, request: web.Request) -> web.Response:
        _item, readable = self._item(request)
        return _json(list(readable["assets"]))

    @staticmethod
    def _info(readable: dict[str, Any], params: Params) -> dict[str, Any]:
        """Per asset: rio-tiler's Info with WGS84 bounds (as the service answers), without scales and offsets."""
        out = {}
        for name in params.assets or list(readable["assets"]):
            with Reader(readable["assets"][name]["href"]) as src:
                doc = src.info().model_dump(exclude_none=True, mode="json")
                doc["bounds"] = list(src.get_geographic_bounds(WGS84))
                doc["minzoom"], doc["maxzoom"] = src.minzoom, src.maxzoom
            doc["crs"] = WGS84_URI
            doc["band_descriptions"] = [[b, "" if d == b else d] for b, d in doc.get("band_descriptions", [])]
            doc.pop("scales", None)
            doc.pop("offsets", None)
            out[name] = doc
        return out

    async def item_info(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        _item, readable = self._item(request, params)
        return _json(await self._run(lambda: self._info(readable, params)))

    async def item_info_geojson(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        item, readable = self._item(request, params)
        info = await self._run(lambda: self._info(readable, params))
        west, south, east, north = (round(v, 6) for v in item.get("bbox") or _geometry_bbox(item["geometry"]))
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        body = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": info}
        return _json(body, content_type="application/geo+json")

    @staticmethod
    def _stats_options(query: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if query.get("categorical", "").lower() == "true":
            opts["categorical"] = True
        if "c" in query:
            opts["categories"] = [float(c) for c in query.getall("c")]
        if "p" in query:
            opts["percentiles"] = [int(p) for p in query.getall("p")]
        bins = query.get("histogram_bins")
        if bins:
            opts["hist_options"] = {"bins": int(bins) if bins.isdigit() else [float(b) for b in bins.split(",")]}
        max_size = _size_query(query, "max_size")
        opts["max_size"] = max_size or 1024
        return opts

    async def item_asset_statistics(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        _item, readable = self._item(request, params)
        opts = self._stats_options(request.query)

        def compute() -> dict[str, Any]:
            with STACReader(None, item=readable) as src:
                names = params.asset_list(src.assets)
                stats = src.statistics(assets=names, **opts, **params.read_options(image=False))
                return {
                    asset: {b: s.model_dump(mode="json") for b, s in bands.items()} for asset, bands in stats.items()
                }

        return _json(await self._run(compute))

    async def item_statistics(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        _item, readable = self._item(request, params)
        stats_opts = self._stats_options(request.query)
        max_size = stats_opts.pop("max_size")
        if request.method == "POST":
            body = await self.app._json_body(request, code="InvalidInputData")
            geometry = _geometry(body)

            def by_feature() -> dict[str, Any]:
                with STACReader(None, item=readable) as src:
                    names = params.asset_list(src.assets)
                    image = src.feature(geometry, assets=names, max_size=max_size, **params.read_options())
                return _statistics(image, stats_opts)

            stats = await self._run(by_feature)
            feature = body if body.get("type") == "Feature" else {"type": "Feature", "geometry": geometry}
            out = {
                "type": "Feature",
                "geometry": feature["geometry"],
                "properties": {**(feature.get("properties") or {}), "statistics": stats},
            }
            return _json(out, content_type="application/geo+json")

        def merged() -> dict[str, Any]:
            with STACReader(None, item=readable) as src:
                names = params.asset_list(src.assets)
                image = src.preview(assets=names, max_size=max_size, **params.read_options())
            return _statistics(image, stats_opts)

        return _json(await self._run(merged))

    # ------------------------------------------------------------ images (item and mosaics)
    def _tile_args(self, request: web.Request) -> tuple[TileMatrixSet, int, int, int, int, str | None]:
        tms = _tms(request.match_info.get("tileMatrixSetId", "WebMercatorQuad"))
        match = TILE.match(request.match_info["tile"])
        if match is None:
            raise _bad("y", f"{request.match_info['tile']!r} is not '{{y}}[@{{scale}}x][.{{format}}]'")
        z, x = _int_path(request.match_info["z"], "z"), _int_path(request.match_info["x"], "x")
        y = _int_path(match["y"], "y")
        scale = _int_path(match["scale"], "scale") if match["scale"] else 1
        if not 1 <= scale <= 4:
            raise _bad("scale", "must be 1..4")
        return tms, z, x, y, scale, _format(match["format"] or request.query.get("format"))

    async def tile(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        tms, z, x, y, scale, fmt = self._tile_args(request)
        opts = {"tilesize": 256 * scale, **params.tile_options()}
        area = list(tms.bounds(morecantile.Tile(x, y, z)))
        read = self._image_reader(request, params, area, "tile", x, y, z, tms=tms, **opts)
        return params.render(await self._run(read), fmt)

    def _dimensions(self, request: web.Request) -> dict[str, Any]:
        size = request.match_info.get("size")
        out: dict[str, Any] = {}
        if size is not None:
            match = SIZE.match(size)
            if match is None:
                raise _bad("width", f"{size!r} is not '{{width}}x{{height}}.{{format}}'")
            out["width"], out["height"] = int(match["width"]), int(match["height"])
        else:
            for name in ("width", "height"):
                value = _size_query(request.query, name)
                if value is not None:
                    out[name] = value
        max_size = _size_query(request.query, "max_size")
        out["max_size"] = None if ("width" in out or "height" in out) and max_size is None else (max_size or 1024)
        dst_crs = _crs(request.query, "dst_crs")
        if dst_crs is not None:
            out["dst_crs"] = dst_crs
        return out

    def _path_format(self, request: web.Request, suffix: str | None) -> str | None:
        size = request.match_info.get("size")
        if size is not None:
            match = SIZE.match(size)
            return _format(match["format"]) if match else None
        return _format(suffix or request.query.get("format"))

    async def preview(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        fmt = _format(request.match_info.get("format") or request.query.get("format"))
        dims = self._dimensions(request)
        read = self._image_reader(request, params, [], "preview", **dims, **params.read_options())
        return params.render(await self._run(read), fmt)

    async def bbox_crop(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        match = BBOX.match(request.match_info["coords"])
        if match is None:
            raise _bad("minx", f"{request.match_info['coords']!r} is not 'minx,miny,maxx,maxy[.format]'")
        bbox = [float(v) for v in match["coords"].split(",")]
        if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise _bad("minx", f"{bbox} is not minx < maxx and miny < maxy")
        fmt = self._path_format(request, match["format"])
        dims = self._dimensions(request)
        coord_crs = _crs(request.query, "coord-crs") or _crs(request.query, "coord_crs") or WGS84
        opts = {**dims, "bounds_crs": coord_crs, **params.read_options()}
        read = self._image_reader(request, params, bbox, "part", bbox, **opts)
        return params.render(await self._run(read), fmt)

    async def feature_crop(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        fmt = self._path_format(request, request.match_info.get("format"))
        dims = self._dimensions(request)
        body = await self.app._json_body(request, code="InvalidInputData")
        geometry = _geometry(body)
        opts = {**dims, **params.read_options()}
        read = self._image_reader(request, params, _geometry_bbox(geometry), "feature", geometry, **opts)
        return params.render(await self._run(read), fmt)

    def _lonlat(self, request: web.Request) -> tuple[float, float]:
        raw = request.match_info["coords"]
        match = POINT.match(raw)
        if match is None:
            raise _bad("longitude", f"{raw!r} is not '{{longitude}},{{latitude}}'")
        return float(match["lon"]), float(match["lat"])

    @staticmethod
    def _point_body(point: PointData, lon: float, lat: float) -> dict[str, Any]:
        values = [float(v) for v in point.data.tolist()]
        return {"coordinates": [lon, lat], "values": values, "band_names": list(point.band_descriptions)}

    async def point(self, request: web.Request) -> web.Response:
        params = Params(request.query)
        lon, lat = self._lonlat(request)
        coord_crs = _crs(request.query, "coord-crs") or _crs(request.query, "coord_crs") or WGS84
        opts = {"coord_crs": coord_crs, **params.read_options(image=False)}
        if "itemId" in request.match_info:
            _item, readable = self._item(request, params)
            candidates = [readable]
        else:
            found = self._search_items(self._mosaic_query(request), [lon, lat, lon, lat])
            candidates = [r for r in (self._readable(i) for i in self._limit(request, found)) if r["assets"]]

        def read() -> PointData:
            for doc in candidates:
                with STACReader(None, item=doc) as src:
                    try:
                        return src.point(lon, lat, assets=params.asset_list(src.assets[:1]), **opts)
                    except PointOutsideBounds:
                        continue
            raise ApiError(404, "NotFound", f"no raster data at ({lon}, {lat})")

        return _json(self._point_body(await self._run(read), lon, lat))

    # ------------------------------------------------------------ mosaic assets
    @staticmethod
    def _asset_entry(item: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": item["id"],
            "bbox": item.get("bbox"),
            "assets": item.get("assets") or {},
            "collection": item.get("collection"),
        }

    async def point_assets(self, request: web.Request) -> web.Response:
        lon, lat = self._lonlat(request)
        found = self._search_items(self._mosaic_query(request), [lon, lat, lon, lat])
        return _json([self._asset_entry(i) for i in self._limit(request, found)])

    async def tile_assets(self, request: web.Request) -> web.Response:
        tms = _tms(request.match_info.get("tileMatrixSetId", "WebMercatorQuad"))
        z, x = _int_path(request.match_info["z"], "z"), _int_path(request.match_info["x"], "x")
        y = _int_path(request.match_info["y"], "y")
        bounds = list(tms.bounds(morecantile.Tile(x, y, z)))
        found = self._search_items(self._mosaic_query(request), bounds)
        return _json([self._asset_entry(i) for i in self._limit(request, found)])

    async def bbox_assets(self, request: web.Request) -> web.Response:
        match = BBOX.match(request.match_info["coords"])
        if match is None or match["format"]:
            raise _bad("minx", f"{request.match_info['coords']!r} is not 'minx,miny,maxx,maxy'")
        bbox = [float(v) for v in match["coords"].split(",")]
        found = self._search_items(self._mosaic_query(request), bbox)
        return _json([self._asset_entry(i) for i in self._limit(request, found)])

    # ------------------------------------------------------------ searches
    def _search_links(self, request: web.Request, search_id: str, self_rel: str) -> list[dict[str, str]]:
        base = f"{self.app._origin(request)}/data/mosaic/searches/{search_id}"
        return [
            {"href": f"{base}/info", "rel": self_rel, "type": "application/json", "title": "Mosaic metadata"},
            {
                "href": f"{base}/tilejson.json",
                "rel": "tilejson",
                "type": "application/json",
                "title": "Link for TileJSON",
            },
            {
                "href": f"{base}/WMTSCapabilities.xml",
                "rel": "wmts",
                "type": "application/json",
                "title": "Link for WMTS",
            },
        ]

    async def register(self, request: web.Request) -> web.Response:
        body = await self.app._json_body(request, code="InvalidInputData")
        entry = self.searches.register(body)
        return _json({"searchid": entry["hash"], "links": self._search_links(request, entry["hash"], "metadata")})

    def _info_body(self, request: web.Request, entry: dict[str, Any], search_id: str) -> dict[str, Any]:
        query = entry["search"]
        definition = {
            "hash": entry["hash"],
            "search": query,
            "_where": _where(query),
            "orderby": _orderby(query),
            "lastused": entry.get("lastused") or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "usecount": entry.get("uses", 0),
            "metadata": entry["metadata"],
        }
        return {"search": definition, "links": self._search_links(request, search_id, "self")}

    async def search_info(self, request: web.Request) -> web.Response:
        entry = self.searches.get(request.match_info["searchId"])
        return _json(self._info_body(request, entry, entry["hash"]))

    async def collection_info(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        self.catalog.get_collection(cid)
        entry = self.searches.register({"collections": [cid]}, {"name": f"Mosaic for '{cid}' Collection"})
        return _json(self._info_body(request, self.searches.get(entry["hash"]), entry["hash"]))

    # ------------------------------------------------------------ tilejson, WMTS, tilesets
    def _source(self, request: web.Request) -> tuple[str, list[float], tuple[int, int]]:
        """The URL prefix of the source's routes, its WGS84 bounds and default zooms."""
        origin = self.app._origin(request)
        if "itemId" in request.match_info:
            cid, iid = request.match_info["collectionId"], request.match_info["itemId"]
            item = self.catalog.get_item(cid, iid)
            bounds = item.get("bbox") or _geometry_bbox(item["geometry"])
            return f"{origin}/data/mosaic/collections/{cid}/items/{iid}", list(bounds), (12, 18)
        if "searchId" in request.match_info:
            sid = request.match_info["searchId"]
            prefix = f"{origin}/data/mosaic/searches/{sid}"
        else:
            prefix = f"{origin}/data/mosaic/collections/{request.match_info['collectionId']}"
        items = self._search_items(self._mosaic_query(request))
        return prefix, _union([i["bbox"] for i in items if i.get("bbox")]), (0, 24)

    def _zoom_range(self, request: web.Request, defaults: tuple[int, int]) -> tuple[int, int]:
        low = request.query.get("minzoom")
        high = request.query.get("maxzoom")
        minzoom = _int_path(low, "minzoom") if low is not None else defaults[0]
        maxzoom = _int_path(high, "maxzoom") if high is not None else defaults[1]
        if minzoom > maxzoom:
            raise _bad("minzoom", f"{minzoom} is above maxzoom {maxzoom}")
        return minzoom, maxzoom

    def _passthrough(self, request: web.Request) -> str:
        drop = {"tile_format", "tile_scale", "minzoom", "maxzoom", "tilesize", "format", "TileMatrixSetId"}
        pairs = [(k, v) for k, v in request.query.items() if k not in drop]
        return urlencode(pairs, safe=",|")

    async def tilejson(self, request: web.Request) -> web.Response:
        Params(request.query)
        tms_id = request.match_info.get("tileMatrixSetId", "WebMercatorQuad")
        tms = _tms(tms_id)
        prefix, bounds, defaults = self._source(request)
        minzoom, maxzoom = self._zoom_range(request, defaults)
        fmt = _format(request.query.get("tile_format"), "tile_format")
        scale = _int_path(request.query.get("tile_scale", "1"), "tile_scale")
        tail = f"@{scale}x" + (f".{fmt}" if fmt else "")
        url = f"{prefix}/tiles/{tms.id}/{{z}}/{{x}}/{{y}}{tail}?{self._passthrough(request)}"
        center = [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, minzoom]
        body = {
            "tilejson": "2.2.0",
            "version": "1.0.0",
            "scheme": "xyz",
            "tiles": [url],
            "minzoom": minzoom,
            "maxzoom": maxzoom,
            "bounds": [round(v, 6) for v in bounds],
            "center": center,
        }
        return _json(body)

    async def wmts(self, request: web.Request) -> web.Response:
        Params(request.query)
        tms = _tms(request.match_info.get("tileMatrixSetId", "WebMercatorQuad"))
        prefix, bounds, defaults = self._source(request)
        minzoom, maxzoom = self._zoom_range(request, defaults)
        fmt = _format(request.query.get("tile_format"), "tile_format") or "png"
        scale = _int_path(request.query.get("tile_scale", "1"), "tile_scale")
        query = self._passthrough(request)
        template = f"{prefix}/tiles/{tms.id}/{{TileMatrix}}/{{TileCol}}/{{TileRow}}@{scale}x.{fmt}?{query}"
        matrices = []
        for matrix in tms.tileMatrices[minzoom : maxzoom + 1]:
            corner = " ".join(f"{v:.10g}" for v in matrix.pointOfOrigin)
            matrices.append(
                "<TileMatrix>"
                f"<ows:Identifier>{matrix.id}</ows:Identifier>"
                f"<ScaleDenominator>{matrix.scaleDenominator}</ScaleDenominator>"
                f"<TopLeftCorner>{corner}</TopLeftCorner>"
                f"<TileWidth>{matrix.tileWidth * scale}</TileWidth><TileHeight>{matrix.tileHeight * scale}</TileHeight>"
                f"<MatrixWidth>{matrix.matrixWidth}</MatrixWidth><MatrixHeight>{matrix.matrixHeight}</MatrixHeight>"
                "</TileMatrix>"
            )
        media = FORMATS[fmt][1]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">'
            "<ows:ServiceIdentification><ows:Title>GeoCatalog emulator</ows:Title>"
            "<ows:ServiceType>OGC WMTS</ows:ServiceType><ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>"
            "</ows:ServiceIdentification>"
            "<Contents><Layer><ows:Title>default</ows:Title><ows:Identifier>default</ows:Identifier>"
            '<ows:WGS84BoundingBox crs="urn:ogc:def:crs:OGC:2:84">'
            f"<ows:LowerCorner>{bounds[0]} {bounds[1]}</ows:LowerCorner>"
            f"<ows:UpperCorner>{bounds[2]} {bounds[3]}</ows:UpperCorner></ows:WGS84BoundingBox>"
            '<Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>'
            f"<Format>{media}</Format>"
            f"<TileMatrixSetLink><TileMatrixSet>{tms.id}</TileMatrixSet></TileMatrixSetLink>"
            f'<ResourceURL format="{media}" resourceType="tile" template="{escape(template, {chr(34): "&quot;"})}"/>'
            "</Layer>"
            f"<TileMatrixSet><ows:Identifier>{tms.id}</ows:Identifier>"
            f"<ows:SupportedCRS>{escape(tms.crs.srs)}</ows:SupportedCRS>{''.join(matrices)}</TileMatrixSet>"
            "</Contents></Capabilities>"
        )
        return web.Response(body=xml.encode(), headers={"Content-Type": "application/xml"})

    def _tileset(self, request: web.Request, tms: TileMatrixSet, prefix: str, bounds: list[float]) -> dict[str, Any]:
        query = self._passthrough(request)
        return {
            "title": f"tileset tiled using {tms.id} TileMatrixSet",
            "dataType": "map",
            "crs": tms.crs.srs,
            "boundingBox": {"lowerLeft": bounds[:2], "upperRight": bounds[2:], "crs": WGS84_URI},
            "links": [
                {
                    "href": f"{prefix}/tiles/{tms.id}?{query}",
                    "rel": "self",
                    "type": "application/json",
                    "title": f"Tileset tiled using {tms.id} TileMatrixSet",
                },
                {
                    "href": f"{prefix}/tiles/{tms.id}/{{z}}/{{x}}/{{y}}?{query}",
                    "rel": "tile",
                    "type": "image/png",
                    "title": "Templated link for retrieving Raster tiles",
                },
            ],
        }

    async def tilesets(self, request: web.Request) -> web.Response:
        prefix, bounds, _ = self._source(request)
        sets = [self._tileset(request, morecantile.tms.get(t), prefix, bounds) for t in morecantile.tms.list()]
        return _json({"tilesets": sets})

    async def tileset(self, request: web.Request) -> web.Response:
        tms = _tms(request.match_info["tileMatrixSetId"])
        prefix, bounds, defaults = self._source(request)
        minzoom, maxzoom = self._zoom_range(request, defaults)
        body = self._tileset(request, tms, prefix, bounds)
        limits = []
        for zoom in range(minzoom, min(maxzoom, len(tms.tileMatrices) - 1) + 1):
            ul = tms.tile(bounds[0], bounds[3], zoom)
            lr = tms.tile(bounds[2], bounds[1], zoom)
            limits.append(
                {
                    "tileMatrix": str(zoom),
                    "minTileRow": min(ul.y, lr.y),
                    "maxTileRow": max(ul.y, lr.y),
                    "minTileCol": min(ul.x, lr.x),
                    "maxTileCol": max(ul.x, lr.x),
                }
            )
        body["tileMatrixSetLimits"] = limits
        return _json(body)

    # ------------------------------------------------------------ routes
    def register_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get("/data/tile-matrix-sets", self.tile_matrix_sets, allow_head=False)
        r.add_get("/data/tile-matrix-sets/{tileMatrixSetId}", self.tile_matrix_set, allow_head=False)
        r.add_get("/data/legend/classmap/{classmapName}", self.class_map, allow_head=False)
        r.add_get("/data/legend/interval/{classmapName}", self.interval_map, allow_head=False)
        r.add_get("/data/legend/colormap/{colorMapName}", self.colormap_legend, allow_head=False)
        r.add_post("/data/mosaic/register", self.register)
        item = "/data/mosaic/collections/{collectionId}/items/{itemId}"
        r.add_get(item + "/bounds", self.item_bounds, allow_head=False)
        r.add_get(item + "/info", self.item_info, allow_head=False)
        r.add_get(item + "/info.geojson", self.item_info_geojson, allow_head=False)
        r.add_get(item + "/assets", self.item_assets, allow_head=False)
        r.add_get(item + "/asset_statistics", self.item_asset_statistics, allow_head=False)
        r.add_get(item + "/statistics", self.item_statistics, allow_head=False)
        r.add_post(item + "/statistics", self.item_statistics)
        r.add_get(item + "/preview", self.preview, allow_head=False)
        r.add_get(item + "/preview.{format}", self.preview, allow_head=False)
        r.add_get(item + "/point/{coords}", self.point, allow_head=False)
        self._images(r, item)
        for prefix in ("/data/mosaic/collections/{collectionId}", "/data/mosaic/searches/{searchId}"):
            r.add_get(prefix + "/point/{coords}/assets", self.point_assets, allow_head=False)
            r.add_get(prefix + "/point/{coords}", self.point, allow_head=False)
            r.add_get(prefix + "/tiles/{tileMatrixSetId}/{z}/{x}/{y}/assets", self.tile_assets, allow_head=False)
            r.add_get(prefix + "/tiles/{z}/{x}/{y}/assets", self.tile_assets, allow_head=False)
            r.add_get(prefix + "/bbox/{coords}/assets", self.bbox_assets, allow_head=False)
            self._images(r, prefix)
        r.add_get("/data/mosaic/collections/{collectionId}/info", self.collection_info, allow_head=False)
        r.add_get("/data/mosaic/searches/{searchId}/info", self.search_info, allow_head=False)

    def _images(self, r: web.UrlDispatcher, prefix: str) -> None:
        r.add_get(prefix + "/tiles", self.tilesets, allow_head=False)
        r.add_get(prefix + "/tiles/{tileMatrixSetId}", self.tileset, allow_head=False)
        r.add_get(prefix + "/tiles/{tileMatrixSetId}/{z}/{x}/{tile}", self.tile, allow_head=False)
        r.add_get(prefix + "/tiles/{z}/{x}/{tile}", self.tile, allow_head=False)
        r.add_get(prefix + "/tilejson.json", self.tilejson, allow_head=False)
        r.add_get(prefix + "/{tileMatrixSetId}/tilejson.json", self.tilejson, allow_head=False)
        r.add_get(prefix + "/WMTSCapabilities.xml", self.wmts, allow_head=False)
        r.add_get(prefix + "/{tileMatrixSetId}/WMTSCapabilities.xml", self.wmts, allow_head=False)
        r.add_get(prefix + "/bbox/{coords}", self.bbox_crop, allow_head=False)
        r.add_get(prefix + "/bbox/{coords}/{size}", self.bbox_crop, allow_head=False)
        r.add_post(prefix + "/feature", self.feature_crop)
        r.add_post(prefix + "/feature.{format}", self.feature_crop)
        r.add_post(prefix + "/feature/{size}", self.feature_crop)


def register(app: GeoCatalogApp, router: web.UrlDispatcher) -> Tiler:
    """Add the data API's routes to ``router`` (called from ``GeoCatalogApp.build``)."""
    tiler = Tiler(app)
    tiler.register_routes(router)
    return tiler
