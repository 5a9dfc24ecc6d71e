"""Unit tests of Blob Storage events as requests: both schemas, mappings, and every bad-input case."""

from __future__ import annotations

import json

import pytest
from gcw_emulators.eventgrid import blob_event

from worker.adapters.hosts import HostAllowList
from worker.domain.contract import InvalidRequest, Limits, MessageMeta, invalid_result, parse_request
from worker.domain.events import (
    EventIgnored,
    EventMapping,
    EventRouting,
    check_item_matches,
    event_id,
)

META = MessageMeta("sb-internal-id", None, None, None, None, 1, None)
URL = "https://acct.blob.core.windows.net/items/stac/2024/scene-1.json"
ROUTING = EventRouting.from_specs(
    [
        "container=items,prefix=stac/,suffix=.json,collection=naip",
        "container=drops,suffix=.json,collection=@item",
    ]
)
LIMITS = Limits(item_url_hosts=HostAllowList(["*.blob.core.windows.net"]), events=ROUTING)


def event(
    kind: str = "Created",
    *,
    schema: str = "eventgrid",
    url: str = URL,
    container: str = "items",
    blob: str = "stac/2024/scene-1.json",
    **over,
) -> dict:
    doc = blob_event(kind, url, container, blob, schema=schema, account="acct")
    doc.update(over)
    return doc


def parse(doc, limits: Limits = LIMITS):  # type: ignore[no-untyped-def]
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_request(raw, META, limits)


def reject(doc, limits: Limits = LIMITS) -> InvalidRequest:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as info:
        parse(doc, limits)
    return info.value


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_blob_created_becomes_an_upsert_of_the_blob_with_the_event_id_as_request_id(schema: str) -> None:
    doc = event(schema=schema, id="evt-1")
    req = parse(doc)
    assert req.action == "ingest" and req.mode == "upsert"
    assert req.collection == "naip" and req.item_urls == (URL,)
    assert req.request_id == "evt-1" and req.correlation_id == "evt-1"
    assert req.event is not None
    assert (req.event.schema, req.event.kind, req.event.container, req.event.blob) == (
        schema,
        "created",
        "items",
        "stac/2024/scene-1.json",
    )
    assert req.event.account == "acct" and req.event.item_id == "scene-1"
    assert req.event.sequencer == doc["data"]["sequencer"] and req.event.etag == doc["data"]["eTag"]


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_blob_deleted_becomes_a_delete_of_the_derived_id(schema: str) -> None:
    req = parse(event("Deleted", schema=schema, id="evt-2"))
    assert (req.action, req.collection, req.item_ids, req.request_id) == ("delete", "naip", ("scene-1",), "evt-2")


def test_collection_from_the_item_for_created_and_not_derivable_for_deleted() -> None:
    url = "https://acct.blob.core.windows.net/drops/x/a.json"
    req = parse(event(url=url, container="drops", blob="x/a.json"))
    assert req.collection == "" and req.event is not None and req.event.collection is None
    err = reject(event("Deleted", url=url, container="drops", blob="x/a.json"))
    assert err.field == "subject" and err.code == "CollectionNotDerivable"
    assert "fixed collection" in err.message


