"""GeoCatalog emulator: auth, api-version, validation, operations, items, collections, search, over real HTTP."""

from __future__ import annotations

import copy

import pytest
import requests

from tests.support.geocatalog import make_stac_item, wait_operation
from tests.support.harness import wait_until

pytestmark = pytest.mark.timeout(60)
C = "col-a"


class Api:
    """requests against one emulator with its token and an api-version."""

    def __init__(self, emu, version: str = "2026-04-15") -> None:
        self.emu = emu
        self.s = requests.Session()
        self.s.headers.update(emu.headers)
        self.version = version

    def call(self, method: str, path: str, **kw) -> requests.Response:
        params = kw.pop("params", {})
        params.setdefault("api-version", self.version)
        return self.s.request(method, self.emu.url + path, params=params, timeout=10, **kw)

    def write(self, method: str, path: str, **kw) -> dict:
        r = self.call(method, path, **kw)
        assert r.status_code == 202, r.text
        return wait_operation(r.headers["operation-location"], self.emu.headers)


@pytest.fixture
def emu(gc_emulator):
    return gc_emulator(operation_seconds=0.1, collections=[C])


@pytest.fixture
def api(emu):
    return Api(emu)


# ------------------------------------------------------------------------ auth and api-version
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "Unauthorized"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, "Unauthorized"),
        ({"Authorization": "Bearer wrong-token"}, "InvalidAuthenticationToken"),
    ],
)
def test_geocatalog_calls_need_the_bearer_token(emu, headers, code):
    for path in (f"/stac/collections/{C}/items", "/inma/operations", f"/sas/token/{C}"):
        r = requests.get(emu.url + path, params={"api-version": "2026-04-15"}, headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.headers["x-ms-error-code"] == code
        assert r.json()["error"]["code"] == code
        assert "WWW-Authenticate" in r.headers
    assert emu.stats()["requests"]["GET /stac/collections/{collectionId}/items"] == {"401": 1}


def test_custom_token(gc_emulator):
    emu = gc_emulator(token="s3cret", collections=[C])
    ok = requests.get(
        f"{emu.url}/stac/collections/{C}/items",
        params={"api-version": "2026-04-15"},
        headers={"Authorization": "Bearer s3cret"},
        timeout=5,
    )
    assert ok.status_code == 200
    assert Api(emu).call("GET", f"/stac/collections/{C}/items").status_code == 200


@pytest.mark.parametrize("version", ["2025-04-30-preview", "2026-04-15"])
def test_supported_api_versions(api, version):
    api.version = version
    r = api.call("POST", f"/stac/collections/{C}/items", json=make_stac_item("v1", C))
    assert r.status_code == 202
    assert r.headers["location"].endswith(f"?api-version={version}")


@pytest.mark.parametrize(
    ("params", "code"),
    [({}, "MissingApiVersionParameter"), ({"api-version": "2023-01-01"}, "UnsupportedApiVersion")],
)
def test_api_version_is_required_and_checked(emu, params, code):
    r = requests.get(f"{emu.url}/stac/collections/{C}/items", params=params, headers=emu.headers, timeout=5)
    assert r.status_code == 400
    assert r.headers["x-ms-error-code"] == code
    assert "2026-04-15" in r.json()["error"]["message"]


# ------------------------------------------------------------------------ validation
def _big_item() -> dict:
    item = make_stac_item("big", C)
    item["properties"]["blob"] = "x" * (1024 * 1024)
    return item


def _many_assets() -> dict:
    item = make_stac_item("many", C)
    item["assets"] = {f"a{i}": {"href": f"https://h.example.com/{i}.tif"} for i in range(101)}
    return item


def _mut(**changes) -> dict:
    item = make_stac_item("x1", C)
    for dotted, value in changes.items():
        target = item
        keys = dotted.split("__")
        for k in keys[:-1]:
            target = target[k]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return item


_DELETE = object()


@pytest.mark.parametrize(
    ("body", "code", "target"),
    [
        ([1, 2], "StacValidationFailed", "body"),
        ({"type": "Collection"}, "StacValidationFailed", "type"),
        ({"type": "FeatureCollection", "features": []}, "StacValidationFailed", "features"),
        (_mut(type="Point"), "StacValidationFailed", "type"),
        ({"type": "FeatureCollection", "features": [_mut(type="Point")]}, "StacValidationFailed", "features[0].type"),
        (_mut(collection="other"), "StacValidationFailed", "item.collection"),
        (_mut(collection=_DELETE), "StacValidationFailed", "item.collection"),
        (_mut(id="bad id!"), "StacValidationFailed", "item.id"),
        (_mut(id="x" * 65), "StacValidationFailed", "item.id"),
        (_mut(geometry=_DELETE), "StacValidationFailed", "item.geometry"),
        (
            _mut(geometry={"type": "Point", "coordinates": [200, 0]}),
            "StacValidationFailed",
            "item.geometry.coordinates",
        ),
        (
            _mut(geometry={"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
            "StacValidationFailed",
            "item.geometry.coordinates[0]",
        ),
        (_mut(geometry={"type": "Blob", "coordinates": []}), "StacValidationFailed", "item.geometry.type"),
        (_mut(bbox=[0, 0, 1]), "StacValidationFailed", "item.bbox"),
        (_mut(bbox=[0, 5, 1, 1]), "StacValidationFailed", "item.bbox"),
        (_mut(properties__datetime="2023-13-01"), "StacValidationFailed", "item.properties.datetime"),
        (_mut(properties__datetime=None), "StacValidationFailed", "item.properties.datetime"),
        (_mut(properties={}), "StacValidationFailed", "item.properties.datetime"),
        (_mut(assets__data={"type": "image/tiff"}), "StacValidationFailed", "item.assets.data.href"),
        (_mut(assets__data={"href": "not a url"}), "InvalidAssetHref", "item.assets.data.href"),
        (_many_assets(), "TotalAssetsExceeded", "item.assets"),
        (_big_item(), "ItemSizeExceeded", "item"),
        (
            {"type": "FeatureCollection", "features": [make_stac_item("d", C), make_stac_item("d", C)]},
            "StacValidationFailed",
            "features[1].id",
        ),
        (
            {"type": "FeatureCollection", "features": [make_stac_item("ok", C), _mut(bbox="0,0,1,1")]},
            "StacValidationFailed",
            "features[1].bbox",
        ),
    ],
)
def test_invalid_bodies_are_rejected_synchronously(api, emu, body, code, target):
    r = api.call("POST", f"/stac/collections/{C}/items", json=body)
    assert r.status_code == 400, r.text
    assert r.headers["x-ms-error-code"] == code
    error = r.json()["error"]
    assert error["code"] == code
    assert error["target"] == target
    assert error["message"].startswith(target)
    assert emu.stats()["operations"] == {}


def test_null_datetime_with_range_is_valid(api):
    item = make_stac_item("range", C)
    item["properties"] = {
        "datetime": None,
        "start_datetime": "2023-01-01T00:00:00Z",
        "end_datetime": "2023-02-01T00:00:00+00:00",
    }
    assert api.write("POST", f"/stac/collections/{C}/items", json=item)["status"] == "Succeeded"


def test_not_json_and_body_too_large(gc_emulator):
    emu = gc_emulator(collections=[C], max_body_bytes=2000)
    api = Api(emu)
    json_type = {"Content-Type": "application/json"}
    r = api.call("POST", f"/stac/collections/{C}/items", data=b"{not json", headers=json_type)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "StacValidationFailed")
    assert "not valid JSON" in r.json()["error"]["message"]
    big = {"type": "FeatureCollection", "features": [make_stac_item(f"i{i}", C) for i in range(10)]}
    r = api.call("POST", f"/stac/collections/{C}/items", json=big)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "PostItemCollectionSizeExceeded")


def test_too_many_items_per_post(gc_emulator):
    emu = gc_emulator(collections=[C], max_items_per_post=3)
    body = {"type": "FeatureCollection", "features": [make_stac_item(f"i{i}", C) for i in range(4)]}
    r = Api(emu).call("POST", f"/stac/collections/{C}/items", json=body)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "PostItemCollectionSizeExceeded")


