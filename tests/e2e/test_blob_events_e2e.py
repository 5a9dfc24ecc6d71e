"""End to end: Blob Storage events on Azurite + both emulators, through real ``geocatalog-worker run`` processes.

Items are real STAC JSON uploaded to Azurite (HTTPS, a self-signed certificate the worker trusts through
``REQUESTS_CA_BUNDLE``); events are built exactly as Event Grid delivers them to Service Bus (one event per
message, Event Grid's application properties) and sent through the Service Bus emulator.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gcw_emulators.azurite import ACCOUNT, Azurite, AzuriteUnavailable
from gcw_emulators.eventgrid import blob_event, eventgrid_properties, next_sequencer
from gcw_emulators.geocatalog.catalog import ApiError
from gcw_emulators.identity import TokenEndpoint

from tests.support.harness import REQUEST_QUEUE, Harness, Reply, stac_item, wait_until

pytestmark = pytest.mark.timeout(240)

C = "naip"
ITEMS = "items"
DROPS = "drops"
ASSETS = "assets"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        server = Azurite(tmp_path_factory.mktemp("azurite"), tools=REPO / ".tools").start()
    except AzuriteUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"Azurite unavailable: {exc}")
    for container in (ITEMS, DROPS, ASSETS):
        server.create_container(container)
    yield server
    server.stop()


def send_events(h: Harness, events: list[dict[str, Any]]) -> list[str]:
    """Send each event as its own message, the way an Event Grid subscription delivers them."""
    import json

    from azure.servicebus import ServiceBusMessage

    with h.client.get_queue_sender(REQUEST_QUEUE) as sender:
        sender.send_messages(
            [
                ServiceBusMessage(
                    json.dumps(e).encode(),
                    application_properties=eventgrid_properties(e),  # type: ignore[arg-type]
                    content_type="application/json" if "eventType" in e else "application/cloudevents+json",
                )
                for e in events
            ]
        )
    return [e["id"] for e in events]


def by_id(replies: list[Reply]) -> dict[str, Reply]:
    counts = Counter(r.body["request_id"] for r in replies)
    assert all(v == 1 for v in counts.values()), f"answered more than once: {counts}"
    return {r.body["request_id"]: r for r in replies}


def catalog_item(h: Harness, item_id: str, collection: str = C) -> dict[str, Any] | None:
    assert h.geocatalog is not None
    try:
        return h.geocatalog.catalog.get_item(collection, item_id)
    except ApiError:
        return None


def worker_flags(az: Azurite, **extra: Any) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "item_url_host": [az.host],
        "storage_host": [az.host],
        "sign_host": [az.host],
        "event_mapping": [
            f"container={ITEMS},prefix=stac/,suffix=.json,collection={C}",
            f"container={DROPS},suffix=.json,collection=@item",
        ],
        "batch_linger_ms": 50,
    }
    flags.update(extra)
    return flags


def item_with_asset(az: Azurite, item_id: str, collection: str = C) -> dict[str, Any]:
    return stac_item(item_id, collection, href=az.blob_url(ASSETS, f"{item_id}.tif"))


def test_blob_events_ingest_delete_in_any_order_with_sas(azurite: Azurite) -> None:
    az = azurite
    sas = {c: az.container_sas(c) for c in (ITEMS, DROPS, ASSETS)}
    with Harness(lock_duration=5, operation_seconds=0.1, collections=[C, "other"]) as h:
        w = h.start_worker(
            env={"REQUESTS_CA_BUNDLE": str(az.cert)},
            **worker_flags(
                az,
                storage_credential="sas",
                static_sas=[f"{ACCOUNT}/{c}={token}" for c, token in sas.items()],
            ),
        )
        h.wait_ready(w)

        # BlobCreated in both schemas, many at once (batched like requests), plus @item collection mapping
        urls = {f"e{i}": az.upload(ITEMS, f"stac/2024/e{i}.json", item_with_asset(az, f"e{i}")) for i in range(6)}
        drop = az.upload(DROPS, "in/d1.json", item_with_asset(az, "d1", "other"))
        created = [
            blob_event("Created", url, ITEMS, f"stac/2024/{name}.json", schema="cloudevents" if i % 2 else "eventgrid")
            for i, (name, url) in enumerate(urls.items())
        ]
        created.append(blob_event("Created", drop, DROPS, "in/d1.json"))
        ids = send_events(h, created)
        replies = by_id(h.collect_replies(len(ids), timeout=60, settle_extra=0.5))
        assert set(replies) == set(ids)
        for event in created:
            r = replies[event["id"]]
            assert r.body["status"] == "succeeded", r.body
            assert r.message_id == f"result-{event['id']}" and r.correlation_id == event["id"]
        assert all(catalog_item(h, name) is not None for name in urls)
        assert catalog_item(h, "d1", "other") is not None
        assert h.geocatalog is not None  # every asset href reached GeoCatalog signed (with a SAS signature)
        assert h.geocatalog.stats()["signed_asset_hosts"].get(az.host, 0) >= len(created)

        # BlobDeleted -> item deleted
        az.delete(ITEMS, "stac/2024/e0.json")
        late_create = created[0]  # its sequencer is older than the delete's
        delete = blob_event("Deleted", urls["e0"], ITEMS, "stac/2024/e0.json")
        assert delete["data"]["sequencer"] > late_create["data"]["sequencer"]
        ids = send_events(h, [delete])
        r = by_id(h.collect_replies(1, timeout=30))[ids[0]]
        assert r.body["status"] == "succeeded" and r.body["action"] == "delete"
        assert [i["id"] for i in r.body["items"]] == ["e0"]
        assert catalog_item(h, "e0") is None

        # out of order: the older BlobCreated arrives after the delete (a fresh delivery: a new event id) ->
        # superseded, nothing re-ingested; an older BlobDeleted after a re-create -> superseded, nothing deleted
        stale_create = dict(late_create, id="stale-create-e0")
        old_delete = blob_event("Deleted", urls["e1"], ITEMS, "stac/2024/e1.json", sequencer=next_sequencer())
        az.upload(ITEMS, "stac/2024/e1.json", item_with_asset(az, "e1"))  # re-created after that delete
        ids = send_events(h, [stale_create, old_delete])
        got = by_id(h.collect_replies(2, timeout=30))
        for event_id in ids:
            assert got[event_id].body["status"] == "succeeded" and got[event_id].body["items"] == []
        assert catalog_item(h, "e0") is None and catalog_item(h, "e1") is not None
        assert len(w.events("event_superseded")) == 2

        # a redelivered event (same event id, another Service Bus message) is answered once: a fresh event sent
        # twice gets one answer, and an event answered earlier gets none again
        fresh = blob_event("Created", urls["e3"], ITEMS, "stac/2024/e3.json")
        send_events(h, [fresh, fresh, created[2]])
        replies_again = h.collect_replies(1, timeout=30, settle_extra=2.0)
        assert [r.body["request_id"] for r in replies_again] == [fresh["id"]]
        assert wait_until(lambda: h.queue_stats()["active"] == 0, 10)

        # private claim-check item_urls read with SAS
        private = az.upload(ITEMS, "claims/p1.json", item_with_asset(az, "p1"))
        ids = h.send([{"version": 1, "action": "ingest", "collection": C, "item_urls": [private]}])
        r = by_id(h.collect_replies(1, timeout=30))[ids[0]]
        assert r.body["status"] == "succeeded", r.body
        assert catalog_item(h, "p1") is not None

        # no secret in the worker's output
        assert all(token.split("sig=")[1].split("&")[0] not in w.output() for token in sas.values())


def test_bad_events_are_answered_invalid_with_their_field(azurite: Azurite) -> None:
    az = azurite
    sas = az.container_sas(ITEMS)
    with Harness(lock_duration=5, operation_seconds=0.1, collections=[C]) as h:
        w = h.start_worker(
            env={"REQUESTS_CA_BUNDLE": str(az.cert)},
            **worker_flags(az, storage_credential="sas", static_sas=[f"{ACCOUNT}/{ITEMS}={sas}"]),
        )
        h.wait_ready(w)
        good = az.upload(ITEMS, "stac/ok.json", stac_item("ok", C))
        not_json = az.upload(ITEMS, "stac/nj.json", b"<xml/>")
        not_item = az.upload(ITEMS, "stac/ni.json", {"type": "FeatureCollection", "features": []})
        big = stac_item("big", C)
        big["properties"]["padding"] = "x" * 1_100_000
        too_big = az.upload(ITEMS, "stac/big.json", big)
        no_url = blob_event("Created", good, ITEMS, "stac/ok.json")
        del no_url["data"]["url"]
        cases = {
            "type": (blob_event("Created", good, ITEMS, "stac/ok.json", schema="cloudevents"), "type"),
            "no-url": (no_url, "data.url"),
            "host": (
                blob_event("Created", "https://evil.example.com/items/stac/ok.json", ITEMS, "stac/ok.json"),
                "data.url",
            ),
            "json": (blob_event("Created", not_json, ITEMS, "stac/nj.json"), "data.url"),
            "item": (blob_event("Created", not_item, ITEMS, "stac/ni.json"), "blob.type"),
            "size": (blob_event("Created", too_big, ITEMS, "stac/big.json"), "data.url"),
            "spec": (blob_event("Created", good, ITEMS, "stac/ok.json", schema="cloudevents"), "specversion"),
            "unmatched": (blob_event("Created", good, ITEMS, "other/ok.json"), "subject"),
        }
        cases["type"][0]["type"] = "Microsoft.Storage.BlobTierChanged"
        cases["spec"][0]["specversion"] = "0.3"
        cases["unmatched"][0]["data"]["url"] = az.blob_url(ITEMS, "other/ok.json")
        ids = send_events(h, [event for event, _ in cases.values()])
        replies = by_id(h.collect_replies(len(ids), timeout=60, settle_extra=0.5))
        for name, (event, field) in cases.items():
            r = replies[event["id"]]
            assert r.body["status"] == "invalid", (name, r.body)
            assert r.body["error"]["message"].startswith(f"{field}: "), (name, r.body["error"])
        assert "larger than the limit" in replies[cases["size"][0]["id"]].body["error"]["message"]
        assert wait_until(lambda: len(h.dead_letters()) == len(cases), 10)
        assert {m.dead_letter_reason for m in h.dead_letters()} == {"InvalidRequest"}
        assert w.proc.poll() is None  # none of it stopped the worker


def test_private_blobs_read_with_a_token_credential(azurite: Azurite) -> None:
    az = azurite
    with TokenEndpoint() as identity, Harness(lock_duration=5, operation_seconds=0.1, collections=[C]) as h:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        w = h.start_worker(
            env={**env, **identity.env(), "REQUESTS_CA_BUNDLE": str(az.cert)},
            **worker_flags(az, storage_credential="identity", sign_host=None),
        )
        h.wait_ready(w)
        claim = az.upload(ITEMS, "claims/t1.json", stac_item("t1", C))
        url = az.upload(ITEMS, "stac/t2.json", stac_item("t2", C))
        ids = h.send([{"version": 1, "action": "ingest", "collection": C, "item_urls": [claim]}])
        ids += send_events(h, [blob_event("Created", url, ITEMS, "stac/t2.json")])
        replies = by_id(h.collect_replies(2, timeout=60))
        assert all(replies[i].body["status"] == "succeeded" for i in ids), [r.body for r in replies.values()]
        assert catalog_item(h, "t1") is not None and catalog_item(h, "t2") is not None
        assert identity.requests >= 1  # DefaultAzureCredential asked the managed-identity endpoint
