"""The GeoCatalog emulator stores items the way the live service does (recordings T14, T13, T11; see
docs/emulator-geocatalog.md): managed-storage hrefs, upgraded extensions, service-owned fields, fixed links."""

from __future__ import annotations

import copy
import hashlib
import re
import uuid

import pytest
import requests
from gcw_emulators.geocatalog.items import TOP_LEVEL_ORDER

from tests.support.geocatalog import make_stac_item, wait_operation

C = "naip-atl"
V = {"api-version": "2025-04-30-preview"}
SOURCE = (
    "https://naipeuwest.blob.core.windows.net/naip/v002/ga/2021/ga_060cm_2021/33084/m_3308421_se_16_060_20211114.tif"
)
ITEM_ID = "ga_m_3308421_se_16_060_20211114_delete_test"


@pytest.fixture
def emu(gc_emulator):
    return gc_emulator(operation_seconds=0.05, collections=[C])


def write(emu, method: str, path: str, body: dict | None = None) -> dict:
    r = requests.request(method, f"{emu.url}{path}", params=V, headers=emu.headers, json=body, timeout=5)
    assert r.status_code == 202, r.text
    return wait_operation(r.headers["operation-location"], emu.headers)


def get_item(emu, item_id: str) -> requests.Response:
    return requests.get(f"{emu.url}/stac/collections/{C}/items/{item_id}", params=V, headers=emu.headers, timeout=5)


def naip_item(item_id: str = ITEM_ID, href: str = SOURCE) -> dict:
    item = make_stac_item(item_id, C, href=href)
    item["assets"]["image"] = item["assets"].pop("data")
    item["assets"]["image"].update(roles=["data"], title="RGBIR COG tile")
    item["properties"].update({"gsd": 0.6, "proj:epsg": 26916, "naip:year": "2021", "platform": "Imagery"})
    item["links"] = [{"rel": "collection", "type": "application/json", "href": "https://example.com/c"}]
    item["stac_extensions"] = ["https://stac-extensions.github.io/projection/v1.0.0/schema.json"]
    return item


def test_stored_item_is_transformed_as_the_service_does(emu):
    sent = naip_item()
    op = write(emu, "POST", f"/stac/collections/{C}/items", copy.deepcopy(sent))
    r = get_item(emu, ITEM_ID)
    assert r.headers["Content-Type"] == "application/geo+json"
    got = r.json()
    container = f"{C}-{hashlib.sha256(C.encode()).hexdigest()[:8]}"
    assert container == "naip-atl-bde3e846"
    prefix = hashlib.sha256(ITEM_ID.encode()).hexdigest()[:3]
    assert prefix == "10a"
    host = f"https://{emu.managed_account}.blob.core.windows.net"
    assert got["assets"]["image"] == {**sent["assets"]["image"], "href": f"{host}/{container}/10a/{ITEM_ID}/image.tif"}
    assert got["stac_extensions"] == ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"]
    assert got["properties"] == sent["properties"]
    assert tuple(got) == TOP_LEVEL_ORDER  # id, bbox, type, links, assets, _msft:ts, geometry, ... (T14)
    assert list(got["properties"]) == ["gsd", "datetime", "platform", "naip:year", "proj:epsg"]  # jsonb order
    assert got["_msft:ts"] == op["finishTime"] and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", op["finishTime"]
    )
    uuid.UUID(got["_msft:etag"])
    base = emu.url
    assert got["links"] == [
        {"rel": "collection", "type": "application/json", "href": f"{base}/stac/collections/{C}"},
        {"rel": "parent", "type": "application/json", "href": f"{base}/stac/collections/{C}"},
        {"rel": "root", "type": "application/json", "href": f"{base}/stac/"},
        {"rel": "self", "type": "application/geo+json", "href": f"{base}/stac/collections/{C}/items/{ITEM_ID}"},
    ]


def test_put_of_the_external_href_still_stores_the_managed_href_with_a_new_etag(emu):
    write(emu, "POST", f"/stac/collections/{C}/items", naip_item())
    first = get_item(emu, ITEM_ID).json()
    again = naip_item()
    again["properties"]["platform"] = "Imagery Updated"
    assert write(emu, "PUT", f"/stac/collections/{C}/items/{ITEM_ID}", again)["status"] == "Succeeded"
    second = get_item(emu, ITEM_ID).json()
    assert second["assets"]["image"]["href"] == first["assets"]["image"]["href"]
    assert second["_msft:etag"] != first["_msft:etag"] and second["_msft:ts"] > first["_msft:ts"]
    assert second["properties"]["platform"] == "Imagery Updated"


