"""The quick start's first command: the demo runs the whole job end to end and says so truthfully."""

import subprocess
import sys

import pytest
from gcw_emulators.demo.workload import build_workload


def test_workload_is_deterministic_and_sized():
    a1, a2 = build_workload(40, seed=3)
    b1, b2 = build_workload(40, seed=3)
    assert [r.message_id for r in a1 + a2] == [r.message_id for r in b1 + b2]
    assert len(a1) + len(a2) == 40
    kinds = {r.kind for r in a1 + a2}
    assert {"ingest", "upsert", "delete", "malformed", "geocatalog-failure", "missing-collection"} <= kinds
    # assets sit on the private storage account, so the demo exercises signing
    ingest = next(r for r in a1 if r.kind == "ingest")
    hrefs = [a["href"] for item in ingest.body["items"] for a in item["assets"].values()]
    assert any("demostorage.blob.core.windows.net" in h for h in hrefs)


@pytest.mark.slow
def test_demo_end_to_end_exits_zero_and_shows_every_stage():
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--requests", "24", "--workers", "2", "--operation-seconds", "0.3"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for stage in ("1. ingest", "2. upserts and deletes", "3. results", "4. the dead-letter queue", "5. the catalog"):
        assert stage in out
    assert "6. a pipeline drops items into storage" in out
    assert "storage stage passed" in out or "skipped:" in out  # skipped (saying why) only without Node.js/npm
    assert "duplicate results: 0" in out
    assert "InvalidRequest" in out and "IngestFailed" in out  # dead-letter reasons shown
    assert "replayed 1" in out and ": succeeded" in out
    assert "matches" in out
    assert "SharedAccessKey=" not in out  # the connection string's key is never printed


def test_send_requests_splits_batches_that_would_exceed_the_broker_limit(sb_emulator):
    from azure.servicebus import ServiceBusClient
    from gcw_emulators.demo.traffic import Outgoing, send_requests
    from gcw_emulators.servicebus import QueueConfig

    emu = sb_emulator(queues=[QueueConfig("q")])
    body = b"x" * 20_000  # 50 of these are ~1 MB: far over the 256 KiB batch limit
    with ServiceBusClient.from_connection_string(emu.connection_string) as client:
        sent = send_requests(client, "q", [Outgoing(message_id=f"m{i}", body=body) for i in range(60)])
    assert len(sent) == 60
    assert emu.stats()["entities"]["q"]["active"] == 60
