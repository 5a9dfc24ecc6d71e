"""End to end: ``geocatalog-worker check`` (the start-up preflight as a command) against both emulators.

It takes ``run``'s flags, prints one row per check and exits 1 when a check fails, naming the configuration fault.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest
from gcw_emulators.servicebus.access import LISTEN, SEND, AccessPolicy

from tests.support.harness import REPLY_QUEUE, REQUEST_QUEUE, Harness, ingest_request, stac_item, wait_until

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


WORKER_POLICIES = [  # one name and key on both queues, as a worker's connection string needs; Send on requests missing
    AccessPolicy("worker", "worker-key", frozenset({LISTEN}), entity=REQUEST_QUEUE),
    AccessPolicy("worker", "worker-key", frozenset({SEND}), entity=REPLY_QUEUE),
]


def test_a_missing_send_right_on_the_request_queue_is_reported_at_start() -> None:
    with Harness(collections=["c1"], policies=WORKER_POLICIES) as h:
        assert h.servicebus is not None
        conn = h.servicebus.connection_string_for("worker", REQUEST_QUEUE)
        status, rows = check(h, servicebus_connection_string=conn)
        assert status == 1, rows
        assert rows["schedule"][:2] == ["FAILED", "servicebus_forbidden"], rows
        assert "'Send' claim" in rows["schedule"][2] and "worker-key" not in rows["schedule"][2]
        assert rows["receive"][0] == "ok" and rows["send_reply"][0] == "ok", rows

        h.send([ingest_request("c1", [stac_item("waits", "c1")])])
        w = h.start_worker(servicebus_connection_string=conn)
        assert wait_until(lambda: len(w.events("preflight_check")) == 4, 30), w.output()
        checks = {e["check"]: e for e in w.events("preflight_check")}
        assert (checks["schedule"]["result"], checks["schedule"]["cause"]) == ("FAILED", "servicebus_forbidden")
        assert [e["check"] for e in w.events("configuration_fault")] == ["schedule"]
        assert "worker-key" not in w.output()

        def held_with_the_cause() -> bool:  # intake held: a worker that cannot schedule retries takes nothing
            if w.health_port is None:
                return False
            code, body = h.http(w, "/readyz")
            return code == 503 and json.loads(body)["failed"].get("schedule", {}).get("cause") == (
                "servicebus_forbidden"
            )

        assert wait_until(held_with_the_cause, 30), h.http(w, "/readyz")
        assert h.queue_stats()["active"] == 1 and h.queue_stats()["dead_letter"] == 0