def test_unknown_collection_is_404(api):
    r = api.call("POST", "/stac/collections/nope/items", json=make_stac_item("a", "nope"))
    assert (r.status_code, r.headers["x-ms-error-code"]) == (404, "ResourceNotFound")
    assert r.json() == {
        "error": {
            "code": "ResourceNotFound",
            "message": "Collection 'nope' not found. Please verify the collection ID and try again.",
        }
    }


def test_put_id_mismatch_is_400(api):
    r = api.call("PUT", f"/stac/collections/{C}/items/other", json=make_stac_item("a", C))
    assert (r.status_code, r.json()["error"]["target"]) == (400, "item.id")


def test_unknown_route_and_operation(api):
    r = api.call("GET", "/stac/nowhere")
    assert (r.status_code, r.headers["x-ms-error-code"]) == (404, "NotFound")
    r = api.call("GET", "/inma/operations/00000000-0000-0000-0000-000000000000")
    assert (r.status_code, r.headers["x-ms-error-code"]) == (404, "OperationNotFound")


# ------------------------------------------------------------------------ operations
def test_operation_progresses_pending_running_finished(gc_emulator):
    emu = gc_emulator(operation_seconds=0.6, collections=[C])
    api = Api(emu)
    r = api.call("POST", f"/stac/collections/{C}/items", json=make_stac_item("p1", C))
    accepted = r.json()
    assert accepted["status"] == "Pending" and accepted["type"] == "AddItem" and accepted["collectionId"] == C
    assert accepted["statusHistory"] == [{"status": "Pending", "timestamp": accepted["creationTime"]}]
    statuses = []
    bodies = []

    def finished() -> bool:
        bodies.append(requests.get(r.headers["location"], headers=emu.headers, timeout=5).json())
        statuses.append(bodies[-1]["status"])
        return statuses[-1] not in ("Pending", "Running")

    assert wait_until(finished, 20, interval=0.02), statuses[-5:]
    body = bodies[-1]
    assert statuses[0] == "Pending" and "Running" in statuses and statuses[-1] == "Succeeded"
    assert [h["status"] for h in body["statusHistory"]] == ["Pending", "Running", "Finished"]
    assert body["finishTime"] >= body["startTime"] >= body["creationTime"]
    assert "error" not in body
    assert body["additionalInformation"] == {
        "TotalFailedItems": "0",
        "TotalItems": "1",
        "TotalPendingItems": "0",
        "TotalSuccessfulItems": "1",
    }


