"""Ingestion management on the GeoCatalog emulator over real HTTP: sources, managed identities, definitions, runs
that read a static catalog and write its items, and the operations they produce (shapes from the recordings)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from gcw_emulators.geocatalog.ingestion import EMULATOR_IDENTITY

from tests.emulators.sdk_live.static_catalog import publish_static_catalog
from tests.support.geocatalog import make_stac_item
from tests.support.harness import wait_until

V = {"api-version": "2025-04-30-preview"}
SAS = "sv=2021-01-01&st=2020-01-01T00:00:00Z&se=2099-12-31T23:59:59Z&sr=c&sp=rl&sig=c2VjcmV0c2lnbmF0dXJl"
TIF = b"II*\x00emulated-geotiff"


@pytest.fixture
def emu(gc_emulator):
    emu = gc_emulator()
    emu.create_collection("naip")
    return emu


def call(emu, method: str, path: str, body: Any = None, status: int = 200) -> requests.Response:
    response = requests.request(method, f"{emu.url}{path}", params=V, json=body, headers=emu.headers, timeout=10)
    assert response.status_code == status, response.text
    return response


def publish(emu, ids: list[str], **kwargs: Any) -> str:
    items = [
        make_stac_item(i, "elsewhere", assets={"image": {"href": "./image.tif", "type": "image/tiff"}}) for i in ids
    ]
    return publish_static_catalog(emu, items, files={"image.tif": (TIF, "image/tiff")}, **kwargs)


def definition(emu, url: str, skip: bool = True) -> dict[str, Any]:
    body = {"importType": "StaticCatalog", "displayName": "d", "sourceCatalogUrl": url, "skipExistingItems": skip}
    return call(emu, "POST", "/inma/collections/naip/ingestions", body, status=201).json()


def run_to_end(emu, ingestion_id: str) -> dict[str, Any]:
    runs = f"/inma/collections/naip/ingestions/{ingestion_id}/runs"
    created = call(emu, "POST", runs, status=201)
    assert created.headers["Location"].split("?")[0].endswith(f"{runs}/{created.json()['id']}")
    last: list[dict[str, Any]] = []

    def ended() -> bool:
        last[:] = [call(emu, "GET", f"{runs}/{created.json()['id']}").json()]
        return last[0]["operation"]["status"] not in ("Pending", "Running")

    assert wait_until(ended, 20)
    return last[0]


def test_sources_and_managed_identities(emu) -> None:
    identities = call(emu, "GET", "/inma/ingestion-sources/managed-identities").json()["value"]
    assert identities == [{"objectId": EMULATOR_IDENTITY.object_id, "resourceId": EMULATOR_IDENTITY.resource_id}]
    mi = {
        "id": "2c6d20c3-b494-4d4b-b9d4-88a57cb92883",
        "kind": "BlobManagedIdentity",
        "connectionInfo": {
            "containerUrl": "https://acct.blob.core.windows.net/one",
            "objectId": identities[0]["objectId"],
        },
    }
    created = call(emu, "POST", "/inma/ingestion-sources", mi, status=201)
    assert created.headers["Location"].startswith(f"{emu.url}/inma/ingestion-sources/{mi['id']}?api-version=")
    assert created.headers["Content-Type"] == "application/json; charset=utf-8"
    assert list(created.json()) == ["id", "kind", "created", "connectionInfo"]
    sas = {
        "kind": "SasToken",
        "connectionInfo": {"containerUrl": "https://acct.blob.core.windows.net/two", "sasToken": SAS},
    }
    sas_source = call(emu, "POST", "/inma/ingestion-sources", sas, status=201).json()
    assert sas_source["connectionInfo"] == {
        "containerUrl": "https://acct.blob.core.windows.net/two",
        "expiration": "2099-12-31T23:59:59.0000000Z",
    }
    path = f"/inma/ingestion-sources/{sas_source['id']}"
    assert call(emu, "GET", path).json() == sas_source
    listed = call(emu, "GET", "/inma/ingestion-sources").json()["value"]
    assert [s["kind"] for s in listed] == ["BlobManagedIdentity", "SasToken"] and set(listed[0]) == {
        "id",
        "kind",
        "created",
    }
    replaced = call(emu, "PUT", path, {**sas, "id": sas_source["id"]}).json()
    assert "created" not in replaced and replaced["connectionInfo"]["expiration"].startswith("2099")
    call(emu, "DELETE", path, status=204)
    call(emu, "GET", path, status=404)
    # the token is never served back
    assert "c2VjcmV0c2lnbmF0dXJl" not in call(emu, "GET", "/inma/ingestion-sources").text + created.text


@pytest.mark.parametrize(
    ("change", "status", "target"),
    [
        (
            {
                "connectionInfo": {
                    "containerUrl": "https://a.blob.core.windows.net/c",
                    "sasToken": "se=2099-01-01&sig=x",
                }
            },
            400,
            "connectionInfo.sasToken",
        ),
        ({"kind": "Ftp"}, 400, "kind"),
        ({"id": "not-a-guid"}, 400, "id"),
        ({"connectionInfo": {"containerUrl": "a/relative/path", "sasToken": SAS}}, 400, "connectionInfo.containerUrl"),
        (
            {
                "kind": "BlobManagedIdentity",
                "connectionInfo": {
                    "containerUrl": "https://a.blob.core.windows.net/c",
                    "objectId": "00000000-0000-0000-0000-000000000001",
                },
            },
            400,
            "connectionInfo.objectId",
        ),
        (
            {"connectionInfo": {"containerUrl": "https://taken.blob.core.windows.net/c", "sasToken": SAS}},
            409,
            "connectionInfo.containerUrl",
        ),
    ],
)
def test_bad_sources_are_refused_naming_the_field(emu, change: dict[str, Any], status: int, target: str) -> None:
    taken = {
        "kind": "SasToken",
        "connectionInfo": {"containerUrl": "https://taken.blob.core.windows.net/c", "sasToken": SAS},
    }
    call(emu, "POST", "/inma/ingestion-sources", taken, status=201)
    body = {
        "kind": "SasToken",
        "connectionInfo": {"containerUrl": "https://a.blob.core.windows.net/c", "sasToken": SAS},
    }
    error = call(emu, "POST", "/inma/ingestion-sources", {**body, **change}, status=status).json()["error"]
    assert error["target"] == target, error


def test_a_run_ingests_the_static_catalog(emu) -> None:
    url = publish(emu, ["a1", "a2", "a3"])
    ingestion = definition(emu, url)
    assert ingestion["status"] == "Ready" and ingestion["importType"] == "StaticCatalog"
    run = run_to_end(emu, ingestion["id"])
    op = run["operation"]
    assert op["status"] == "Succeeded", op
    assert (op["totalItems"], op["totalSuccessfulItems"], op["totalFailedItems"], op["totalPendingItems"]) == (
        3,
        3,
        0,
        0,
    )
    assert [h["status"] for h in op["statusHistory"]] == ["Pending", "Running", "Finished"]
    item = call(emu, "GET", "/stac/collections/naip/items/a2").json()
    assert item["collection"] == "naip"
    href = item["assets"]["image"]["href"]
    assert href.startswith(f"https://{emu.managed_account}.blob.core.windows.net/naip-")
    token = call(emu, "GET", "/sas/token/naip").json()["token"]
    assert requests.get(f"{emu.blob_url(href)}?{token}", timeout=10).content == TIF  # the asset bytes were copied
    listed = call(emu, "GET", "/inma/operations").json()["value"]
    mine = next(o for o in listed if o["id"] == op["id"])
    assert mine["type"] == "IngestionStaticCatalog" and mine["collectionId"] == "naip"
    assert mine["additionalInformation"]["TotalSuccessfulItems"] == "3"  # strings there, integers on the run
    # again: skipExistingItems counts the items as done; without it they fail as duplicates
    assert run_to_end(emu, ingestion["id"])["operation"]["totalSuccessfulItems"] == 3
    strict = run_to_end(emu, definition(emu, url, skip=False)["id"])["operation"]
    assert (strict["status"], strict["totalFailedItems"]) == ("Failed", 3)
    assert strict["statusHistory"][-1]["errorCode"] == "ErrorsInBatchOperation"
    runs = call(emu, "GET", f"/inma/collections/naip/ingestions/{ingestion['id']}/runs").json()["value"]
    assert len(runs) == 2 and all(r["sourceCatalogUrl"] == url for r in runs)


def test_a_private_catalog_is_read_through_its_ingestion_source(emu) -> None:
    url = publish(emu, ["p1"], account="privatedemo", container="private-catalog")
    ingestion = definition(emu, url)
    refused = run_to_end(emu, ingestion["id"])["operation"]
    assert refused["status"] == "Failed"
    assert refused["statusHistory"][-1]["errorCode"] == "StaticCatalogFetchFailed"
    assert "private" in refused["statusHistory"][-1]["errorMessage"]
    token = emu.issue_sas("privatedemo", "private-catalog")
    source = {"kind": "SasToken", "connectionInfo": {"containerUrl": url.rsplit("/", 1)[0], "sasToken": token}}
    call(emu, "POST", "/inma/ingestion-sources", source, status=201)
    op = run_to_end(emu, ingestion["id"])["operation"]
    assert op["status"] == "Succeeded" and op["totalSuccessfulItems"] == 1, op
    assert token.split("sig=")[1].split("&")[0] not in call(emu, "GET", "/inma/operations").text


def test_an_unreachable_catalog_fails_the_run_with_the_reason(emu) -> None:
    op = run_to_end(emu, definition(emu, "http://127.0.0.1:9/nowhere/catalog.json")["id"])["operation"]
    assert op["status"] == "Failed" and op["totalItems"] == 0
    last = op["statusHistory"][-1]
    assert (
        last["errorCode"] == "StaticCatalogFetchFailed" and "127.0.0.1:9/nowhere/catalog.json" in last["errorMessage"]
    )


def test_definitions_update_and_delete(emu) -> None:
    ingestion = definition(emu, publish(emu, ["d1"]))
    path = f"/inma/collections/naip/ingestions/{ingestion['id']}"
    updated = call(emu, "PATCH", path, {"importType": "StaticCatalog", "displayName": "renamed"}).json()
    assert updated == {**ingestion, "displayName": "renamed"}
    call(emu, "PATCH", path, {"skipExistingItems": "yes"}, status=400)
    call(emu, "POST", "/inma/collections/naip/ingestions", {"importType": "StaticCatalog"}, status=400)
    call(emu, "POST", "/inma/collections/missing/ingestions", {"importType": "StaticCatalog"}, status=404)
    accepted = call(emu, "DELETE", path, status=202)
    op = accepted.json()
    assert (op["type"], op["status"], op["additionalInformation"]) == (
        "DeleteIngestion",
        "Pending",
        {"IngestionId": ingestion["id"]},
    )
    assert accepted.headers["operation-location"].split("?")[0].endswith(f"/inma/operations/{op['id']}")
    assert call(emu, "GET", path).json()["status"] == "Deleting"
    assert wait_until(
        lambda: requests.get(f"{emu.url}{path}", params=V, headers=emu.headers, timeout=5).status_code == 404, 10
    )
    done = call(emu, "GET", f"/inma/operations/{op['id']}").json()
    assert done["status"] == "Succeeded" and "startTime" not in done and done["additionalInformation"]["IngestionId"]
    assert call(emu, "GET", "/inma/collections/naip/ingestions").json() == {"value": []}


def test_a_run_canceled_while_pending(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=30)
    emu.create_collection("naip")
    ingestion = definition(emu, publish(emu, ["c1"]))
    run = call(emu, "POST", f"/inma/collections/naip/ingestions/{ingestion['id']}/runs", status=201).json()
    assert run["operation"]["status"] == "Pending" and run["operation"]["totalItems"] == 0
    call(emu, "DELETE", f"/inma/operations/{run['operation']['id']}", status=204)
    op = call(emu, "GET", f"/inma/collections/naip/ingestions/{ingestion['id']}/runs/{run['id']}").json()["operation"]
    assert op["status"] == "Canceled" and [h["status"] for h in op["statusHistory"]] == ["Canceled"]
    body = call(emu, "GET", f"/inma/operations/{op['id']}").json()
    assert body["statusHistory"][0]["errorCode"] == "CanceledOperation" and "startTime" not in body