def test_first_matching_mapping_wins_and_account_restricts() -> None:
    routing = EventRouting.from_specs(
        ["account=other,container=items,collection=a", "container=items,prefix=stac/,collection=b"]
    )
    req = parse(event(), Limits(events=routing))
    assert req.collection == "b"
    assert EventMapping.parse("container=items,collection=a").matches(None, "items", "x.json")
    assert not EventMapping.parse("account=acct,container=items,collection=a").matches(None, "items", "x.json")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("container=items", "collection= is required"),
        ("container=It,collection=a", "container="),
        ("container=items,collection=a b", "collection="),
        ("container=items,collection=a,colour=red", "colour=red"),
        ("container=items,collection=a,collection=b", "given twice"),
    ],
)
def test_bad_mapping_specs_say_why(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        EventMapping.parse(spec)


def test_derived_id_is_the_file_name_without_suffix() -> None:
    m = EventMapping.parse("container=items,prefix=stac/,suffix=.json,collection=c")
    assert m.derive_id("stac/a/b/c-1.json") == "c-1"
    assert EventMapping.parse("container=items,collection=c").derive_id("deep/name.geojson") == "name.geojson"
    assert not m.matches(None, "items", "stac/.json")  # nothing between prefix and suffix


# ---- bad input: each names its field ----------------------------------------------------------------------


def test_unknown_event_type() -> None:
    err = reject(event(eventType="Microsoft.Storage.BlobTierChanged"))
    assert (err.field, err.code) == ("eventType", "UnsupportedEventType")
    assert "Microsoft.Storage.BlobCreated" in err.message
    err = reject(event(schema="cloudevents", type="Microsoft.Storage.BlobRenamed"))
    assert err.field == "type"


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_missing_data_url(schema: str) -> None:
    doc = event(schema=schema)
    del doc["data"]["url"]
    err = reject(doc)
    assert err.field == "data.url" and err.message == "required"
    doc["data"]["url"] = 7
    assert reject(doc).field == "data.url"


def test_missing_or_malformed_envelope_fields() -> None:
    for name in ("id", "subject", "data", "eventType"):
        doc = event()
        del doc[name]
        assert reject(doc).field == name
    assert reject(event(subject="/containers/items/x.json")).field == "subject"
    assert reject(event(data=[1])).field == "data"
    assert reject(event(eventTime="yesterday")).field == "eventTime"
    assert reject(event(id="x" * 129)).field == "id"


def test_url_on_a_host_not_allow_listed() -> None:
    err = reject(event(url="https://evil.example.com/items/stac/2024/scene-1.json"))
    assert (err.field, err.code) == ("data.url", "ItemUrlNotAllowed")
    assert "allow-list" in err.message
    err = reject(event(url="http://169.254.169.254/items/stac/2024/scene-1.json"))
    assert err.field == "data.url" and "internal" in err.message


def test_url_must_address_the_subjects_blob() -> None:
    err = reject(event(url="https://acct.blob.core.windows.net/items/stac/other.json"))
    assert err.field == "data.url" and "subject" in err.message


def test_cloudevents_wrong_specversion_and_binary_data() -> None:
    err = reject(event(schema="cloudevents", specversion="0.3"))
    assert err.field == "specversion" and "1.0" in err.message
    doc = event(schema="cloudevents")
    doc["data_base64"] = "AAAA"
    assert reject(doc).field == "data_base64"


def test_unmatched_is_invalid_or_ignored_by_configuration() -> None:
    err = reject(event(container="other", url="https://acct.blob.core.windows.net/other/stac/2024/scene-1.json"))
    assert (err.field, err.code) == ("subject", "EventUnmatched")
    assert "items/stac/*.json -> naip" in err.message
    ignoring = Limits(events=EventRouting(ROUTING.mappings, "ignore"))
    with pytest.raises(EventIgnored):
        parse(event(container="other", url="https://acct.blob.core.windows.net/other/stac/2024/scene-1.json"), ignoring)
    err = reject(event(), Limits())
    assert err.code == "EventUnmatched" and "--event-mapping" in err.message


def test_derived_id_that_is_not_an_item_id() -> None:
    url = "https://acct.blob.core.windows.net/items/stac/a%20b.json"
    err = reject(event(url=url, blob="stac/a b.json"))
    assert err.field == "subject" and "not a valid item id" in err.message


def test_an_array_of_events_is_rejected_with_the_reason() -> None:
    err = reject(json.dumps([event(), event()]).encode())
    assert err.field == "body" and "one event per Service Bus message" in err.message


def test_item_id_must_match_the_derived_id() -> None:
    req = parse(event())
    assert req.event is not None
    check_item_matches(req.event, {"id": "scene-1"}, "blob")
    with pytest.raises(InvalidRequest) as info:
        check_item_matches(req.event, {"id": "other"}, "blob")
    assert info.value.field == "blob.id" and info.value.code == "ItemIdMismatch"


def test_invalid_event_is_answered_under_its_event_id() -> None:
    raw = json.dumps(event(id="evt-9", eventType="Nope")).encode()
    assert event_id(raw) == "evt-9"
    assert event_id(b'{"version": 1, "id": "x"}') is None and event_id(b"[") is None
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw, META, LIMITS)
    result = invalid_result(META, info.value, body=raw)
    assert result.status == "invalid" and result.error and result.error["code"] == "UnsupportedEventType"


def test_secrets_in_the_url_never_reach_the_error() -> None:
    url = "https://evil.example.com/items/stac/2024/scene-1.json?sv=2024&sig=SECRETSIG"
    err = reject(event(url=url))
    assert "SECRETSIG" not in str(err)
