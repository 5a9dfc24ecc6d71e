"""Processor + Batcher + the real GeoCatalogClient/HrefSigner/ItemFetcher against the GeoCatalog emulator (HTTP)."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import requests
import structlog

from tests.support.fakes import make_item
from tests.support.processing import processing_settings
from worker.adapters.geocatalog.client import GeoCatalogClient
from worker.adapters.geocatalog.retry import RetryPolicy
from worker.adapters.hosts import HostAllowList
from worker.adapters.itemfetch import ItemFetcher
from worker.adapters.sas import HrefSigner, PlanetaryComputerSasProvider, TokenCache
from worker.domain import contract
from worker.domain.secrets import Secret
from worker.processing.batching import Batcher, BatchSettings
from worker.processing.processor import Outcome, Processor, Settle

pytestmark = pytest.mark.timeout(60)

PRIVATE = "privatedemo.blob.core.windows.net"
POST_ROUTE = "POST /stac/collections/{collectionId}/items"
PUT_ROUTE = "PUT /stac/collections/{collectionId}/items/{itemId}"


@dataclass
class Stack:
    emu: object
    client: GeoCatalogClient
    batcher: Batcher
    processor: Processor

    def stat(self, route: str, status: str = "202") -> int:
        return self.emu.stats()["requests"].get(route, {}).get(status, 0)


@pytest.fixture
def stack(gc_emulator):
    built: list[Stack] = []

    def build(
        *,
        sign: bool = True,
        linger: float = 0.05,
        emu_kw: dict | None = None,
        token: str | None = None,
        **settings,
    ) -> Stack:
        kw = {"operation_seconds": 0.05, "collections": ["c1"], "private_hosts": [PRIVATE], **(emu_kw or {})}
        emu = gc_emulator(**kw)
        client = GeoCatalogClient(
            emu.url,
            static_token=Secret(token or emu.token),
            poll_initial=0.02,
            poll_max=0.1,
            poll_max_rate=100,
            retry=RetryPolicy(max_attempts=2, total_timeout=5, backoff_base=0.01, backoff_max=0.05),
            timeout=(2.0, 5.0),
        )
        signer = None
        if sign:
            cache = TokenCache(PlanetaryComputerSasProvider(emu.url))
            signer = HrefSigner(cache, HostAllowList([PRIVATE]))
        fetcher = ItemFetcher(requests.Session(), HostAllowList([f"127.0.0.1:{emu.port}"]))
        batcher = Batcher(client, BatchSettings(linger=linger, operation_timeout=settings.pop("op_timeout", 10.0)))
        settings.setdefault("transient_retries", 0)
        settings.setdefault("retry_base", 1.0)
        processor = Processor(client, signer, fetcher, batcher, processing_settings(**settings))
        s = Stack(emu, client, batcher, processor)
        built.append(s)
        return s

    yield build
    for s in built:
        s.batcher.close()
        s.client.close()


def request(action="ingest", *, items=(), item_urls=(), item_ids=(), mode="upsert", mid="m-1", attempt=1, dc=1):
    meta = contract.MessageMeta(
        message_id=mid,
        correlation_id=None,
        reply_to="results",
        reply_to_session_id=None,
        session_id=None,
        delivery_count=dc,
        enqueued_time=None,
        attempt=attempt,
    )
    return contract.Request(
        meta=meta,
        version=1,
        action=action,
        collection="c1",
        items=tuple(items),
        item_urls=tuple(item_urls),
        item_ids=tuple(item_ids),
        mode=mode,
    )


def private_item(item_id: str, value: int = 1) -> dict:
    item = make_item(item_id, value=value)
    item["assets"]["data"]["href"] = f"https://{PRIVATE}/ctr/{item_id}.tif"
    return item


def run(s: Stack, req: contract.Request, cancel: threading.Event | None = None) -> Outcome:
    return s.processor.process(req, cancel or threading.Event(), received_at=datetime.now(UTC))


def test_ingest_inline_then_delete_including_already_deleted(stack):
    s = stack()
    out = run(s, request(items=[make_item("a"), make_item("b")]))
    assert out.settle is Settle.COMPLETE and out.result.status == "succeeded"
    assert s.client.get_item("c1", "a") is not None
    gone = run(s, request("delete", item_ids=["a", "never-existed"], mid="m-2"))
    assert gone.settle is Settle.COMPLETE and gone.result.status == "succeeded"
    assert [i.status for i in gone.result.items] == ["succeeded", "succeeded"]
    assert s.client.get_item("c1", "a") is None and s.client.get_item("c1", "b") is not None
    again = run(s, request("delete", item_ids=["a"], mid="m-3"))
    assert again.result.status == "succeeded"


def test_ingest_by_url_from_the_emulator_blob_store(stack):
    s = stack()
    urls = [s.emu.put_blob(f"items/{i}.json", json.dumps(make_item(i)).encode()) for i in ("u1", "u2")]
    out = run(s, request(item_urls=urls))
    assert out.result.status == "succeeded", out.result.to_dict()
    assert [i.id for i in out.result.items] == ["u1", "u2"]
    assert s.client.get_item("c1", "u2")["properties"]["value"] == 1


def test_ingest_by_url_with_a_bad_item_is_invalid(stack):
    s = stack()
    bad = make_item("x")
    bad["bbox"] = [1, 2, 3]
    url = s.emu.put_blob("items/x.json", json.dumps(bad).encode())
    out = run(s, request(item_urls=[url]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "InvalidRequest"
    assert out.result.status == "invalid" and "item_urls[0].bbox" in out.result.error["message"]
    assert s.stat(POST_ROUTE) == 0


def test_ingest_by_url_missing_blob_is_invalid(stack):
    s = stack()
    url = s.emu.put_blob("items/y.json", b"{}").replace("y.json", "nope.json")
    out = run(s, request(item_urls=[url]))
    assert out.reason == "InvalidRequest" and out.result.status == "invalid"


def test_upsert_after_redelivery_succeeds_without_ingesting_twice(stack):
    s = stack()
    req = request(items=[make_item("a"), make_item("b")])
    assert run(s, req).result.status == "succeeded"
    again = run(s, request(items=[make_item("a"), make_item("b")], dc=2))
    assert again.settle is Settle.COMPLETE and again.result.status == "succeeded"
    assert s.emu.stats()["items"]["c1"] == 2
    assert s.stat(PUT_ROUTE) == 0  # identical content: nothing rewritten
    changed = run(s, request(items=[make_item("a", value=7)], dc=3))
    assert changed.result.status == "succeeded"
    assert s.stat(PUT_ROUTE) == 1
    assert s.client.get_item("c1", "a")["properties"]["value"] == 7


def test_create_mode_conflict_fails_that_item(stack):
    s = stack()
    assert run(s, request(items=[make_item("a")], mode="create")).result.status == "succeeded"
    out = run(s, request(items=[make_item("a", value=2), make_item("fresh")], mode="create", mid="m-2"))
    assert out.result.status == "failed" and out.settle is Settle.COMPLETE
    a, fresh = out.result.items
    assert a.error["code"] == "ItemAlreadyExistsInCollection" and fresh.status == "succeeded"
    assert s.client.get_item("c1", "a")["properties"]["value"] == 1  # create mode never overwrites
    assert s.stat(PUT_ROUTE) == 0


def test_create_mode_merged_batch_reports_only_the_real_conflict(stack):
    s = stack(linger=0.3)
    assert run(s, request(items=[make_item("taken", value=0)], mode="create")).result.status == "succeeded"
    barrier = threading.Barrier(6)

    def one(n: int) -> Outcome:
        item = make_item("taken", value=9) if n == 2 else make_item(f"n{n}")
        barrier.wait()
        return run(s, request(items=[item], mode="create", mid=f"m-{n}"))

    with ThreadPoolExecutor(6) as pool:
        outs = {o.result.request_id: o for o in pool.map(one, range(6))}
    assert outs.pop("m-2").result.items[0].error["code"] == "ItemAlreadyExistsInCollection"
    assert {o.result.status for o in outs.values()} == {"succeeded"}
    assert s.client.get_item("c1", "taken")["properties"]["value"] == 0
    assert s.stat(PUT_ROUTE) == 0


def test_create_mode_redelivery_after_success_is_not_a_conflict(stack):
    s = stack()
    assert run(s, request(items=[make_item("a"), make_item("b")], mode="create")).result.status == "succeeded"
    again = run(s, request(items=[make_item("a"), make_item("b")], mode="create", dc=2))
    assert again.result.status == "succeeded" and again.settle is Settle.COMPLETE
    assert s.stat(PUT_ROUTE) == 0


def test_asset_access_fails_without_signing_and_succeeds_with_it(stack):
    unsigned = stack(sign=False)
    out = run(unsigned, request(items=[private_item("p1")]))
    assert out.result.status == "failed"
    assert out.settle is Settle.DEAD_LETTER and out.reason == "IngestFailed"
    assert out.result.items[0].error["code"] == "IngestionAuthenticationFailed"
    assert "p1" in out.description

    signed = stack(sign=True)
    with structlog.testing.capture_logs() as captured:
        ok = run(signed, request(items=[private_item("p1")]))
    assert ok.result.status == "succeeded", ok.result.to_dict()
    body = ok.result.to_json_bytes().decode()
    assert "sig=" not in body
    leaked = re.compile(r"sig=(?!\*\*\*)[^&\s'\"]+")
    assert not [e for e in captured if leaked.search(repr(e))]


def test_twenty_concurrent_single_item_requests_share_at_most_two_posts(stack):
    s = stack(linger=0.5)  # generous: the assertion is about merging, not timing
    barrier = threading.Barrier(20)

    def one(n: int) -> Outcome:
        barrier.wait()
        return run(s, request(items=[make_item(f"i{n}")], mid=f"m-{n}"))

    with ThreadPoolExecutor(20) as pool:
        outs = list(pool.map(one, range(20)))
    assert all(o.result.status == "succeeded" for o in outs)
    assert s.stat(POST_ROUTE) <= 2
    assert s.emu.stats()["items"]["c1"] == 20


def test_one_bad_item_in_a_merged_batch_fails_only_its_request(stack):
    s = stack(sign=False, linger=0.3)
    barrier = threading.Barrier(8)

    def one(n: int) -> Outcome:
        item = private_item(f"i{n}") if n == 5 else make_item(f"i{n}")
        barrier.wait()
        return run(s, request(items=[item], mid=f"m-{n}"))

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(8)))
    statuses = {o.result.request_id: o.result.status for o in outs}
    assert statuses.pop("m-5") == "failed"
    assert set(statuses.values()) == {"succeeded"}
    bad = next(o for o in outs if o.result.request_id == "m-5")
    assert bad.result.items[0].error["code"] == "IngestionAuthenticationFailed"
    assert s.emu.stats()["items"]["c1"] == 7
    assert s.stat(PUT_ROUTE) == 0


def test_transient_operation_failure_retries_then_exhausts(stack):
    s = stack(emu_kw={"faults": ["op-fail,code=InternalError"]}, max_attempts=3)
    out = run(s, request(items=[make_item("a")]))
    assert out.settle is Settle.RETRY and out.result is None and out.retry_after > 0
    last = run(s, request(items=[make_item("a")], attempt=3))
    assert last.settle is Settle.DEAD_LETTER and last.reason == "RetriesExhausted"
    assert last.result.status == "failed" and last.result.items[0].error["code"] == "InternalError"


def test_http_503_is_retried_later(stack):
    s = stack(emu_kw={"faults": ["status=503,path=/stac,retry-after=0"]})
    out = run(s, request(items=[make_item("a")]))
    assert out.settle is Settle.RETRY and out.result is None


def test_in_process_retry_rides_out_a_brief_transient_fault(stack):
    s = stack(
        emu_kw={"faults": ["op-fail,code=InternalIntermitentError,count=1"]},
        transient_retries=1,
        transient_retry_delay=0.01,
    )
    out = run(s, request(items=[make_item("a"), make_item("b")]))
    assert out.settle is Settle.COMPLETE and out.result.status == "succeeded"
    assert [o.status for o in out.result.operations] == ["Failed", "Succeeded"]


def test_operation_timeout_is_transient(stack):
    s = stack(emu_kw={"operation_seconds": 5.0}, op_timeout=0.2)
    out = run(s, request(items=[make_item("slow")]))
    assert out.settle is Settle.RETRY and out.result is None


def test_permanent_operation_failure_gives_a_failed_result(stack):
    s = stack(emu_kw={"faults": ["op-fail,code=IngestionResourceForbidden"]})
    out = run(s, request(items=[make_item("a")]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "IngestFailed"
    assert out.result.items[0].error["code"] == "IngestionResourceForbidden"


def test_auth_failure_is_a_configuration_fault_that_holds_the_request(stack):
    s = stack(token="wrong-token")
    out = run(s, request(items=[make_item("a")]))
    assert (out.settle, out.result, out.reason) == (Settle.HOLD, None, "geocatalog_unauthorized")
    assert "401" in out.description and "wrong-token" not in out.description


def test_cancel_while_polling_retries_with_no_result(stack):
    s = stack(emu_kw={"operation_seconds": 3.0})
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    out = run(s, request(items=[make_item("a")]), cancel)
    assert out.settle is Settle.RETRY and out.result is None
