"""--geocatalog-sas-host end to end: Processor + Batcher + the real GeoCatalogClient and the signer built by
``build_signer`` against the GeoCatalog emulator, whose private managed storage only opens with the collection's
SAS token (``GET /sas/token/{collectionId}``)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest
import structlog

from tests.support.fakes import make_item
from tests.support.processing import processing_settings
from worker.adapters.geocatalog.client import GeoCatalogClient
from worker.adapters.geocatalog.retry import RetryPolicy
from worker.domain import contract
from worker.domain.secrets import Secret
from worker.observability.metrics import Metrics
from worker.processing.batching import Batcher, BatchSettings
from worker.processing.processor import Outcome, Processor, Settle
from worker.servicebus.config import RunConfig
from worker.servicebus.wiring import build_signer

pytestmark = pytest.mark.timeout(60)

MANAGED = "managedstore.blob.core.windows.net"
FOREIGN = "public.example.com"
SAS_ROUTE = "GET /sas/token/{collectionId}"


def request(items: list[dict], mid: str) -> contract.Request:
    meta = contract.MessageMeta(
        message_id=mid,
        correlation_id=None,
        reply_to="results",
        reply_to_session_id=None,
        session_id=None,
        delivery_count=1,
        enqueued_time=None,
        attempt=1,
    )
    return contract.Request(
        meta=meta, version=1, action="ingest", collection="c1", items=tuple(items), item_urls=(), item_ids=(),
        mode="upsert",
    )  # fmt: skip


def managed_item(item_id: str, value: int = 1) -> dict:
    item = make_item(item_id, value=value)
    item["assets"]["data"]["href"] = f"https://{MANAGED}/c1-data/{item_id}.tif"
    item["assets"]["thumb"] = {"href": f"https://{FOREIGN}/thumbs/{item_id}.png"}
    return item


@pytest.fixture
def env(gc_emulator):
    emu = gc_emulator(
        operation_seconds=0.05,
        collections=["c1"],
        private_hosts=[MANAGED],
        collection_storage={"c1": "managedstore/c1-data"},
    )
    client = GeoCatalogClient(
        emu.url,
        static_token=Secret(emu.token),
        poll_initial=0.02,
        poll_max=0.1,
        poll_max_rate=100,
        retry=RetryPolicy(max_attempts=2, total_timeout=5, backoff_base=0.01, backoff_max=0.05),
        timeout=(2.0, 5.0),
    )
    batchers: list[Batcher] = []

    def processor(**cfg_kw) -> Processor:
        cfg = RunConfig(geocatalog_url=emu.url, geocatalog_token=Secret(emu.token), **cfg_kw)
        batcher = Batcher(client, BatchSettings(linger=0.01, operation_timeout=10.0))
        batchers.append(batcher)
        signer = build_signer(cfg, Metrics(), client)
        return Processor(client, signer, None, batcher, processing_settings(transient_retries=0, retry_base=1.0))

    yield emu, client, processor
    for b in batchers:
        b.close()
    client.close()


def run(p: Processor, req: contract.Request) -> Outcome:
    return p.process(req, threading.Event(), received_at=datetime.now(UTC))


def test_managed_storage_asset_needs_the_geocatalog_sas_flag(env):
    emu, _client, processor = env

    unsigned = run(processor(), request([managed_item("p1")], "m-1"))
    assert unsigned.result.status == "failed" and unsigned.settle is Settle.DEAD_LETTER
    assert unsigned.result.items[0].error["code"] == "IngestionAuthenticationFailed"
    # --sign-host alone (another source) does not open it either: it has no token for that storage
    other = run(processor(sign_hosts=("*.other.example.com",)), request([managed_item("p1")], "m-2"))
    assert other.result.items[0].error["code"] == "IngestionAuthenticationFailed"
    assert emu.stats()["requests"].get(SAS_ROUTE, {}) == {}

    signed = processor(geocatalog_sas_hosts=(MANAGED,))
    with structlog.testing.capture_logs() as captured:
        ok = run(signed, request([managed_item("p1"), managed_item("p2")], "m-3"))
    assert ok.result.status == "succeeded", ok.result.to_dict()
    assert "sig=" not in ok.result.to_json_bytes().decode()
    leaked = re.compile(r"sig=(?!\*\*\*)[^&\s'\"]+")
    assert not [e for e in captured if leaked.search(repr(e))]
    stats = emu.stats()
    assert stats["requests"][SAS_ROUTE] == {"200": 1}  # one token for the collection, cached
    assert set(stats["signed_asset_hosts"]) == {MANAGED}  # the foreign thumbnail never got the token


def test_item_copied_from_a_get_can_be_re_upserted_only_with_the_flag(env):
    _emu, client, processor = env
    signed = processor(geocatalog_sas_hosts=("*.blob.core.windows.net",))
    assert run(signed, request([managed_item("p1")], "m-1")).result.status == "succeeded"

    copied = client.get_item("c1", "p1")
    assert copied is not None and "sig=" not in copied["assets"]["data"]["href"]
    copied["properties"]["value"] = 2
    for key in [k for k in copied if k not in make_item("x")]:
        copied.pop(key)  # server-added fields (e.g. msft:*) are not part of an upsert

    # the copy names the catalog's managed storage (never public): the worker recognises those hrefs as the
    # managed copies of this item's assets on a host the catalog itself reported, and signs them with the
    # collection's token without any flag, so the update does not fail PublicAccessRestricted
    assert "/c1-" in copied["assets"]["data"]["href"]
    again = run(processor(), request([copied], "m-2"))
    assert again.result.status == "succeeded", again.result.to_dict()
    assert client.get_item("c1", "p1")["properties"]["value"] == 2

    copied["properties"]["value"] = 3  # and with the flag covering every blob host, the same
    assert run(signed, request([copied], "m-3")).result.status == "succeeded"
    assert client.get_item("c1", "p1")["properties"]["value"] == 3


def test_a_look_alike_managed_path_on_another_account_gets_no_token(env):
    emu, client, processor = env
    assert run(processor(), request([managed_item("p1")], "m-0")).result.status != "succeeded"  # unsigned: private
    signed = processor(geocatalog_sas_hosts=(MANAGED,))
    assert run(signed, request([managed_item("p1")], "m-1")).result.status == "succeeded"
    copied = client.get_item("c1", "p1")
    assert copied is not None
    managed = copied["assets"]["data"]["href"]
    host = managed.split("/")[2]
    copied["assets"]["data"]["href"] = managed.replace(host, "attacker.blob.core.windows.net")
    before = emu.stats()["signed_asset_hosts"].get("attacker.blob.core.windows.net", 0)
    run(processor(), request([copied], "m-2"))
    assert emu.stats()["signed_asset_hosts"].get("attacker.blob.core.windows.net", 0) == before
