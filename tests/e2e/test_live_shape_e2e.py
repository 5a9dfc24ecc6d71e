"""The worker against the live service's stored shape (issue 14), through ``geocatalog-worker run``.

The calibrated GeoCatalog emulator stores items as Microsoft's recordings show the live service does: asset
hrefs rewritten to managed storage, ``stac_extensions`` upgraded, links replaced. These tests show that the worker
still recognises its own writes: a redelivered create answers ``succeeded``, an unchanged upsert is not written
again, and the probe of a failed merged batch names exactly the items that failed.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from azure.servicebus import ServiceBusReceiveMode

from tests.support.harness import REQUEST_QUEUE, Harness, ingest_request, stac_item

pytestmark = pytest.mark.timeout(180)

PROJECTION = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
PRIVATE = "privatedemo.blob.core.windows.net"  # the emulator's private account: unsigned hrefs there fail


def item(item_id: str, *, value: int = 1, href: str | None = None) -> dict:
    out = stac_item(item_id, "c1", href=href)
    out["stac_extensions"] = [PROJECTION]
    out["properties"]["proj:code"] = "EPSG:4326"
    out["properties"]["value"] = value
    return out


def stored(h: Harness, item_id: str) -> dict:
    assert h.geocatalog is not None
    url = f"{h.geocatalog.url}/stac/collections/c1/items/{item_id}?api-version={h.geocatalog.api_version}"
    request = urllib.request.Request(url, headers=h.geocatalog.headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def writes(h: Harness, route: str) -> int:
    assert h.geocatalog is not None
    return sum(h.geocatalog.stats()["requests"].get(route, {}).values())


def abandon_once(h: Harness, count: int) -> None:
    """Receive ``count`` requests and abandon them: the worker then gets each with delivery_count 2, as after a
    lost lock or a crashed worker."""
    with h.client.get_queue_receiver(REQUEST_QUEUE, receive_mode=ServiceBusReceiveMode.PEEK_LOCK) as receiver:
        got = []
        while len(got) < count:
            batch = receiver.receive_messages(max_message_count=count - len(got), max_wait_time=5)
            assert batch, f"only {len(got)} of {count} requests arrived"
            got += batch
        for message in got:
            receiver.abandon_message(message)


def test_a_redelivered_create_answers_succeeded_although_the_service_rewrote_the_item() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"]) as h:
        first = h.start_worker(concurrency=4)
        h.wait_ready(first)
        [done] = h.send([ingest_request("c1", [item("a")], mode="create")])
        [reply] = h.collect_replies(1, timeout=60)
        assert reply.body["request_id"] == done and reply.body["status"] == "succeeded", reply.body
        kept = stored(h, "a")
        assert kept["assets"]["data"]["href"] != item("a")["assets"]["data"]["href"]  # rewritten to managed storage
        assert kept["stac_extensions"] != [PROJECTION]  # upgraded
        h.terminate(first)

        # the same create delivered again (its first delivery's lock was lost after the write), and a create
        # of the same id with other content, also redelivered: ours vs a real conflict
        again, other = h.send(
            [
                ingest_request("c1", [item("a")], mode="create"),
                ingest_request("c1", [item("a", value=2)], mode="create"),
            ]
        )
        abandon_once(h, 2)
        second = h.start_worker(concurrency=4)
        h.wait_ready(second)
        replies = {r.body["request_id"]: r.body for r in h.collect_replies(2, timeout=60)}
        assert replies[again]["status"] == "succeeded", (replies[again]["items"], replies[again].get("error"))
        assert replies[other]["status"] == "failed"
        assert replies[other]["items"][0]["error"]["code"] == "ItemAlreadyExistsInCollection"
        assert stored(h, "a")["_msft:etag"] == kept["_msft:etag"]  # never rewritten


def test_an_unchanged_upsert_is_not_written_twice() -> None:
    with Harness(lock_duration=5, operation_seconds=0.1, collections=["c1"]) as h:
        w = h.start_worker(concurrency=4)
        h.wait_ready(w)
        h.send([ingest_request("c1", [item("u1"), item("u2")])])
        assert h.collect_replies(1, timeout=60)[0].body["status"] == "succeeded"
        etags = {i: stored(h, i)["_msft:etag"] for i in ("u1", "u2")}
        posts = writes(h, "POST /stac/collections/{collectionId}/items")

        h.send([ingest_request("c1", [item("u1"), item("u2")])])  # the same items again: a replay, a re-run
        assert h.collect_replies(1, timeout=60)[0].body["status"] == "succeeded"
        assert writes(h, "PUT /stac/collections/{collectionId}/items/{itemId}") == 0
        assert {i: stored(h, i)["_msft:etag"] for i in ("u1", "u2")} == etags

        h.send([ingest_request("c1", [item("u1", value=5), item("u2")])])  # one changed: only it is rewritten
        assert h.collect_replies(1, timeout=60)[0].body["status"] == "succeeded"
        assert writes(h, "PUT /stac/collections/{collectionId}/items/{itemId}") == 1
        assert stored(h, "u1")["properties"]["value"] == 5 and stored(h, "u2")["_msft:etag"] == etags["u2"]
        assert writes(h, "POST /stac/collections/{collectionId}/items") == posts + 2


def test_the_probe_of_a_failed_merged_batch_names_exactly_the_failed_items() -> None:
    with Harness(lock_duration=5, operation_seconds=0.3, collections=["c1"]) as h:
        w = h.start_worker(concurrency=16, batch_linger_ms=400)
        h.wait_ready(w)
        h.send([ingest_request("c1", [item("taken", value=0)])])
        assert h.collect_replies(1, timeout=60)[0].body["status"] == "succeeded"

        bad = item("bad", href=f"https://{PRIVATE}/data/bad.tif")  # unsigned on a private account: fails
        bodies = [ingest_request("c1", [item(f"n{i}")], mode="create") for i in range(6)]
        bodies += [
            ingest_request("c1", [item("taken", value=1)], mode="create"),
            ingest_request("c1", [bad], mode="create"),
        ]
        posts = writes(h, "POST /stac/collections/{collectionId}/items")
        ids = h.send(bodies)
        replies = {r.body["request_id"]: r.body for r in h.collect_replies(len(ids), timeout=90)}
        outcome = {r["items"][0]["id"]: r["items"][0] for r in replies.values()}
        failed = {k: v["error"]["code"] for k, v in outcome.items() if v["status"] != "succeeded"}
        assert set(failed) == {"taken", "bad"}, outcome
        assert failed["taken"] == "ItemAlreadyExistsInCollection"
        assert stored(h, "taken")["properties"]["value"] == 0  # create mode never overwrites
        assert all(stored(h, f"n{i}")["properties"]["value"] == 1 for i in range(6))
        # the eight requests were merged (fewer POSTs than requests, the failures re-posted alone)
        assert writes(h, "POST /stac/collections/{collectionId}/items") - posts < len(ids)
        assert writes(h, "PUT /stac/collections/{collectionId}/items/{itemId}") == 0
