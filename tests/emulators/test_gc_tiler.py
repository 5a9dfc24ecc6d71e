"""The GeoCatalog emulator's data API (``/data/...``) over real HTTP: images rendered by rio-tiler from a real COG
stored as an item's asset (``gcw_emulators.geocatalog.imagery``), in the shapes of Microsoft's recordings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.geocatalog.imagery import naip_cog, naip_item, seed_imagery
from PIL import Image
from rasterio.io import MemoryFile
from rasterio.warp import transform

pytestmark = pytest.mark.timeout(60)
V = {"api-version": "2025-04-30-preview"}
C, ITEM = "naip-atl", "ga_m_3308421_se_16_060_20211114"
BBOX = [-84.44157, 33.621853, -84.370894, 33.690654]  # the item's bbox in the recordings (test_04 get_bounds)
NEIGHBOUR = "ga_m_3308421_sw_16_060_20211114"
ITEM_URL = f"/data/mosaic/collections/{C}/items/{ITEM}"
RGB = {"assets": "image", "asset_bidx": "image|1,2,3"}
SQUARE = {
    "type": "Feature",
    "properties": {},
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [[-84.3906, 33.6714], [-84.3814, 33.6714], [-84.3814, 33.6806], [-84.3906, 33.6806], [-84.3906, 33.6714]]
        ],
    },
}


@pytest.fixture(scope="module")
def emu():
    with GeoCatalogEmulator() as emulator:
        emulator.create_collection(C)
        seed_imagery(emulator, C, naip_item(C, ITEM, BBOX, "2021-11-14T16:00:00Z"))
        west = [BBOX[0] - 0.0653, BBOX[1], BBOX[0] + 0.0053, BBOX[3]]
        seed_imagery(emulator, C, naip_item(C, NEIGHBOUR, west, "2021-11-14T16:10:00Z"), seed=1)
        yield emulator


def get(emu: GeoCatalogEmulator, path: str, **params: str) -> requests.Response:
    return requests.get(f"{emu.url}{path}", params={**V, **params}, headers=emu.headers, timeout=20)


def post(emu: GeoCatalogEmulator, path: str, body: object, **params: str) -> requests.Response:
    return requests.post(f"{emu.url}{path}", params={**V, **params}, json=body, headers=emu.headers, timeout=20)


def image(resp: requests.Response, fmt: str) -> Image.Image:
    assert resp.status_code == 200, resp.text
    picture = Image.open(io.BytesIO(resp.content))
    assert picture.format == fmt
    return picture


def test_naip_cog_is_a_tiled_4_band_utm_geotiff_over_the_bbox() -> None:
    with MemoryFile(naip_cog(BBOX)) as mem, mem.open() as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (4, "uint8", 26916)
        assert src.block_shapes[0] == (256, 256) and src.overviews(1) == [2, 4, 8]
        assert max(src.width, src.height) == 512
        xs, ys = transform(
            src.crs, "EPSG:4326", [src.bounds.left, src.bounds.right], [src.bounds.bottom, src.bounds.top]
        )
        assert xs[0] == pytest.approx(BBOX[0], abs=0.003) and ys[1] == pytest.approx(BBOX[3], abs=0.003)
        assert len(np.unique(src.read(1))) > 100  # real variety for statistics and histograms
    with pytest.raises(ValueError, match="bbox"):
        naip_cog([1, 1, 0, 0])


def test_data_routes_need_auth_and_an_api_version(emu) -> None:
    assert requests.get(f"{emu.url}{ITEM_URL}/bounds", params=V, timeout=5).status_code == 401
    missing = requests.get(f"{emu.url}{ITEM_URL}/bounds", headers=emu.headers, timeout=5)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"


def test_item_metadata_in_the_recorded_shapes(emu) -> None:
    assert get(emu, f"{ITEM_URL}/bounds").json() == {"bounds": BBOX}
    assert get(emu, f"{ITEM_URL}/assets").json() == ["image"]
    info = get(emu, f"{ITEM_URL}/info", assets="image").json()["image"]
    assert info["dtype"] == "uint8" and info["count"] == 4 and info["crs"].endswith("/EPSG/0/4326")
    assert info["colorinterp"] == ["red", "green", "blue", "undefined"] and info["nodata_type"] == "None"
    assert info["bounds"][0] == pytest.approx(BBOX[0], abs=0.003)
    feature = get(emu, f"{ITEM_URL}/info.geojson", assets="image")
    assert feature.headers["Content-Type"] == "application/geo+json"
    assert feature.json()["type"] == "Feature" and set(feature.json()["properties"]) == {"image"}


def test_point_values_are_the_cogs_pixels(emu) -> None:
    lon, lat = -84.386, 33.676
    body = get(emu, f"{ITEM_URL}/point/{lon},{lat}", assets="image").json()
    assert body["coordinates"] == [lon, lat]
    assert body["band_names"] == ["image_b1", "image_b2", "image_b3", "image_b4"]
    with MemoryFile(naip_cog(BBOX)) as mem, mem.open() as src:
        (x,), (y,) = transform("EPSG:4326", src.crs, [lon], [lat])
        expected = [float(v) for v in next(src.sample([(x, y)]))]
    assert body["values"] == expected


def test_statistics_merged_per_asset_and_by_feature(emu) -> None:
    merged = get(emu, f"{ITEM_URL}/statistics", assets="image").json()
    assert list(merged) == ["image_b1", "image_b2", "image_b3", "image_b4"]
    band = merged["image_b1"]
    assert band["min"] <= band["percentile_2"] <= band["median"] <= band["percentile_98"] <= band["max"]
    assert len(band["histogram"][0]) == 10 and band["valid_percent"] == 100.0
    per_asset = get(emu, f"{ITEM_URL}/asset_statistics", assets="image").json()
    assert list(per_asset) == ["image"] and list(per_asset["image"]) == ["b1", "b2", "b3", "b4"]
    by_feature = post(emu, f"{ITEM_URL}/statistics", SQUARE, assets="image")
    assert by_feature.status_code == 200 and by_feature.headers["Content-Type"] == "application/geo+json"
    stats = by_feature.json()["properties"]["statistics"]
    assert list(stats) == list(merged) and stats["image_b1"]["count"] < band["count"]


@pytest.mark.parametrize(
    ("path", "params", "fmt", "size"),
    [
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564@1x.png", RGB, "PNG", (256, 256)),
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14.0/4349.0/6564.0@2.0x.webp", RGB, "WEBP", (512, 512)),
        (f"{ITEM_URL}/preview.jpeg", {**RGB, "width": "300", "height": "200"}, "JPEG", (300, 200)),
        (f"{ITEM_URL}/preview", {**RGB, "format": "png", "max_size": "128"}, "PNG", None),
        (f"{ITEM_URL}/bbox/-84.3930,33.6798,-84.3670,33.7058/64x32.png", RGB, "PNG", (64, 32)),
        (f"{ITEM_URL}/bbox/-84.3930,33.6798,-84.3670,33.7058.tif", RGB, "TIFF", None),
    ],
)
def test_images_in_the_format_and_size_asked(emu, path, params, fmt, size) -> None:
    picture = image(get(emu, path, **params), fmt)
    if size is not None:
        assert picture.size == size
    if fmt == "PNG":
        assert picture.mode == "RGBA"  # RGB plus the mask as alpha


def test_tile_pixels_follow_the_rescale_and_colormap_asked(emu) -> None:
    path = f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.png"
    plain = np.asarray(image(get(emu, path, **RGB), "PNG"))
    assert plain[..., 3].min() == 255 and len(np.unique(plain[..., 0])) > 20
    flat = np.asarray(image(get(emu, path, assets="image", asset_bidx="image|1", rescale="0,1"), "PNG"))
    assert set(np.unique(flat[..., 0])) == {255}  # every value >= 1 rescaled from [0, 1] saturates
    mapped = image(get(emu, path, assets="image", asset_bidx="image|4", colormap_name="viridis"), "PNG")
    assert mapped.mode == "RGBA" and len(np.unique(np.asarray(mapped)[..., 1])) > 10


def test_feature_crop_masks_outside_the_geometry(emu) -> None:
    triangle = {
        "type": "Polygon",
        "coordinates": [[[-84.39, 33.67], [-84.38, 33.67], [-84.39, 33.68], [-84.39, 33.67]]],
    }
    picture = image(post(emu, f"{ITEM_URL}/feature/128x128.png", triangle, **RGB), "PNG")
    alpha = np.asarray(picture)[..., 3]
    assert alpha[-1, 0] == 255 and alpha[0, -1] == 0  # inside the triangle's corner, outside the opposite one


def test_bad_requests_name_the_parameter(emu) -> None:
    cases = [
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.gif", RGB, "format"),
        (f"{ITEM_URL}/tiles/NoSuchGrid/14/4349/6564.png", RGB, None),
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.png", {**RGB, "asset_bidx": "image|x"}, "asset_bidx"),
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.png", {**RGB, "rescale": "0"}, "rescale"),
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.png", {**RGB, "colormap_name": "nope"}, "colormap_name"),
        (f"{ITEM_URL}/tiles/WebMercatorQuad/14/4349/6564.png", {**RGB, "algorithm": "hillshade"}, "algorithm"),
        (f"{ITEM_URL}/point/east,north", {"assets": "image"}, "longitude"),
    ]
    for path, params, target in cases:
        resp = get(emu, path, **params)
        assert resp.status_code in (400, 404), (path, resp.status_code)
        error = resp.json()["error"]
        assert error["code"] and error["message"]
        if target is not None:
            assert error["target"] == target, error
    outside = get(emu, f"{ITEM_URL}/tiles/WebMercatorQuad/14/1/1.png", **RGB)
    assert outside.status_code == 404 and "outside" in outside.json()["error"]["message"]
    assert get(emu, f"{ITEM_URL}/info", assets="thumbnail").status_code == 404


def test_item_without_raster_bytes_is_a_404_naming_the_asset(emu) -> None:
    emu.create_collection("elsewhere")  # its own collection: the mosaics of naip-atl stay as seeded
    doc = naip_item("elsewhere", "placeholder", BBOX, "2021-11-14T16:00:00Z")
    doc["assets"] = {"image": {"href": "https://example.com/elsewhere.tif", "type": "image/tiff"}}
    emu.catalog.add_item_now("elsewhere", doc)
    resp = get(emu, "/data/mosaic/collections/elsewhere/items/placeholder/info", assets="image")
    assert resp.status_code == 404 and "'image'" in resp.json()["error"]["message"]


def test_tilejson_wmts_and_tilesets_point_at_routes_that_answer(emu) -> None:
    tj = get(emu, f"{ITEM_URL}/WebMercatorQuad/tilejson.json", **RGB, tile_format="png", minzoom="7", maxzoom="14")
    body = tj.json()
    assert body["tilejson"] == "2.2.0" and (body["minzoom"], body["maxzoom"]) == (7, 14) and body["bounds"] == BBOX
    url = body["tiles"][0].replace("{z}", "14").replace("{x}", "4349").replace("{y}", "6564")
    assert url.startswith(f"{emu.url}{ITEM_URL}/tiles/WebMercatorQuad/")
    image(requests.get(url, headers=emu.headers, timeout=20), "PNG")
    xml = get(emu, f"{ITEM_URL}/WMTSCapabilities.xml", **RGB, minzoom="7", maxzoom="9")
    assert xml.headers["Content-Type"] == "application/xml"
    assert xml.text.count("<TileMatrix>") == 3 and "<Capabilities" in xml.text
    sets = get(emu, f"{ITEM_URL}/tiles").json()["tilesets"]
    assert any(s["crs"].endswith("/EPSG/0/3857") for s in sets)
    meta = get(emu, f"{ITEM_URL}/tiles/WebMercatorQuad", minzoom="14", maxzoom="14").json()
    (limit,) = meta["tileMatrixSetLimits"]
    assert limit["minTileCol"] <= 4349 <= limit["maxTileCol"] and limit["minTileRow"] <= 6564 <= limit["maxTileRow"]


def test_tile_matrix_sets(emu) -> None:
    names = get(emu, "/data/tile-matrix-sets").json()
    assert "WebMercatorQuad" in names and "WorldCRS84Quad" in names
    tms = get(emu, "/data/tile-matrix-sets/WebMercatorQuad").json()
    assert tms["id"] == "WebMercatorQuad" and tms["tileMatrices"][0]["tileWidth"] == 256


def test_registered_search_mosaics_both_items(emu) -> None:
    search = {
        "filter": {"op": "=", "args": [{"property": "collection"}, C]},
        "filter-lang": "cql2-json",
        "sortby": [{"field": "datetime", "direction": "desc"}],
    }
    registered = post(emu, "/data/mosaic/register", search).json()
    sid = registered["searchid"]
    assert post(emu, "/data/mosaic/register", search).json()["searchid"] == sid  # same search, same hash
    assert {link["rel"] for link in registered["links"]} == {"metadata", "tilejson", "wmts"}
    info = get(emu, f"/data/mosaic/searches/{sid}/info").json()["search"]
    assert info["hash"] == sid and info["search"]["filter"] == search["filter"]
    assert info["orderby"] == "datetime DESC, id DESC" and info["metadata"] == {"type": "mosaic"}
    # a tile over the seam of the two items (and below their south edge): its top row is covered across the seam
    tile = np.asarray(
        image(get(emu, f"/data/mosaic/searches/{sid}/tiles/WebMercatorQuad/13/2174/3282.png", **RGB), "PNG")
    )
    assert tile[0, :, 3].min() == 255 and tile[-1, :, 3].max() == 0
    lon, lat = BBOX[0] + 0.002, 33.65
    ids = [a["id"] for a in get(emu, f"/data/mosaic/searches/{sid}/point/{lon},{lat}/assets").json()]
    assert ids == [NEIGHBOUR, ITEM]  # datetime descending
    assets = get(emu, f"/data/mosaic/searches/{sid}/tiles/WebMercatorQuad/13/2174/3282/assets").json()
    assert {a["id"] for a in assets} == {ITEM, NEIGHBOUR} and all("image" in a["assets"] for a in assets)
    point = get(emu, f"/data/mosaic/searches/{sid}/point/-84.386,33.676", assets="image").json()
    assert point["band_names"][0] == "image_b1" and len(point["values"]) == 4
    bad = post(emu, "/data/mosaic/register", {"filter": {"op": "nope", "args": []}, "filter-lang": "cql2-json"})
    assert bad.status_code == 400 and bad.json()["error"]["target"] == "filter"
    assert get(emu, "/data/mosaic/searches/0000/info").status_code == 404


def test_collection_mosaic(emu) -> None:
    info = get(emu, f"/data/mosaic/collections/{C}/info").json()["search"]
    assert info["search"] == {"collections": [C]} and info["_where"] == f"collection IN ('{C}')"
    image(get(emu, f"/data/mosaic/collections/{C}/tiles/WebMercatorQuad/14/4349/6564@1x.png", **RGB), "PNG")
    crop = post(emu, f"/data/mosaic/collections/{C}/feature.png", SQUARE, **RGB)
    image(crop, "PNG")
    assert get(emu, "/data/mosaic/collections/nope/info").status_code == 404


def test_legends(emu) -> None:
    classes = get(emu, "/data/legend/classmap/mtbs-severity").json()
    assert classes["0"] == [0, 0, 0, 0] and classes["4"] == [255, 0, 0, 255]
    intervals = get(emu, "/data/legend/interval/modis-64A1").json()
    assert intervals[0] == [[-2, 0], [0, 0, 0, 0]] and all(len(i) == 2 for i in intervals)
    legend = image(get(emu, "/data/legend/colormap/rdylgn", width="300", height="10"), "PNG")
    assert legend.size == (300, 10) and legend.mode == "RGBA"
    pixels = np.asarray(legend)
    assert pixels[0, 0, 0] > pixels[0, 0, 1] and pixels[0, -1, 1] > pixels[0, -1, 0]  # red to green
    assert get(emu, "/data/legend/colormap/nope").status_code == 404
    assert get(emu, "/data/legend/classmap/nope").status_code == 404
