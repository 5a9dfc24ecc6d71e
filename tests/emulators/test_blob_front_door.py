"""``BlobFrontDoor``: blob URLs of ``*.blob.core.windows.net`` served from the GeoCatalog emulator's blob store
through an HTTPS proxy, every other destination refused, private blobs still needing their SAS."""

from __future__ import annotations

import socket

import pytest
import requests
from gcw_emulators.blobfrontdoor import BlobFrontDoor

pytestmark = pytest.mark.timeout(60)


def _connect(door: BlobFrontDoor, target: str) -> bytes:
    host, port = door.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return sock.recv(256)


def test_serves_blobs_by_their_real_url_and_refuses_other_destinations(gc_emulator, tmp_path) -> None:
    emu = gc_emulator(tls=True, tls_dir=str(tmp_path / "gc"), collections=["c1"])
    emu.put_blob("dir/a.txt", b"hello", account="publicacct", container="public", content_type="text/plain")
    with BlobFrontDoor(emu.url, emu.cert, tmp_path / "door") as door:
        proxies = {"https": door.url}
        url = "https://publicacct.blob.core.windows.net/public/dir/a.txt"
        response = requests.get(url, proxies=proxies, verify=str(door.cert), timeout=10)
        assert (response.status_code, response.content) == (200, b"hello")
        assert response.headers["Content-Type"].startswith("text/plain")
        missing = requests.get(url.replace("a.txt", "nope.txt"), proxies=proxies, verify=str(door.cert), timeout=10)
        assert missing.status_code == 404
        assert door.requests == 2

        # nothing else goes through: other hosts, other ports, plain forwarding
        assert _connect(door, "example.com:443").startswith(b"HTTP/1.1 403")
        assert _connect(door, "publicacct.blob.core.windows.net:80").startswith(b"HTTP/1.1 403")
        assert _connect(door, "blob.core.windows.net.evil.example:443").startswith(b"HTTP/1.1 403")
        with pytest.raises(requests.exceptions.ProxyError):
            requests.get("https://example.com/", proxies=proxies, verify=str(door.cert), timeout=10)
        assert door.requests == 2


def test_private_blobs_still_need_their_sas(gc_emulator, tmp_path) -> None:
    emu = gc_emulator(tls=True, tls_dir=str(tmp_path / "gc"), collections=["c1"])
    account = "privatedemo"  # the emulator's default private host
    emu.put_blob("x.bin", b"secret-bytes", account=account, container="data", content_type="application/octet-stream")
    with BlobFrontDoor(emu.url, emu.cert, tmp_path / "door") as door:
        proxies, url = {"https": door.url}, f"https://{account}.blob.core.windows.net/data/x.bin"
        denied = requests.get(url, proxies=proxies, verify=str(door.cert), timeout=10)
        assert denied.status_code in (401, 403), denied.status_code
        token = emu.issue_sas(account, "data")
        allowed = requests.get(f"{url}?{token}", proxies=proxies, verify=str(door.cert), timeout=10)
        assert (allowed.status_code, allowed.content) == (200, b"secret-bytes")
