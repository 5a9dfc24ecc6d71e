"""GeoCatalog emulator: every fault kind, seeded reproducibility, the request budget and the admin endpoint."""

from __future__ import annotations

import time

import pytest
import requests
from gcw_emulators.geocatalog import FaultSpecError
from gcw_emulators.geocatalog.faults import FaultSet, parse_fault

from tests.support.geocatalog import make_stac_item, wait_operation

pytestmark = pytest.mark.timeout(60)
C = "col-f"
V = {"api-version": "2026-04-15"}
PRIVATE = "privatedemo.blob.core.windows.net"


def items_url(emu) -> str:
    return f"{emu.url}/stac/collections/{C}/items"


def get_items(emu, session=requests) -> requests.Response:
    return session.get(items_url(emu), params=V, headers=emu.headers, timeout=5)


# ------------------------------------------------------------------------ the grammar (pure)
@pytest.mark.parametrize(
    ("spec", "kind", "value", "rate"),
    [
        ("latency=0.2", "latency", 0.2, 1.0),
        ("status=503,rate=0.3", "status", 503, 0.3),
        ("reset,rate=0.05", "reset", None, 0.05),
        ("op-fail,rate=0.1,code=InternalError", "op-fail", None, 0.1),
        ("outage=60", "outage", 60, 1.0),
        ("auth-expired=30", "auth-expired", 30, 1.0),
        ("sas-early=10", "sas-early", 10, 1.0),
        ("budget=50", "budget", 50, 1.0),
        (" status=429 , retry-after=2 , path=/stac , method=post , count=3 ", "status", 429, 1.0),
    ],
)
def test_parse_valid_specs(spec, kind, value, rate):
    fault = parse_fault(spec)
    assert (fault.kind, fault.value, fault.rate) == (kind, value, rate)


def test_parse_options():
    fault = parse_fault("status=429,retry-after=2,path=stac,method=post,count=3")
    assert (fault.path, fault.method, fault.count, fault.options) == ("/stac", "POST", 3, {"retry-after": "2"})


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ("explode", "unknown kind"),
        ("latency", "needs a value"),
        ("latency=abc", "not a number"),
        ("status=200", "400..599"),
        ("reset=1", "takes no value"),
        ("status=503,rate=2", "invalid value for rate"),
        ("status=503,colour=red", "unknown option"),
        ("latency=1,code=X", "unknown option"),
        ("budget=0", "> 0"),
    ],
)
def test_parse_invalid_specs(spec, fragment):
    with pytest.raises(FaultSpecError, match=fragment):
        parse_fault(spec)


