"""STAC search on the GeoCatalog emulator: CQL2 filters (JSON on POST, text on GET), intersects and sortby in the
shapes the official samples send (recording S05: s_intersects + datetime + sortby datetime desc), and a clear 400
naming the field for what the emulator does not implement."""

from __future__ import annotations

import pytest
import requests
from gcw_emulators.builders import stac_item
from gcw_emulators.cluster import wait_until

pytestmark = pytest.mark.timeout(60)
V = {"api-version": "2025-04-30-preview"}
C, D = "naip-atl", "other"


def _square(x: float, y: float, size: float = 0.05) -> dict:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


ATLANTA = _square(-84.46, 33.60, 0.07)  # the samples' search polygon, rounded


@pytest.fixture(scope="module")
def emu():
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    with GeoCatalogEmulator(operation_seconds=0.01, collections=[C, D]) as emu:
        rows = [  # id, collection, datetime, cloud cover (None: property absent), square origin
            ("a", C, "2021-11-14T16:00:00Z", 5, (-84.44, 33.62)),
            ("b", C, "2022-06-01T00:00:00Z", 30, (-84.42, 33.63)),
            ("c", C, "2020-03-01T00:00:00Z", 1, (-84.43, 33.61)),
            ("d", C, "2021-12-01T00:00:00Z", None, (10.0, 10.0)),  # far away
            ("e", D, "2021-07-01T00:00:00Z", 8, (-84.44, 33.62)),
        ]
        for item_id, cid, when, cloud, (x, y) in rows:
            props = {} if cloud is None else {"eo:cloud_cover": cloud}
            item = stac_item(item_id, cid, geometry=_square(x, y), datetime=when, properties=props)
            resp = requests.post(f"{emu.url}/stac/collections/{cid}/items", params=V, headers=emu.headers, json=item)
            assert resp.status_code == 202, resp.text
        assert wait_until(lambda: emu.stats()["items"] == {C: 4, D: 1}, 10)
        yield emu


def post(emu, body: dict) -> requests.Response:
    return requests.post(f"{emu.url}/stac/search", params=V, headers=emu.headers, json=body, timeout=5)


def ids(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [f["id"] for f in resp.json()["features"]]


def test_the_samples_search_spatial_temporal_sorted(emu) -> None:
    body = {
        "collections": [C],
        "filter-lang": "cql2-json",
        "filter": {"op": "s_intersects", "args": [{"property": "geometry"}, ATLANTA]},
        "datetime": "2021-01-01T00:00:00Z/2022-12-31T00:00:00Z",
        "sortby": [{"field": "datetime", "direction": "desc"}],
        "limit": 50,
    }
    assert ids(post(emu, body)) == ["b", "a"]


def test_comparison_filters_and_missing_properties(emu) -> None:
    cloudy = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}
    assert ids(post(emu, {"collections": [C], "filter": cloudy})) == ["a", "c"]  # d has no cloud cover: no match
    either = {"op": "or", "args": [{"op": "=", "args": [{"property": "id"}, "b"]}, cloudy]}
    assert sorted(ids(post(emu, {"filter": either}))) == ["a", "b", "c", "e"]
    both = {"op": "and", "args": [cloudy, {"op": "in", "args": [{"property": "collection"}, [D]]}]}
    assert ids(post(emu, {"filter": both})) == ["e"]
    after = {"op": ">=", "args": [{"property": "datetime"}, {"timestamp": "2021-11-01T00:00:00Z"}]}
    assert sorted(ids(post(emu, {"collections": [C], "filter": after}))) == ["a", "b", "d"]


def test_sortby_ascending_missing_last_and_paging_keeps_the_order(emu) -> None:
    sort = [{"field": "eo:cloud_cover", "direction": "asc"}]
    assert ids(post(emu, {"collections": [C], "sortby": sort})) == ["c", "a", "b", "d"]
    first = post(emu, {"collections": [C], "sortby": sort, "limit": 3})
    assert ids(first) == ["c", "a", "b"]
    nxt = next(link for link in first.json()["links"] if link["rel"] == "next")
    assert nxt["body"]["sortby"] == sort
    assert ids(post(emu, nxt["body"])) == ["d"]
    by_id = [{"field": "collection", "direction": "desc"}, {"field": "id", "direction": "desc"}]
    assert ids(post(emu, {"sortby": by_id})) == ["e", "d", "c", "b", "a"]


def test_get_search_with_cql2_text_and_sortby(emu) -> None:
    q = {**V, "collections": C, "filter": "\"eo:cloud_cover\" >= 5 AND id <> 'b'", "sortby": "-datetime"}
    resp = requests.get(f"{emu.url}/stac/search", params=q, headers=emu.headers, timeout=5)
    assert ids(resp) == ["a"]
    q = {**V, "collections": C, "sortby": "+datetime", "limit": 2}
    assert ids(requests.get(f"{emu.url}/stac/search", params=q, headers=emu.headers, timeout=5)) == ["c", "a"]


def test_intersects_field(emu) -> None:
    assert ids(post(emu, {"intersects": _square(9.9, 9.9, 0.5)})) == ["d"]


@pytest.mark.parametrize(
    ("body", "target", "text"),
    [
        ({"filter": {"op": "frobnicate", "args": [{"property": "x"}, 1]}}, "filter", "'frobnicate' is not supported"),
        ({"filter": {"op": "<", "args": [1]}}, "filter", "not a valid cql2-json expression"),
        ({"filter": "id = 'a'", "filter-lang": "cql3"}, "filter-lang", "'cql3' is not supported"),
        ({"filter": "id = 'a'", "filter-lang": "cql2-json"}, "filter", "not valid CQL2 JSON"),
        ({"sortby": [{"field": "datetime", "direction": "up"}]}, "sortby[0].direction", "must be 'asc' or 'desc'"),
        ({"sortby": "datetime,"}, "sortby", "needs a field name"),
        ({"query": {"eo:cloud_cover": {"lt": 10}}}, "query", "not supported"),
        ({"fields": {"include": ["id"]}}, "fields", "not supported"),
        ({"filter": {"op": "=", "args": [1, 1]}, "filter-crs": "EPSG:3857"}, "filter-crs", "not supported"),
        ({"intersects": {"type": "Polygon"}}, "intersects", "GeoJSON geometry"),
    ],
)
def test_unsupported_or_malformed_is_a_400_naming_the_field(emu, body, target, text) -> None:
    resp = post(emu, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "InvalidInputData"
    assert error["target"] == target
    assert error["message"].startswith(f"{target}: ") and text in error["message"]
