"""The GeoCatalog emulator over HTTPS (generated or given certificate) and behind a TLS proxy (public URL, forwarded
headers): the worker's client and plain ``requests`` calls trust the certificate through REQUESTS_CA_BUNDLE, and every
absolute URL the emulator writes carries the public origin."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
from gcw_emulators.tls import self_signed_certificate

from tests.support.geocatalog import make_stac_item, wait_operation
from worker.adapters.geocatalog.client import GeoCatalogClient
from worker.domain.secrets import Secret

pytestmark = pytest.mark.timeout(60)
VERSION = {"api-version": "2025-04-30-preview"}


def test_generated_certificate_serves_https_to_the_worker_client(gc_emulator, tmp_path, monkeypatch) -> None:
    emu = gc_emulator(tls=True, tls_dir=str(tmp_path), collections=["c1"], operation_seconds=0.05)
    assert emu.url.startswith("https://127.0.0.1:")
    assert emu.cert == tmp_path / "geocatalog-cert.pem"
    assert (tmp_path / "geocatalog-key.pem").stat().st_mode & 0o077 == 0

    with pytest.raises(requests.exceptions.SSLError):  # untrusted until the caller trusts the printed file
        requests.get(f"{emu.url}/stac/collections", params=VERSION, headers=emu.headers, timeout=5, verify=True)

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.cert))
    client = GeoCatalogClient(emu.url, static_token=Secret(emu.token), poll_initial=0.05, poll_max=0.1)
    with client:
        op = client.create_items("c1", [make_stac_item("tls-1", "c1")])
        done = client.wait_for_operation(op, deadline=time.monotonic() + 10)
        assert done.succeeded, done
        item = client.get_item("c1", "tls-1")
    assert item is not None
    assert {link["href"].split("/stac/")[0] for link in item["links"]} == {emu.url}


def test_plain_requests_see_https_locations_and_links(gc_emulator, tmp_path, monkeypatch) -> None:
    emu = gc_emulator(tls=True, tls_dir=str(tmp_path), collections=["c1"], operation_seconds=0.05)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.cert))
    base = emu.url.replace("127.0.0.1", "localhost")  # the certificate names localhost too
    resp = requests.post(
        f"{base}/stac/collections/c1/items", params=VERSION, headers=emu.headers, json=make_stac_item("a", "c1")
    )
    assert resp.status_code == 202, resp.text
    location = resp.headers["operation-location"]
    assert location.startswith(f"{base}/inma/operations/")
    wait_operation(location, emu.headers)
    listing = requests.get(f"{base}/stac/collections/c1/items", params={**VERSION, "limit": 1}, headers=emu.headers)
    assert all(link["href"].startswith("https://localhost:") for link in listing.json()["links"])


def test_given_certificate_and_key(gc_emulator, tmp_path) -> None:
    cert, key = self_signed_certificate(tmp_path, "127.0.0.1", stem="mine")
    emu = gc_emulator(tls_cert=str(cert), tls_key=str(key))
    assert emu.cert == cert
    resp = requests.get(f"{emu.url}/stac/collections", params=VERSION, headers=emu.headers, verify=str(cert))
    assert resp.status_code == 200


def test_bad_tls_arguments_name_the_field(tmp_path) -> None:
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        GeoCatalogEmulator(tls_cert=str(tmp_path / "c.pem"))
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="tls_cert/tls_key: cannot load"):
        GeoCatalogEmulator(tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "c.pem"))
    with pytest.raises(ValueError, match="public_url"):
        GeoCatalogEmulator(public_url="gc.example/stac")


def test_forwarded_headers_set_the_origin_of_every_url(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"], operation_seconds=0.05)  # plain HTTP behind a TLS-terminating proxy
    proxy = {**emu.headers, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gc.example:8443"}
    resp = requests.post(
        f"{emu.url}/stac/collections/c1/items", params=VERSION, headers=proxy, json=make_stac_item("a", "c1")
    )
    assert resp.headers["operation-location"].startswith("https://gc.example:8443/inma/operations/")
    assert resp.headers["location"] == resp.headers["operation-location"]
    wait_operation(resp.headers["operation-location"].replace("https://gc.example:8443", emu.url), emu.headers)
    page = requests.post(f"{emu.url}/stac/search", params=VERSION, headers=proxy, json={"limit": 1}).json()
    assert {link["href"].split("/stac")[0] for link in page["links"]} == {"https://gc.example:8443"}
    assert page["features"][0]["links"][0]["href"] == "https://gc.example:8443/stac/collections/c1"
    direct = requests.get(f"{emu.url}/stac/collections/c1", params=VERSION, headers=emu.headers).json()
    assert direct["links"][0]["href"].startswith(emu.url)  # without the headers: the request's own origin


def test_public_url_wins_over_forwarded_headers(gc_emulator) -> None:
    emu = gc_emulator(collections=["c1"], public_url="https://catalog.example/")
    assert emu.public_url == "https://catalog.example"
    proxy = {**emu.headers, "X-Forwarded-Proto": "http", "X-Forwarded-Host": "other.example"}
    ops = requests.get(f"{emu.url}/inma/operations", params={**VERSION, "$top": 1}, headers=proxy)
    assert ops.status_code == 200
    doc = requests.get(f"{emu.url}/stac/collections/c1", params=VERSION, headers=proxy).json()
    assert {link["href"].split("/stac")[0] for link in doc["links"]} == {"https://catalog.example"}


def test_cli_tls_prints_the_certificate_path(tmp_path) -> None:
    args = ["emulator", "geocatalog", "--port", "0", "--tls", "--tls-dir", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "worker", *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = ""
        while "listening on" not in first:  # structured log lines come first
            first = proc.stdout.readline()
            assert first, "the emulator exited before printing its URL"
        second = proc.stdout.readline()
        assert "listening on https://127.0.0.1:" in first
        assert second.strip().endswith(str(tmp_path / "geocatalog-cert.pem"))
        url = first.split("listening on ")[1].split()[0]
        resp = requests.get(f"{url}/_emulator/stats", verify=str(tmp_path / "geocatalog-cert.pem"), timeout=5)
        assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_every_geocatalog_flag_is_documented() -> None:
    from pathlib import Path

    from gcw_emulators.geocatalog.cli import geocatalog_command

    doc = (Path(__file__).resolve().parents[2] / "docs" / "emulator-geocatalog.md").read_text()
    for param in geocatalog_command.params:
        flag = param.opts[0]
        assert f"{flag} " in doc or f"`{flag}`" in doc or f"[{flag}" in doc, f"{flag} missing from the doc"