def test_poll_retry_after_header(gc_emulator):
    emu = gc_emulator(operation_seconds=5, collections=[C], poll_retry_after=2)
    r = Api(emu).call("POST", f"/stac/collections/{C}/items", json=make_stac_item("p1", C))
    assert requests.get(r.headers["location"], headers=emu.headers, timeout=5).headers["Retry-After"] == "2"


def test_duration_distribution_spec(gc_emulator):
    emu = gc_emulator(operation_seconds="uniform:0.05,0.15", collections=[C])
    api = Api(emu)
    for i in range(3):
        body = api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item(f"u{i}", C))
        assert body["status"] == "Succeeded"


def test_post_existing_item_fails_already_exists(api):
    assert api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("dup", C))["status"] == "Succeeded"
    op = api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("dup", C))
    assert op["status"] == "Failed"
    assert op["error"]["error"] == {
        "code": "ItemAlreadyExistsInCollection",
        "message": f"Item 'dup' already exists in collection '{C}'",
    }
    last = op["statusHistory"][-1]
    assert (last["status"], last["errorCode"]) == ("Failed", "ItemAlreadyExistsInCollection")


def test_batch_applies_valid_items_and_fails_with_errors_in_batch(api, emu):
    api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("b1", C))
    batch = {"type": "FeatureCollection", "features": [make_stac_item(f"b{i}", C) for i in range(4)]}
    op = api.write("POST", f"/stac/collections/{C}/items", json=batch)
    assert op["status"] == "Failed"
    assert op["error"]["error"]["code"] == "ErrorsInBatchOperation"
    assert "b1: ItemAlreadyExistsInCollection" in op["error"]["error"]["message"]
    assert op["additionalInformation"] == {
        "TotalFailedItems": "1",
        "TotalItems": "4",
        "TotalPendingItems": "0",
        "TotalSuccessfulItems": "3",
    }
    assert emu.stats()["items"][C] == 4


