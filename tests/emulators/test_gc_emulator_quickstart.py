"""The quickstart flow of Planetary Computer Pro against the emulator, over real HTTP with requests."""

from __future__ import annotations

import pytest
import requests

from tests.support.geocatalog import make_stac_item as make_item
from tests.support.geocatalog import wait_operation as poll
from tests.support.harness import wait_until

API = "2025-04-30-preview"
pytestmark = pytest.mark.timeout(60)


def test_quickstart_flow(gc_emulator):
    emu = gc_emulator(operation_seconds=0.3, collections=["spatio-quickstart"])
    geocatalog_url, collection_id = emu.url, "spatio-quickstart"
    headers = {"Authorization": f"Bearer {emu.token}"}

    # SAS token from the (emulated) open Planetary Computer SAS API, appended as in the quickstart.
    sas_token = requests.get(f"{geocatalog_url}/api/sas/v1/token/io-lulc-annual-v02", timeout=5).json()["token"]
    item_collection = {
        "type": "FeatureCollection",
        "features": [make_item(i, "io-lulc-annual-v02") for i in ("23M-2023", "23L-2023", "24M-2023", "24L-2023")],
    }
    for item in item_collection["features"]:
        for asset in item["assets"].values():
            asset["href"] = "?".join([asset["href"], sas_token])
        item["collection"] = collection_id

    response = requests.post(
        f"{geocatalog_url}/stac/collections/{collection_id}/items?api-version={API}",
        headers=headers,
        json=item_collection,
        timeout=5,
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == response.headers["operation-location"]
    assert response.json()["status"] == "Pending"
    assert "additionalInformation" not in response.json()  # a Pending body carries no counters (recordings)

    seen = []
    bodies: list[dict] = []
    location = response.headers["location"]

    def finished() -> bool:
        bodies.append(requests.get(location, headers=headers, timeout=5).json())
        seen.append(bodies[-1]["status"])
        return seen[-1] not in {"Pending", "Running"}

    assert wait_until(finished, 30, interval=0.02), seen[-5:]
    assert seen[-1] == "Succeeded"
    assert bodies[-1]["additionalInformation"]["TotalItems"] == "4"
    assert "Running" in seen or "Pending" in seen

    items_response = requests.get(
        f"{geocatalog_url}/stac/collections/{collection_id}/items",
        headers=headers,
        params={"api-version": API},
        timeout=5,
    )
    items_ingested = items_response.json()
    assert sorted(f["id"] for f in items_ingested["features"]) == ["23L-2023", "23M-2023", "24L-2023", "24M-2023"]
    # The service keeps no SAS token in stored hrefs.
    assert all("sig=" not in f["assets"]["data"]["href"] for f in items_ingested["features"])

    search = requests.get(
        f"{geocatalog_url}/stac/search",
        headers=headers,
        params={"api-version": API, "collection": collection_id},
        timeout=5,
    ).json()
    assert len(search["features"]) == 4

    item_id = item_collection["features"][0]["id"]
    delete = requests.delete(
        f"{geocatalog_url}/stac/collections/{collection_id}/items/{item_id}",
        headers=headers,
        params={"api-version": API},
        timeout=5,
    )
    assert delete.status_code == 202
    assert poll(delete.headers["location"], headers)["status"] == "Succeeded"
    gone = requests.get(
        f"{geocatalog_url}/stac/collections/{collection_id}/items/{item_id}",
        headers=headers,
        params={"api-version": API},
        timeout=5,
    )
    assert gone.status_code == 404
    assert gone.headers["x-ms-error-code"] == "ResourceNotFound"
    assert emu.stats()["items"] == {"spatio-quickstart": 3}
