"""The GeoCatalog emulator's STAC discovery documents: the landing page (GET /stac and /stac/), the recorded
conformance classes and the recorded queryables shape; each link of the landing page answers."""

from __future__ import annotations

import pytest
import requests
from gcw_emulators.geocatalog.landing import CONFORMANCE

pytestmark = pytest.mark.timeout(30)
V = {"api-version": "2025-04-30-preview"}


@pytest.mark.parametrize("path", ["/stac", "/stac/"])
def test_landing_page_links_to_what_the_emulator_serves(gc_emulator, path) -> None:
    emu = gc_emulator(collections=["c1"])
    resp = requests.get(f"{emu.url}{path}", params=V, headers=emu.headers, timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    page = resp.json()
    assert page["type"] == "Catalog" and page["id"] and page["description"]
    assert page["conformsTo"] == list(CONFORMANCE)
    rels = [(link["rel"], link.get("method")) for link in page["links"]]
    assert ("search", "POST") in rels and ("data", None) in rels and ("conformance", None) in rels
    for link in page["links"]:
        assert link["href"].startswith(f"{emu.url}/stac")
        if link.get("method") != "POST":
            follow = requests.get(link["href"], params=V, headers=emu.headers, timeout=5)
            assert follow.status_code == 200, (link, follow.text)


def test_landing_page_needs_auth_like_every_stac_route(gc_emulator) -> None:
    emu = gc_emulator()
    assert requests.get(f"{emu.url}/stac", params=V, timeout=5).status_code == 401


def test_conformance_and_queryables_in_the_recorded_shapes(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"])
    conf = requests.get(f"{emu.url}/stac/conformance", params=V, headers=emu.headers, timeout=5)
    assert conf.json() == {"conformsTo": list(CONFORMANCE)}
    q = requests.get(f"{emu.url}/stac/collections/c1/queryables", params=V, headers=emu.headers, timeout=5)
    assert q.status_code == 200 and q.headers["Content-Type"] == "application/schema+json"
    doc = q.json()
    assert list(doc) == ["$id", "type", "title", "$schema", "properties", "additionalProperties"]
    assert doc["$id"] == f"{emu.url}/stac/collections/c1/queryables?api-version=2025-04-30-preview"
    assert list(doc["properties"]) == ["id", "datetime", "geometry"]
    missing = requests.get(f"{emu.url}/stac/collections/nope/queryables", params=V, headers=emu.headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"