def test_put_replaces_and_put_of_missing_fails(api):
    op = api.write("PUT", f"/stac/collections/{C}/items/r1", json=make_stac_item("r1", C))
    assert (op["status"], op["type"], op["error"]["error"]["code"]) == ("Failed", "UpdateItem", "NoRecordsToUpdate")
    api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("r1", C))
    item = make_stac_item("r1", C)
    item["properties"]["title"] = "v2"
    assert api.write("PUT", f"/stac/collections/{C}/items/r1", json=item)["status"] == "Succeeded"
    got = api.call("GET", f"/stac/collections/{C}/items/r1").json()
    assert got["properties"] == item["properties"]  # exactly the submitted keys: no msft:_created/_updated


def test_patch_merges_and_validates(api):
    op = api.write("PATCH", f"/stac/collections/{C}/items/m1", json={"properties": {"title": "x"}})
    assert op["error"]["error"]["code"] == "NoRecordsToPatch"
    api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("m1", C))
    headers = {"Content-Type": "application/merge-patch+json"}
    op = api.write("PATCH", f"/stac/collections/{C}/items/m1", json={"properties": {"title": "x"}}, headers=headers)
    assert op["status"] == "Succeeded"
    got = api.call("GET", f"/stac/collections/{C}/items/m1").json()
    assert got["properties"]["title"] == "x" and got["properties"]["datetime"] == "2023-01-01T00:00:00Z"
    op = api.write("PATCH", f"/stac/collections/{C}/items/m1", json={"bbox": [0, 9, 1, 1]})
    assert op["error"]["error"]["code"] == "PatchValidation"
    r = api.call("PATCH", f"/stac/collections/{C}/items/m1", json={"id": "other"})
    assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "PatchValidation")


def test_delete_and_delete_missing(api, emu):
    op = api.write("DELETE", f"/stac/collections/{C}/items/ghost")
    assert op["type"] == "DeleteItem"
    assert op["error"]["error"] == {
        "code": "NoRecordsToDelete",
        "message": f"Item 'ghost' does not exist in collection '{C}' to delete",
    }
    api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("d1", C))
    assert api.write("DELETE", f"/stac/collections/{C}/items/d1")["status"] == "Succeeded"
    assert api.call("GET", f"/stac/collections/{C}/items/d1").status_code == 404
    assert emu.stats()["items"][C] == 0


def test_item_not_visible_until_operation_finishes(gc_emulator):
    emu = gc_emulator(operation_seconds=1.0, collections=[C])
    api = Api(emu)
    r = api.call("POST", f"/stac/collections/{C}/items", json=make_stac_item("late", C))
    assert api.call("GET", f"/stac/collections/{C}/items/late").status_code == 404
    wait_operation(r.headers["location"], emu.headers)
    assert api.call("GET", f"/stac/collections/{C}/items/late").status_code == 200


def test_list_operations_filters_pages_and_cancel(gc_emulator):
    emu = gc_emulator(operation_seconds=30, collections=[C, "col-b"])
    api = Api(emu)
    ids = []
    for i in range(5):
        ids.append(api.call("POST", f"/stac/collections/{C}/items", json=make_stac_item(f"o{i}", C)).json()["id"])
    api.call("POST", "/stac/collections/col-b/items", json=make_stac_item("ob", "col-b"))
    page = api.call("GET", "/inma/operations", params={"$top": 2, "collectionId": C}).json()
    assert len(page["value"]) == 2 and "$skip=2" in page["nextLink"]
    rest = requests.get(page["nextLink"], headers=emu.headers, timeout=5).json()
    assert len(rest["value"]) == 2
    assert api.call("DELETE", f"/inma/operations/{ids[0]}").status_code == 204
    canceled = api.call("GET", f"/inma/operations/{ids[0]}").json()
    assert canceled["status"] == "Canceled" and "error" not in canceled and "startTime" not in canceled
    # canceled while Pending: one history entry, the code in it (T07)
    assert [(h["status"], h["errorCode"]) for h in canceled["statusHistory"]] == [("Canceled", "CanceledOperation")]
    assert api.call("DELETE", f"/inma/operations/{ids[0]}").status_code == 409
    canceled_list = api.call("GET", "/inma/operations", params={"status": "Canceled"}).json()["value"]
    assert [op["id"] for op in canceled_list] == [ids[0]]
    assert api.call("DELETE", "/inma/operations").status_code == 204
    assert emu.stats()["operations"] == {"Canceled": 6}
    assert emu.stats()["items"] == {C: 0, "col-b": 0}


