"""End to end: ``geocatalog-worker check`` (the start-up preflight as a command) against both emulators.

It takes ``run``'s flags, prints one row per check and exits 1 when a check fails, naming the configuration fault.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.support.harness import Harness

pytestmark = pytest.mark.timeout(120)


def check(h: Harness, **overrides: Any) -> tuple[int, dict[str, list[str]]]:
    args = [sys.executable, "-m", "worker", "check", *h.worker_args(**overrides)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=90)
    rows = {}
    for line in proc.stdout.splitlines()[1:]:
        cells = line.split(None, 3)
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    return proc.returncode, rows


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_passes_then_fails_on_each_injected_fault() -> None:
    with Harness(collections=["c1"]) as h:
        assert h.geocatalog is not None
        status, rows = check(h)
        assert status == 0, rows
        assert {name: cells[0] for name, cells in rows.items()} == {
            "receive": "ok",
            "send_reply": "ok",
            "schedule": "ok",
            "geocatalog": "ok",
        }

        status, rows = check(h, reply_queue="no-such-replies")
        assert status == 1 and rows["send_reply"][:2] == ["FAILED", "servicebus_entity_not_found"], rows
        assert rows["receive"][0] == "ok"

        status, rows = check(h, request_queue="no-such-requests")
        assert status == 1 and rows["receive"][:2] == ["FAILED", "servicebus_entity_not_found"], rows

        status, rows = check(h, geocatalog_token="not-the-token")
        assert status == 1 and rows["geocatalog"][:2] == ["FAILED", "geocatalog_unauthorized"], rows
        assert "not-the-token" not in " ".join(rows["geocatalog"])

        h.geocatalog.set_faults(["status=403,path=/stac"])
        status, rows = check(h)
        h.geocatalog.clear_faults()
        assert status == 1 and rows["geocatalog"][:2] == ["FAILED", "geocatalog_forbidden"], rows

        status, rows = check(h, geocatalog_url=f"http://127.0.0.1:{_closed_port()}")
        assert status == 1 and rows["geocatalog"][:2] == ["FAILED", "geocatalog_endpoint"], rows

        status, rows = check(h, geocatalog_url=f"{h.geocatalog.url}/not-a-catalog")
        assert status == 1 and rows["geocatalog"][:2] == ["FAILED", "geocatalog_endpoint"], rows
