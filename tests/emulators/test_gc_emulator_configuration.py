"""The GeoCatalog emulator's collection configuration and collection assets over HTTP: the recorded status codes
and shapes, the errors (400 naming the field, 404, 409), state that goes with the collection, and persistence."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.timeout(30)
V = {"api-version": "2025-04-30-preview"}
CONF = "/stac/collections/c1/configurations"


def _call(emu, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{emu.url}{path}", params=V, headers=emu.headers, timeout=5, **kwargs)


def test_render_options_and_mosaics_crud_in_the_recorded_shapes(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"])
    option = {"id": "rgb", "name": "RGB", "type": "raster-tile", "options": "assets=image", "minZoom": 6}
    created = _call(emu, "POST", f"{CONF}/render-options", json=option)
    assert created.status_code == 201 and created.json() == option
    again = _call(emu, "POST", f"{CONF}/render-options", json=option)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ResourceAlreadyExists"
    replaced = _call(emu, "PUT", f"{CONF}/render-options/rgb", json={**option, "description": "d"})
    assert replaced.status_code == 200 and replaced.json()["description"] == "d"
    mismatch = _call(emu, "PUT", f"{CONF}/render-options/other", json=option)
    assert mismatch.status_code == 400 and mismatch.json()["error"]["target"] == "id"
    bad_type = _call(emu, "POST", f"{CONF}/render-options", json={**option, "id": "x", "type": "raster"})
    assert bad_type.status_code == 400 and bad_type.json()["error"]["target"] == "type"

    mosaic = _call(emu, "POST", f"{CONF}/mosaics", json={"id": "m1", "name": "Recent", "cql": []})
    assert mosaic.status_code == 201
    assert mosaic.json() == {"id": "m1", "name": "Recent", "description": None, "cql": []}  # test_17a
    assert [m["id"] for m in _call(emu, "GET", f"{CONF}/mosaics").json()] == ["default", "m1"]
    no_cql = _call(emu, "POST", f"{CONF}/mosaics", json={"id": "m2", "name": "x"})
    assert no_cql.status_code == 400 and no_cql.json()["error"]["target"] == "cql"

    config = _call(emu, "GET", CONF).json()
    assert config["tileSettings"] == {"minZoom": 6, "maxItemsPerTile": 35, "defaultLocation": None}
    assert config["mosaicInfo"]["renderOptions"][0]["vectorOptions"] is None  # every field, null when unset
    assert [m["id"] for m in config["mosaicInfo"]["mosaics"]] == ["default", "m1"]

    for path in (f"{CONF}/render-options/rgb", f"{CONF}/mosaics/m1"):
        deleted = _call(emu, "DELETE", path)
        assert deleted.status_code == 200 and deleted.content == b""
        gone = _call(emu, "GET", path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceNotFound"
        assert _call(emu, "DELETE", path).status_code == 404
    assert _call(emu, "GET", "/stac/collections/nope/configurations/mosaics").status_code == 404


def test_tile_settings_partition_type_and_queryables(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"])
    settings = _call(emu, "PUT", f"{CONF}/tile-settings", json={"maxItemsPerTile": 20, "minZoom": 4})
    assert settings.json() == {"minZoom": 4, "maxItemsPerTile": 20, "defaultLocation": None}
    missing = _call(emu, "PUT", f"{CONF}/tile-settings", json={"minZoom": 4})
    assert missing.status_code == 400 and missing.json()["error"]["target"] == "maxItemsPerTile"

    assert _call(emu, "GET", f"{CONF}/partition-type").json() == {"scheme": "none"}
    put = _call(emu, "PUT", f"{CONF}/partition-type", json={"scheme": "year"})
    assert put.status_code == 200 and put.content == b""  # test_18
    assert _call(emu, "GET", f"{CONF}/partition-type").json() == {"scheme": "year"}
    assert _call(emu, "PUT", f"{CONF}/partition-type", json={"scheme": "decade"}).status_code == 400

    q = {"name": "eo:cloud_cover", "data_type": "number", "create_index": False, "definition": {"minimum": 0}}
    created = _call(emu, "POST", "/stac/collections/c1/queryables", json=[q])
    assert created.status_code == 201 and created.json()[0]["name"] == "eo:cloud_cover"
    assert _call(emu, "POST", "/stac/collections/c1/queryables", json=[q]).status_code == 409
    props = _call(emu, "GET", "/stac/collections/c1/queryables").json()["properties"]
    assert props["eo:cloud_cover"] == {"minimum": 0, "data_type": "number"}
    replaced = _call(emu, "PUT", "/stac/collections/c1/queryables/eo%3Acloud_cover", json={**q, "definition": {}})
    assert replaced.status_code == 200 and replaced.json()["data_type"] is None  # test_21
    assert _call(emu, "DELETE", "/stac/collections/c1/queryables/eo%3Acloud_cover").status_code == 200
    assert "eo:cloud_cover" not in _call(emu, "GET", "/stac/collections/c1/queryables").json()["properties"]
    assert _call(emu, "DELETE", "/stac/collections/c1/queryables/eo%3Acloud_cover").status_code == 404
    bad = _call(emu, "POST", "/stac/collections/c1/queryables", json=[{"name": "x", "definition": []}])
    assert bad.status_code == 400 and bad.json()["error"]["target"] == "definition"


def test_collection_assets_multipart_thumbnail_and_replace(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"])
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    data = '{"key": "thumbnail", "href": "https://example.com/t.png", "type": "image/png", "roles": ["thumbnail"]}'
    files = {"data": (None, data), "file": ("thumb.png", png)}
    created = _call(emu, "POST", "/stac/collections/c1/assets", files=files)
    assert created.status_code == 201, created.text
    asset = created.json()["assets"]["thumbnail"]
    assert asset["href"].startswith(f"https://{emu.managed_account}.blob.core.windows.net/c1-")
    assert asset["href"].endswith("/collection-assets/thumbnail/thumb.png") and "key" not in asset
    assert _call(emu, "POST", "/stac/collections/c1/assets", files=files).status_code == 409
    thumb = _call(emu, "GET", "/stac/collections/c1/thumbnail")
    assert thumb.status_code == 200 and thumb.content == png and thumb.headers["Content-Type"] == "image/png"
    no_file = _call(emu, "POST", "/stac/collections/c1/assets", files={"data": (None, data)})
    assert no_file.status_code == 400 and no_file.json()["error"]["target"] == "file"
    assert _call(emu, "PUT", "/stac/collections/c1/assets/thumbnail", files=files).status_code == 200

    doc = _call(emu, "GET", "/stac/collections/c1").json()
    assert not any(k.startswith("_gcw:") for k in doc)
    doc["description"] = "changed"
    put = _call(emu, "PUT", "/stac/collections/c1", json=doc)
    assert put.status_code == 200 and put.json()["description"] == "changed"
    assert _call(emu, "PUT", "/stac/collections/c1", json={**doc, "id": "c2"}).status_code == 400
    deleted = _call(emu, "DELETE", "/stac/collections/c1/assets/thumbnail")
    assert deleted.status_code == 200 and "thumbnail" not in deleted.json().get("assets", {})
    assert _call(emu, "DELETE", "/stac/collections/c1/assets/thumbnail").status_code == 200  # test_04: no 404
    assert _call(emu, "GET", "/stac/collections/c1/thumbnail").status_code == 404


def test_configuration_goes_with_the_collection_and_survives_a_restart(gc_emulator, tmp_path) -> None:
    emu = gc_emulator(collections=["c1"], data_dir=str(tmp_path))
    _call(emu, "PUT", f"{CONF}/tile-settings", json={"maxItemsPerTile": 9, "minZoom": 3})
    emu.stop()
    again = gc_emulator(data_dir=str(tmp_path))
    assert _call(again, "GET", f"{CONF}/tile-settings").json()["maxItemsPerTile"] == 9
    again.create_collection("c2")
    assert _call(again, "GET", "/stac/collections/c2/configurations/tile-settings").json()["maxItemsPerTile"] == 35
