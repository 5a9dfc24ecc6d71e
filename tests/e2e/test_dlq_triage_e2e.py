"""End to end: DLQ triage of what a real ``geocatalog-worker run`` dead-lettered. ``dlq list`` shows the
dead-letter reason and the underlying error code in their own columns and marks a cut description;
``dlq replay --dry-run`` names the messages it would replay (``--json`` too); the worker's log line names the code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support.harness import Harness, ingest_request, stac_item, wait_until
from worker.cli import main

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]


def dlq(h: Harness, *args: str) -> str:
    assert h.servicebus is not None
    base = ["dlq", args[0], "--servicebus-connection-string", h.servicebus.connection_string]
    result = CliRunner().invoke(main, [*base, "--request-queue", "requests", *args[1:]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_shows_reason_and_error_code_and_dry_run_names_the_messages() -> None:
    with Harness(operation_seconds=0.1, collections=["c1"]) as h:
        w = h.start_worker(concurrency=4)
        h.wait_ready(w)
        missing, invalid = h.send(
            [
                ingest_request("no-such-collection", [stac_item("x-1", "no-such-collection")]),
                {"version": "1", "action": "ingest", "collection": "c1", "items": [{"id": "bad"}]},
            ]
        )
        assert wait_until(lambda: h.queue_stats()["dead_letter"] == 2, 60), h.queue_stats()
        logged = {e.get("error_code") for e in w.events("request_processed") + w.events("request_invalid")}
        assert None not in logged and len(logged) == 2, logged  # the worker's log lines name the code

        rows = {
            json.loads(line)["message_id"]: json.loads(line)
            for line in dlq(h, "list", "--format", "ndjson").splitlines()
        }
        assert rows[missing]["dead_letter_reason"] == "IngestFailed"
        assert rows[invalid]["dead_letter_reason"] == "InvalidRequest"
        assert {rows[missing]["error_code"], rows[invalid]["error_code"]} == logged

        table = dlq(h, "list", "--description-width", "40", "--description-lines", "2").splitlines()
        header = table[0].split()
        assert header[:5] == ["SEQ", "ENQUEUED", "REASON", "ERROR", "CODE"], table[0]
        line = next(t for t in table if missing in t)
        assert "IngestFailed" in line and rows[missing]["error_code"] in line
        assert any("… (+" in t and "chars)" in t for t in table), table  # the cut is marked, never silent
        full = dlq(h, "list", "--description-lines", "0")
        assert "… (+" not in full

        text = dlq(h, "replay", "--dry-run")
        assert "would replay 2" in text and missing in text and invalid in text
        report = json.loads(dlq(h, "replay", "--dry-run", "--json"))
        assert sorted(m["message_id"] for m in report["would_replay_messages"]) == sorted([missing, invalid])
        assert h.queue_stats()["dead_letter"] == 2  # a dry run changes nothing