def test_decisions_are_seeded():
    def pattern(seed: int) -> list[int | None]:
        faults = FaultSet(time.time, seed=seed)
        faults.set(["status=503,rate=0.5"])
        return [faults.decide("GET", "/stac/x", budgeted=True).status for _ in range(40)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < pattern(7).count(503) < 35


# ------------------------------------------------------------------------ each fault over HTTP
def test_latency_is_added_only_where_matched(gc_emulator):
    emu = gc_emulator(collections=[C], faults=["latency=0.3,path=/stac"])
    start = time.monotonic()
    assert get_items(emu).status_code == 200
    assert time.monotonic() - start >= 0.3
    assert emu.stats()["faults_injected"] == {"latency": 1}
    requests.get(f"{emu.url}/api/sas/v1/token/a/b", timeout=5)
    assert emu.stats()["faults_injected"] == {"latency": 1}


@pytest.mark.parametrize(
    ("status", "code"), [(429, "TooManyRequests"), (500, "InternalServerError"), (503, "ServiceUnavailable")]
)
def test_injected_status(gc_emulator, status, code):
    emu = gc_emulator(collections=[C], faults=[f"status={status},retry-after=2,count=2"])
    answers = [get_items(emu) for _ in range(3)]
    assert [r.status_code for r in answers] == [status, status, 200]
    assert answers[0].headers["x-ms-error-code"] == code
    assert answers[0].json()["error"]["code"] == code
    if status in (429, 503):
        assert answers[0].headers["Retry-After"] == "2"
    stats = emu.stats()
    assert stats["requests"]["GET /stac/collections/{collectionId}/items"] == {str(status): 2, "200": 1}
    assert stats["faults_injected"] == {f"status-{status}": 2}


def test_rate_is_a_reproducible_share(gc_emulator):
    def run() -> list[int]:
        emu = gc_emulator(collections=[C], faults=["status=503,rate=0.3"], seed=42)
        with requests.Session() as s:
            return [get_items(emu, s).status_code for _ in range(60)]

    first, second = run(), run()
    assert first == second
    assert 5 <= first.count(503) <= 35


def test_connection_reset(gc_emulator):
    emu = gc_emulator(collections=[C], faults=["reset,count=1,method=GET"])
    with pytest.raises(requests.ConnectionError):
        get_items(emu)
    assert get_items(emu).status_code == 200
    assert emu.stats()["requests"]["GET /stac/collections/{collectionId}/items"] == {"reset": 1, "200": 1}


def test_operation_failure_fault(gc_emulator):
    emu = gc_emulator(operation_seconds=0.1, collections=[C], faults=["op-fail,code=InternalError,count=1"])
    batch = {"type": "FeatureCollection", "features": [make_stac_item(f"o{i}", C) for i in range(2)]}
    r = requests.post(items_url(emu), params=V, json=batch, headers=emu.headers, timeout=5)
    op = wait_operation(r.headers["location"], emu.headers)
    assert op["status"] == "Failed"
    assert op["error"]["error"]["code"] == "InternalError"
    assert op["additionalInformation"]["TotalFailedItems"] == "2"
    assert emu.stats()["items"][C] == 0
    r = requests.post(items_url(emu), params=V, json=batch, headers=emu.headers, timeout=5)
    assert wait_operation(r.headers["location"], emu.headers)["status"] == "Succeeded"


def test_outage_answers_503_then_recovers(gc_emulator):
    emu = gc_emulator(collections=[C])
    emu.set_faults(["outage=1"])
    r = get_items(emu)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (503, "ServiceUnavailable")
    assert float(r.headers["Retry-After"]) >= 1
    assert requests.get(f"{emu.url}/api/sas/v1/token/a/b", timeout=5).status_code == 503
    assert requests.get(f"{emu.url}/_emulator/stats", timeout=5).status_code == 200  # admin is never faulted
    time.sleep(1.1)  # the 1 s outage passes
    assert get_items(emu).status_code == 200


def test_bearer_token_expiry_window(gc_emulator):
    emu = gc_emulator(collections=[C], faults=["auth-expired=1"])
    r = get_items(emu)
    assert (r.status_code, r.headers["x-ms-error-code"]) == (401, "ExpiredAuthenticationToken")
    assert requests.get(f"{emu.url}/api/sas/v1/token/a/b", timeout=5).status_code == 200  # anonymous API
    time.sleep(1.1)  # the 1 s window of expired bearer tokens passes
    assert get_items(emu).status_code == 200


def test_sas_tokens_expiring_early(gc_emulator):
    emu = gc_emulator(operation_seconds=0.1, collections=[C], private_hosts=[PRIVATE], sas_expiry_seconds=600)
    token = requests.get(f"{emu.url}/api/sas/v1/token/privatedemo/data", timeout=5).json()["token"]
    emu.set_faults(["sas-early=3600"])
    item = make_stac_item("e1", C, href=f"https://{PRIVATE}/data/e1.tif?{token}")
    r = requests.post(items_url(emu), params=V, json=item, headers=emu.headers, timeout=5)
    op = wait_operation(r.headers["location"], emu.headers)
    assert "SAS token expired" in op["error"]["error"]["message"]
    emu.clear_faults()
    r = requests.post(items_url(emu), params=V, json=item, headers=emu.headers, timeout=5)
    assert wait_operation(r.headers["location"], emu.headers)["status"] == "Succeeded"


@pytest.mark.parametrize("how", ["kwarg", "fault"])
def test_request_budget(gc_emulator, how):
    kwargs = {"request_budget": 5} if how == "kwarg" else {"faults": ["budget=5"]}
    emu = gc_emulator(collections=[C], **kwargs)
    with requests.Session() as s:
        answers = [get_items(emu, s) for _ in range(20)]
        limited = [r for r in answers if r.status_code == 429]
        assert 5 <= len(limited) <= 15
        assert limited[0].headers["Retry-After"] == "1"
        assert limited[0].headers["x-ms-error-code"] == "TooManyRequests"
        # Not budgeted: the blob store and the admin API.
        assert all(s.get(f"{emu.url}/_emulator/stats", timeout=5).status_code == 200 for _ in range(10))
        time.sleep(1.0)  # a second passes: the budget refills
        assert get_items(emu, s).status_code == 200
    assert emu.stats()["faults_injected"]["budget"] == len(limited)


def test_admin_endpoint_sets_lists_and_clears(gc_emulator):
    emu = gc_emulator(collections=[C])
    admin = f"{emu.url}/_emulator/faults"
    r = requests.put(admin, json={"faults": ["status=500,path=/stac,method=POST", "budget=100"]}, timeout=5)
    assert r.status_code == 200
    assert [f["kind"] for f in r.json()["faults"]] == ["status", "budget"] and r.json()["budget"] == 100
    assert get_items(emu).status_code == 200  # method filter: GET is not faulted
    post = requests.post(items_url(emu), params=V, json=make_stac_item("a", C), headers=emu.headers, timeout=5)
    assert post.status_code == 500
    assert requests.get(admin, timeout=5).json()["faults"][0]["injected"] == 1
    bad = requests.put(admin, json={"faults": ["status=500", "nonsense"]}, timeout=5)
    assert (bad.status_code, bad.headers["x-ms-error-code"]) == (400, "InvalidFaultSpec")
    assert "nonsense" in bad.json()["error"]["message"]
    assert len(requests.get(admin, timeout=5).json()["faults"]) == 2  # a bad spec changes nothing
    assert requests.delete(admin, timeout=5).json() == {"faults": [], "budget": None}
    post = requests.post(items_url(emu), params=V, json=make_stac_item("a", C), headers=emu.headers, timeout=5)
    assert post.status_code == 202
    with pytest.raises(FaultSpecError):
        emu.set_faults(["latency=-1"])
