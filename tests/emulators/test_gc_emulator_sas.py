"""GeoCatalog emulator: SAS APIs, the private-storage asset check, SAS expiry and the claim-check blob store."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.geocatalog import make_stac_item, wait_operation

pytestmark = pytest.mark.timeout(60)
C = "col-s"
PRIVATE = "privatedemo.blob.core.windows.net"
V = {"api-version": "2026-04-15"}


@pytest.fixture
def emu(gc_emulator):
    return gc_emulator(
        operation_seconds=0.1,
        collections=[C],
        private_hosts=[PRIVATE],
        collection_storage={"io-lulc-annual-v02": "privatedemo/lulc"},
        sas_expiry_seconds=3600,
    )


def ingest(emu, item: dict) -> dict:
    r = requests.post(f"{emu.url}/stac/collections/{C}/items", params=V, json=item, headers=emu.headers, timeout=5)
    assert r.status_code == 202, r.text
    return wait_operation(r.headers["location"], emu.headers)


def pc_token(emu, account: str = "privatedemo", container: str = "data") -> str:
    return requests.get(f"{emu.url}/api/sas/v1/token/{account}/{container}", timeout=5).json()["token"]


def test_pc_token_shape_is_anonymous_and_expires_as_configured(emu):
    before = time.time()
    r = requests.get(f"{emu.url}/api/sas/v1/token/privatedemo/data", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"msft:expiry", "token"}
    assert not body["token"].startswith("?")
    fields = parse_qs(body["token"])
    assert fields["sp"] == ["rl"] and fields["sr"] == ["c"] and fields["sv"] == ["2024-05-04"] and "sig" in fields
    expiry = datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00")).timestamp()
    assert before + 3600 - 2 <= expiry <= time.time() + 3600 + 1
    assert fields["se"] == [body["msft:expiry"]]


def test_pc_sign_and_collection_token(emu):
    href = f"https://{PRIVATE}/lulc/a/b.tif"
    signed = requests.get(f"{emu.url}/api/sas/v1/sign", params={"href": href}, timeout=5).json()
    assert signed["href"].startswith(href + "?st=") and "msft:expiry" in signed
    plain = "https://example.com/x.tif"
    assert requests.get(f"{emu.url}/api/sas/v1/sign", params={"href": plain}, timeout=5).json() == {"href": plain}
    # The collection form is scoped to the mapped account/container: it opens lulc, not data.
    token = requests.get(f"{emu.url}/api/sas/v1/token/io-lulc-annual-v02", timeout=5).json()["token"]
    ok = ingest(emu, make_stac_item("lulc1", C, href=f"https://{PRIVATE}/lulc/1.tif?{token}"))
    assert ok["status"] == "Succeeded"
    denied = ingest(emu, make_stac_item("lulc2", C, href=f"https://{PRIVATE}/data/1.tif?{token}"))
    assert denied["error"]["error"]["code"] == "IngestionAuthenticationFailed"
    assert "does not match" in denied["error"]["error"]["message"]


def test_geocatalog_sas_endpoints_need_auth_and_take_duration(emu):
    assert requests.get(f"{emu.url}/sas/token/{C}", params=V, timeout=5).status_code == 401
    r = requests.get(f"{emu.url}/sas/token/{C}", params={**V, "duration": "1"}, headers=emu.headers, timeout=5)
    expiry = datetime.fromisoformat(r.json()["msft:expiry"].replace("Z", "+00:00")).timestamp()
    assert expiry <= time.time() + 61
    r = requests.get(f"{emu.url}/sas/token/missing", params=V, headers=emu.headers, timeout=5)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (404, "ResourceNotFound")
    r = requests.get(
        f"{emu.url}/sas/sign", params={"href": f"https://{PRIVATE}/c/x.tif"}, headers=emu.headers, timeout=5
    )
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "MissingApiVersionParameter"
    r = requests.get(f"{emu.url}/sas/sign", params={**V, "href": f"https://{PRIVATE}/c/x.tif"}, headers=emu.headers)
    assert r.status_code == 200 and "sig=" in r.json()["href"]
    r = requests.get(f"{emu.url}/sas/sign", params={**V, "duration": "abc", "href": "x"}, headers=emu.headers)
    assert (r.status_code, r.json()["error"]["target"]) == (400, "duration")


def test_private_asset_without_token_fails_naming_item_and_asset(emu):
    op = ingest(emu, make_stac_item("p1", C, href=f"https://{PRIVATE}/data/p1.tif"))
    assert op["status"] == "Failed"
    err = op["error"]["error"]
    assert err["code"] == "IngestionAuthenticationFailed"
    assert "'p1'" in err["message"] and "'data'" in err["message"] and "no SAS token" in err["message"]
    assert op["statusHistory"][-1]["errorCode"] == "IngestionAuthenticationFailed"
    assert emu.stats()["items"][C] == 0


def test_private_asset_with_valid_token_ingests_and_public_needs_none(emu):
    href = f"https://{PRIVATE}/data/p2.tif?{pc_token(emu)}"
    assert ingest(emu, make_stac_item("p2", C, href=href))["status"] == "Succeeded"
    assert ingest(emu, make_stac_item("p3", C, href="https://public.example.com/p3.tif"))["status"] == "Succeeded"
    stored = requests.get(f"{emu.url}/stac/collections/{C}/items/p2", params=V, headers=emu.headers, timeout=5).json()
    # copied to the catalog's managed storage; no token kept
    assert stored["assets"]["data"]["href"].startswith(f"https://{emu.managed_account}.blob.core.windows.net/")
    assert "?" not in stored["assets"]["data"]["href"]
    assert emu.stats()["signed_asset_hosts"] == {PRIVATE: 1}  # where signed hrefs went (never the token)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: t.replace("sig=", "sig=AAAA"), "does not match"),
        (lambda t: t.replace("sp=rl", "sp=l"), "lacks read permission"),
        (lambda t: "se=2020-01-01T00%3A00%3A00Z&sp=rl&sv=2024-05-04&sr=c&sig=x", "does not match"),
    ],
)
def test_tampered_tokens_are_refused(emu, mangle, reason):
    href = f"https://{PRIVATE}/data/t.tif?{mangle(pc_token(emu))}"
    op = ingest(emu, make_stac_item("t1", C, href=href))
    assert op["error"]["error"]["code"] == "IngestionAuthenticationFailed"
    assert reason in op["error"]["error"]["message"]
    assert "sig=" not in op["error"]["error"]["message"]


def test_sas_expiry(gc_emulator):
    emu = gc_emulator(operation_seconds=0.1, collections=[C], private_hosts=[PRIVATE], sas_expiry_seconds=2)
    body = requests.get(f"{emu.url}/api/sas/v1/token/privatedemo/data", timeout=5).json()
    token, expiry = body["token"], datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00")).timestamp()
    assert expiry - time.time() <= 2.0
    time.sleep(max(0.0, expiry - time.time()) + 0.05)  # the token's lifetime passes
    op = ingest(emu, make_stac_item("late", C, href=f"https://{PRIVATE}/data/late.tif?{token}"))
    assert op["error"]["error"]["code"] == "IngestionAuthenticationFailed"
    assert "SAS token expired" in op["error"]["error"]["message"]
    fresh = pc_token(emu)
    assert ingest(emu, make_stac_item("late", C, href=f"https://{PRIVATE}/data/late.tif?{fresh}"))["status"] == (
        "Succeeded"
    )


def test_batch_with_one_unsigned_private_asset(emu):
    token = pc_token(emu)
    items = [make_stac_item(f"b{i}", C, href=f"https://{PRIVATE}/data/{i}.tif?{token}") for i in range(3)]
    items[1]["assets"]["extra"] = {"href": f"https://{PRIVATE}/data/unsigned.tif"}
    op = ingest(emu, {"type": "FeatureCollection", "features": items})
    err = op["error"]["error"]
    assert err["code"] == "ErrorsInBatchOperation"
    assert "b1: IngestionAuthenticationFailed" in err["message"]
    assert op["additionalInformation"]["TotalSuccessfulItems"] == "2"
    assert emu.stats()["items"][C] == 2


def test_put_with_unsigned_private_asset_fails(emu):
    ingest(emu, make_stac_item("u1", C))
    r = requests.put(
        f"{emu.url}/stac/collections/{C}/items/u1",
        params=V,
        json=make_stac_item("u1", C, href=f"https://{PRIVATE}/data/u1.tif"),
        headers=emu.headers,
        timeout=5,
    )
    op = wait_operation(r.headers["location"], emu.headers)
    assert op["error"]["error"]["code"] == "IngestionAuthenticationFailed"


def test_blob_store_public_and_private(emu):
    url = emu.put_blob("req-1/item.json", b'{"id": "x"}')
    assert urlsplit(url).path == "/_blobs/emulator/items/req-1/item.json"
    r = requests.get(url, timeout=5)
    assert (r.status_code, r.json(), r.headers["Content-Type"].split(";")[0]) == (200, {"id": "x"}, "application/json")
    assert requests.get(url + "-missing", timeout=5).status_code == 404
    put = requests.put(f"{emu.url}/_blobs/emulator/items/via-http.json", data=b"[1]", timeout=5)
    assert put.status_code == 201
    assert requests.get(f"{emu.url}/_blobs/emulator/items/via-http.json", timeout=5).json() == [1]

    private = emu.put_blob("secret.json", b"{}", account="privatedemo", container="claims")
    r = requests.get(private, timeout=5)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (403, "NoAuthenticationInformation")
    signed = requests.get(f"{emu.url}/api/sas/v1/sign", params={"href": private}, timeout=5).json()["href"]
    assert requests.get(signed, timeout=5).status_code == 200
    wrong = f"{private}?{pc_token(emu, 'privatedemo', 'other')}"
    assert requests.get(wrong, timeout=5).headers["x-ms-error-code"] == "AuthenticationFailed"


def test_a_checked_token_is_judged_again_at_each_time_and_scope() -> None:
    # the emulator remembers what it learnt of a token (signature, permissions, expiry), not the answer at one time
    from gcw_emulators.geocatalog.sas import SasAuthority

    now = [1_000_000.0]
    sas = SasAuthority(60, clock=lambda: now[0])
    token, _ = sas.issue("acct", "box")
    assert sas.check("acct", "box", token) is None
    assert sas.check("acct", "box", token, at=now[0] + 61) == "SAS token expired"
    sas.early_seconds = 120.0  # the sas-early fault, set after the token was first checked
    assert sas.check("acct", "box", token) == "SAS token expired"
    sas.early_seconds = 0.0
    assert sas.check("acct", "other", token) == "SAS signature does not match this storage account and container"
    sas.aliases[("acct", "other")] = ("acct", "box")  # an alias added after the refusal
    assert sas.check("acct", "other", token) is None
    now[0] += 61
    assert sas.check("acct", "box", token) == "SAS token expired"