def test_asset_extension_comes_from_the_source_path_and_may_be_absent(emu):
    item = naip_item("ext1", href="https://example.com/render/tilejson.json?tile=1")
    item["assets"]["bare"] = {"href": "https://example.com/files/no-extension", "type": "text/plain"}
    write(emu, "POST", f"/stac/collections/{C}/items", item)
    got = get_item(emu, "ext1").json()["assets"]
    assert got["image"]["href"].endswith("/ext1/image.json")
    assert got["bare"]["href"].endswith("/ext1/bare")


def test_copied_asset_is_private_and_readable_with_the_collection_token(emu):
    source = emu.put_blob("cogs/a.tif", b"COG-BYTES", container="staging", content_type="image/tiff")
    write(emu, "POST", f"/stac/collections/{C}/items", naip_item("blob1", href=source))
    href = get_item(emu, "blob1").json()["assets"]["image"]["href"]
    url = emu.blob_url(href)
    denied = requests.get(url, timeout=5)
    assert (denied.status_code, denied.headers["x-ms-error-code"]) == (403, "NoAuthenticationInformation")
    token = requests.get(f"{emu.url}/sas/token/{C}", params=V, headers=emu.headers, timeout=5).json()["token"]
    got = requests.get(f"{url}?{token}", timeout=5)
    assert (got.status_code, got.content, got.headers["Content-Type"]) == (200, b"COG-BYTES", "image/tiff")
    # an external source cannot be fetched by the emulator: a placeholder stands in for the copy
    write(emu, "POST", f"/stac/collections/{C}/items", naip_item("ext2"))
    placeholder = requests.get(f"{emu.blob_url(get_item(emu, 'ext2').json()['assets']['image']['href'])}?{token}")
    assert placeholder.status_code == 200 and b"placeholder" in placeholder.content


def test_update_with_a_managed_href_needs_the_collection_sas(emu):
    source = emu.put_blob("cogs/b.tif", b"B", container="staging", content_type="image/tiff")
    write(emu, "POST", f"/stac/collections/{C}/items", naip_item("upd1", href=source))
    stored = get_item(emu, "upd1").json()
    managed = stored["assets"]["image"]["href"]
    stored["properties"]["platform"] = "Imagery"
    for method in ("PATCH", "PUT"):
        op = write(emu, method, f"/stac/collections/{C}/items/upd1", stored)
        assert (op["status"], op["type"]) == ("Failed", "UpdateItem")
        message = (
            "Asset transformation exception. Reason: Error retrieving content from public source. Reason: Public "
            f"access is not permitted on this storage account. Source: {managed}. Source: {managed}"
        )
        assert op["error"] == {"error": {"code": "PublicAccessRestricted", "message": message}}
        assert op["statusHistory"][-1]["errorCode"] == "PublicAccessRestricted"
    token = requests.get(f"{emu.url}/sas/token/{C}", params=V, headers=emu.headers, timeout=5).json()["token"]
    stored["assets"]["image"]["href"] = f"{managed}?{token}"
    assert write(emu, "PUT", f"/stac/collections/{C}/items/upd1", stored)["status"] == "Succeeded"
    after = get_item(emu, "upd1").json()
    assert after["assets"]["image"]["href"] == managed  # the token is not kept
    assert requests.get(f"{emu.blob_url(managed)}?{token}", timeout=5).content == b"B"


def test_missing_item_and_collection_are_resource_not_found(emu):
    write(emu, "POST", f"/stac/collections/{C}/items", naip_item("gone1"))
    assert write(emu, "DELETE", f"/stac/collections/{C}/items/gone1")["status"] == "Succeeded"
    r = get_item(emu, "gone1")
    assert (r.status_code, r.headers["X-Ms-Error-Code"], r.headers["Content-Type"]) == (
        404,
        "ResourceNotFound",
        "application/json",
    )
    assert r.json() == {
        "error": {
            "code": "ResourceNotFound",
            "message": f"Resource not found at '/stac/collections/{C}/items/gone1' with parameters "
            f"{{'collection_id': '{C}', 'item_id': 'gone1'}}. Check the parameters and try again.",
        }
    }
    r = requests.get(f"{emu.url}/stac/collections/nope", params=V, headers=emu.headers, timeout=5)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ResourceNotFound")
    assert r.json()["error"]["message"] == "Collection 'nope' not found. Please verify the collection ID and try again."
