"""Hostile input end to end: the whole corpus of tests/data/hostile/ plus Service Bus-level attacks go through a
real ``geocatalog-worker run`` process. Each gets an ``invalid`` result naming the field (and a dead-letter entry
with reason ``InvalidRequest``), the worker keeps going (a valid request sent afterwards succeeds), no URL that is
not allowed is ever fetched (a canary HTTP server on 127.0.0.1 counts requests), no SAS token is attached to an
href whose host is not an allow-listed blob host (the GeoCatalog emulator records the host of every signed href
it receives), and no secret appears in any log line, result or dead-letter description.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError

from tests.e2e.reliability.support import ReliabilityHarness, assert_no_secrets
from tests.support.harness import stac_item

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[2] / "data" / "hostile"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
COLLECTION = "sentinel-2"
SIGN_HOSTS = ["*.blob.core.windows.net"]
# a signed href must point at an Azure blob host, spelled so that every URL parser agrees on the host
STRICT_BLOB_NETLOC = re.compile(r"[a-z0-9-]+\.blob\.core\.windows\.net(:\d+)?")

# asset hrefs crafted so that a lax host check signs them while an HTTP client (WHATWG parsers treat "\" as "/")
# would send the token to another host
CRAFTED_HREFS = {
    "foreign": "https://evil.example.com/data/x.tif",
    "lookalike": "https://acct.blob.core.windows.net.evil.example.com/data/x.tif",
    "userinfo": "https://acct.blob.core.windows.net@evil.example.com/data/x.tif",
    "fragment": "https://evil.example.com#@acct.blob.core.windows.net/data/x.tif",
    "query": "https://evil.example.com?@acct.blob.core.windows.net/data/x.tif",
    "backslash": "https://acct.evil.example.com\\x.blob.core.windows.net/data/x.tif",
    "percent-slash": "https://acct.evil.example.com%2fx.blob.core.windows.net/data/x.tif",
    "tab": "https://acct.evil.example.com\t.blob.core.windows.net/data/x.tif",
}


class _Canary(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(stac_item("canary", COLLECTION)).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canary() -> Iterator[tuple[int, list[str]]]:
    hits: list[str] = []
    handler = type("Canary", (_Canary,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def _message(body: bytes, tag: str, **meta: object) -> ServiceBusMessage:
    kwargs = {"message_id": tag, "correlation_id": tag, "content_type": "application/json"}
    kwargs.update(meta)  # type: ignore[arg-type]
    return ServiceBusMessage(body, **kwargs)  # type: ignore[arg-type]


def _ingest(items: list[dict]) -> bytes:
    return json.dumps({"version": 1, "action": "ingest", "collection": COLLECTION, "items": items}).encode()


def test_hostile_corpus_and_service_bus_attacks_end_to_end(canary: tuple[int, list[str]]) -> None:
    canary_port, canary_hits = canary
    with ReliabilityHarness(lock_duration=10, operation_seconds=0.05, collections=[COLLECTION]) as h:
        w = h.start_worker(
            concurrency=16,
            item_url_host=["*.blob.core.windows.net"],
            sign_host=SIGN_HOSTS,
            sas_api_url=h.geocatalog.url,  # type: ignore[union-attr]
            allowed_reply_to=["Replies-Audit"],
        )
        h.wait_ready(w)

        expected: dict[str, tuple[str, str]] = {}  # tag -> (field, reason) of an invalid result
        messages = []
        for i, case in enumerate(MANIFEST):
            tag = f"hostile-{i:03d}"
            meta = dict(case["meta"])
            messages.append(_message((CORPUS / case["file"]).read_bytes(), tag, **meta))
            if meta.get("message_id") == "":
                # the SDK cannot send an empty message id (it assigns one); the parser's check is unit-tested
                no_id_tag = tag
                continue
            expected[tag] = (case["field"], case["reason"])

        # claim-check URLs at a live canary on loopback: rejected before any request is made
        for j, url in enumerate(
            [
                f"http://127.0.0.1:{canary_port}/item.json",
                f"http://localhost:{canary_port}/item.json",
                f"https://127.0.0.1:{canary_port}/item.json",
                f"http://[::ffff:127.0.0.1]:{canary_port}/item.json",
                f"http://2130706433:{canary_port}/item.json",
                "http://169.254.169.254/metadata/identity/oauth2/token?resource=https://storage.azure.com",
            ]
        ):
            tag = f"ssrf-{j}"
            body = json.dumps({"version": 1, "action": "ingest", "collection": COLLECTION, "item_urls": [url]})
            messages.append(_message(body.encode(), tag))
            expected[tag] = ("item_urls[0]", "")
        # a huge array that still fits a Standard-tier message (256 KB)
        huge = {"version": 1, "action": "ingest", "collection": COLLECTION, "items": [{}] * 60_000}
        messages.append(_message(json.dumps(huge).encode(), "huge-array"))
        expected["huge-array"] = ("items", "")
        h.send_messages(messages)
        # a 10 MB body never reaches the worker: the broker refuses it (Standard tier, 256 KB); the worker's own
        # 4 MiB cap (Premium) is proven by tests/unit/test_contract_hostile.py
        big = b'{"version": 1, "action": "ingest", "collection": "sentinel-2", "pad": "' + b"x" * 10_000_000 + b'"}'
        with pytest.raises(MessageSizeExceededError):
            h.send_messages([_message(big, "huge-body")])

        # crafted asset hrefs: valid items, so they are ingested (or refused), but never signed for a foreign host
        crafted = {}
        for name, href in CRAFTED_HREFS.items():
            item = stac_item(f"crafted-{name}", COLLECTION, href=href)
            crafted[f"href-{name}"] = item
        crafted["href-legit"] = stac_item("crafted-legit", COLLECTION, href="https://acct.blob.core.windows.net/d/x.tif")
        h.send_messages([_message(_ingest([item]), tag) for tag, item in crafted.items()])

        # the worker keeps going: a valid request sent after all of that succeeds
        h.send_messages([_message(_ingest([stac_item("after-hostile", COLLECTION)]), "valid-after")])

        total = len(messages) + len(crafted) + 1
        replies = h.collect_replies(total, timeout=150, settle_extra=1.0)
        got: dict[str, list] = {}
        for r in replies:
            got.setdefault(r.correlation_id, []).append(r)
        assert not {k: len(v) for k, v in got.items() if len(v) > 1}, "answered more than once"
        missing = set(expected) | set(crafted) | {"valid-after", no_id_tag}
        missing -= set(got)
        assert not missing, f"never answered: {sorted(missing)}"

        dead = {d["properties"].get("gcw-request-id") or d["message_id"]: d for d in h.dead_letter_records()}
        for tag, (field, reason) in expected.items():
            body = got[tag][0].body
            assert body["status"] == "invalid", (tag, body)
            message = body["error"]["message"]
            assert message.startswith(field), (tag, field, message)
            assert reason in message, (tag, reason, message)
            assert "\n" not in message and len(message) <= 700
        invalid_dead = [d for d in dead.values() if d["reason"] == "InvalidRequest"]
        # every invalid request that has a message id is also dead-lettered with the field in the description
        by_id = {d["message_id"]: d for d in invalid_dead}
        for tag, (field, _reason) in expected.items():
            if tag in by_id:
                assert field in by_id[tag]["description"], by_id[tag]
        assert len(invalid_dead) >= len(expected) - 1, f"{len(invalid_dead)} dead-lettered of {len(expected)}"

        assert got["valid-after"][0].body["status"] == "succeeded", got["valid-after"][0].body
        assert got[no_id_tag][0].body["request_id"], got[no_id_tag][0].body
        assert not canary_hits, f"the worker fetched a URL that is not allowed: {canary_hits}"

        for tag in crafted:
            assert got[tag][0].body["status"] in ("succeeded", "invalid", "failed"), got[tag][0].body
        assert got["href-legit"][0].body["status"] == "succeeded"
        signed = h.geocatalog.stats()["signed_asset_hosts"]  # type: ignore[union-attr]
        assert signed.get("acct.blob.core.windows.net", 0) >= 1, signed  # the record works
        foreign = [netloc for netloc in signed if not STRICT_BLOB_NETLOC.fullmatch(netloc)]
        assert not foreign, f"a SAS token was attached to a foreign host: {foreign}"

        assert w.proc.poll() is None, "the worker died"
        stats = h.queue_stats()
        assert stats["active"] == 0 and stats["locked"] == 0, stats
        assert_no_secrets(h, replies, [w])
        assert "SECRETSIG" not in w.output()
