"""GeoCatalog emulator: SQLite state across restarts, and the ``emulator geocatalog`` command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import requests
from gcw_emulators.geocatalog import GeoCatalogEmulator

from tests.support.geocatalog import make_stac_item, wait_operation

pytestmark = pytest.mark.timeout(60)
C = "col-p"
V = {"api-version": "2026-04-15"}


def test_sqlite_state_survives_restart(tmp_path):
    with GeoCatalogEmulator(port=0, operation_seconds=0.1, data_dir=str(tmp_path), collections=[C]) as emu:
        r = requests.post(
            f"{emu.url}/stac/collections/{C}/items", params=V, json=make_stac_item("keep", C), headers=emu.headers
        )
        op_id = wait_operation(r.headers["location"], emu.headers)["id"]
        # A slow operation still pending when the emulator stops is applied after the restart.
        emu.catalog.durations = type(emu.catalog.durations)(0.5)
        slow = requests.post(
            f"{emu.url}/stac/collections/{C}/items", params=V, json=make_stac_item("later", C), headers=emu.headers
        ).json()["id"]
        blob = emu.put_blob("claims/1.json", b'{"a": 1}')
    assert (tmp_path / "geocatalog.sqlite3").exists()
    with GeoCatalogEmulator(port=0, data_dir=str(tmp_path)) as emu:
        get = requests.get(f"{emu.url}/stac/collections/{C}/items/keep", params=V, headers=emu.headers, timeout=5)
        assert get.status_code == 200 and get.json()["id"] == "keep"
        op = requests.get(f"{emu.url}/inma/operations/{op_id}", params=V, headers=emu.headers, timeout=5).json()
        assert op["status"] == "Succeeded"
        later = wait_operation(f"{emu.url}/inma/operations/{slow}?api-version=2026-04-15", emu.headers)
        assert later["status"] == "Succeeded"
        assert emu.stats()["items"] == {C: 2}
        assert requests.get(blob.replace(blob.split("/_blobs")[0], emu.url), timeout=5).json() == {"a": 1}


def test_cli_prints_url_serves_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "emulator",
            "geocatalog",
            "--port",
            "0",
            "--collection",
            C,
            "--operation-seconds",
            "uniform:0.05,0.1",
            "--fault",
            "latency=0.01",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for _ in range(20):
            line = proc.stdout.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
            if match:
                url = match.group(1)
                break
        assert url and not url.endswith(":0")
        headers = {"Authorization": "Bearer dev-token"}
        r = requests.post(f"{url}/stac/collections/{C}/items", params=V, json=make_stac_item("c1", C), headers=headers)
        assert wait_operation(r.headers["location"], headers)["status"] == "Succeeded"
        assert requests.get(f"{url}/_emulator/faults", timeout=5).json()["faults"][0]["spec"] == "latency=0.01"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "stopped" in err


def test_cli_rejects_bad_fault_and_duration():
    for args in (["--fault", "explode"], ["--operation-seconds", "soon"]):
        done = subprocess.run(
            [sys.executable, "-m", "worker", "emulator", "geocatalog", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert "Invalid value" in done.stderr


def test_start_fails_clearly_when_the_port_is_taken(gc_emulator):
    first = gc_emulator()
    with pytest.raises(RuntimeError, match="failed to start"):
        GeoCatalogEmulator(port=first.port).start()