# ------------------------------------------------------------------------ reads, search, collections
def test_list_items_paginates_with_next_links(api):
    batch = {"type": "FeatureCollection", "features": [make_stac_item(f"L{i:02d}", C) for i in range(25)]}
    assert api.write("POST", f"/stac/collections/{C}/items", json=batch)["status"] == "Succeeded"
    seen, url, params = [], f"{api.emu.url}/stac/collections/{C}/items", {"api-version": api.version, "limit": 10}
    while url:
        body = requests.get(url, params=params, headers=api.emu.headers, timeout=5).json()
        seen += [f["id"] for f in body["features"]]
        nxt = [link for link in body["links"] if link["rel"] == "next"]
        url, params = (nxt[0]["href"], None) if nxt else (None, None)
    assert seen == [f"L{i:02d}" for i in range(25)]
    r = api.call("GET", f"/stac/collections/{C}/items", params={"limit": 0})
    assert (r.status_code, r.json()["error"]["target"]) == (400, "limit")


def test_search_filters(api):
    far = make_stac_item("far", C, bbox=[50, 50, 51, 51])
    far["geometry"] = {"type": "Point", "coordinates": [50.5, 50.5]}
    old = make_stac_item("old", C)
    old["properties"]["datetime"] = "2001-01-01T00:00:00Z"
    batch = {"type": "FeatureCollection", "features": [make_stac_item("near", C), far, old]}
    api.write("POST", f"/stac/collections/{C}/items", json=batch)
    ids = lambda r: sorted(f["id"] for f in r.json()["features"])  # noqa: E731
    assert ids(api.call("GET", "/stac/search", params={"collections": C, "bbox": "49,49,52,52"})) == ["far"]
    assert ids(api.call("POST", "/stac/search", json={"collections": [C], "ids": ["old", "near"]})) == ["near", "old"]
    body = {"collections": [C], "datetime": "2020-01-01T00:00:00Z/.."}
    assert ids(api.call("POST", "/stac/search", json=body)) == ["far", "near"]
    r = api.call("POST", "/stac/search", json={"collections": [C], "limit": 1})
    assert len(r.json()["features"]) == 1 and [link["rel"] for link in r.json()["links"]] == ["root", "self", "next"]


def test_collections_create_get_list(api):
    op = api.write("POST", "/stac/collections", json={"id": "new-col", "description": "d"})
    assert (op["status"], op["type"]) == ("Succeeded", "AddCollection")
    assert api.call("GET", "/stac/collections/new-col").json()["description"] == "d"
    assert {c["id"] for c in api.call("GET", "/stac/collections").json()["collections"]} == {C, "new-col"}
    r = api.call("POST", "/stac/collections", json={"id": "new-col"})
    assert (r.status_code, r.headers["x-ms-error-code"]) == (409, "CollectionAlreadyExists")
    r = api.call("GET", "/stac/collections/missing")
    assert (r.status_code, r.headers["x-ms-error-code"]) == (404, "ResourceNotFound")


def test_stats_counts_routes_items_and_operations(api, emu):
    api.write("POST", f"/stac/collections/{C}/items", json=make_stac_item("s1", C))
    api.call("POST", f"/stac/collections/{C}/items", json={"bad": 1})
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["requests"]["POST /stac/collections/{collectionId}/items"] == {"202": 1, "400": 1}
    assert stats["requests"]["GET /inma/operations/{operationId}"]["200"] >= 1
    assert stats["items"] == {C: 1}
    assert stats["operations"] == {"Succeeded": 1}
    assert emu.stats()["items"] == stats["items"]


def test_stored_item_is_a_copy(api):
    item = make_stac_item("copy1", C)
    sent = copy.deepcopy(item)
    api.write("POST", f"/stac/collections/{C}/items", json=item)
    got = api.call("GET", f"/stac/collections/{C}/items/copy1").json()
    assert got["geometry"] == sent["geometry"] and got["properties"] == sent["properties"]
    assert got["assets"]["data"]["type"] == sent["assets"]["data"]["type"]
    assert {link["rel"] for link in got["links"]} == {"self", "parent", "collection", "root"}
    assert "_msft:etag" in got and "_msft:ts" in got
