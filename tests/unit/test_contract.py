"""Unit tests of the contract: what valid requests parse to, boundaries of each rule, results."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from worker.adapters.hosts import HostAllowList, item_url_problem
from worker.domain.contract import (
    CONTRACT_VERSION,
    DEFAULT_LIMITS,
    InvalidRequest,
    ItemOutcome,
    Limits,
    MessageMeta,
    Result,
    format_time,
    invalid_result,
    parse_request,
    parse_rfc3339,
    validate_item,
)
from worker.domain.errors import ErrorKind, WorkerError

META = MessageMeta("msg-1", None, "replies", None, None, 1, None, attempt=3)
COLL = "sentinel-2"


def item(item_id: str = "a", **over) -> dict:
    base = {
        "type": "Feature",
        "id": item_id,
        "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
        "bbox": [10.0, 50.0, 10.0, 50.0],
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "assets": {"data": {"href": "https://acct.blob.core.windows.net/c/a.tif"}},
    }
    base.update(over)
    return base


def body(**over) -> bytes:
    doc = {"version": 1, "action": "ingest", "collection": COLL, "items": [item()]}
    doc.update(over)
    return json.dumps(doc).encode()


def reject(raw: bytes, meta: MessageMeta = META, limits: Limits = DEFAULT_LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw, meta, limits)
    return info.value


def reject_item(it, limits: Limits = DEFAULT_LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_item(it, COLL, "items[0]", limits)
    return info.value


def test_invalid_request_is_a_worker_error_of_kind_invalid():
    err = InvalidRequest("bad\nthing sig=SECRET", field="items[0].id")
    assert isinstance(err, WorkerError) and err.kind is ErrorKind.INVALID and err.code == "InvalidRequest"
    assert str(err) == "items[0].id: bad thing sig=***" and err.field == "items[0].id"
    assert len(str(InvalidRequest("x" * 5000, field="f"))) <= 503
    assert CONTRACT_VERSION == 1


def test_inline_ingest_parses_with_defaults_and_fills_collection_without_touching_input():
    doc = {"version": 1, "action": "ingest", "collection": COLL, "items": [item("a"), item("b", collection=COLL)]}
    original = copy.deepcopy(doc)
    request = parse_request(json.dumps(doc).encode(), META)
    assert (request.action, request.mode, request.collection, request.version) == ("ingest", "upsert", COLL, 1)
    assert [i["collection"] for i in request.items] == [COLL, COLL]
    assert request.item_urls == () and request.item_ids == ()
    assert request.request_id == "msg-1" and request.correlation_id == "msg-1"
    assert (
        replace(META, correlation_id="c-9")
        and parse_request(json.dumps(doc).encode(), replace(META, correlation_id="c-9")).correlation_id == "c-9"
    )
    it = item("z")
    assert validate_item(it, COLL, "items[0]", Limits()) is not it and "collection" not in it
    with_coll = item("z", collection=COLL)
    assert validate_item(with_coll, COLL, "items[0]", Limits()) is with_coll
    assert doc == original


def test_delete_and_create_mode_and_urls():
    r = parse_request(
        json.dumps({"version": 1, "action": "delete", "collection": COLL, "item_ids": ["a", "b(1)", "c,d+e"]}).encode(),
        META,
    )
    assert r.action == "delete" and r.item_ids == ("a", "b(1)", "c,d+e") and r.items == ()
    r = parse_request(body(mode="create"), META)
    assert r.mode == "create"
    urls = ["https://acct.blob.core.windows.net/i/1.json?sv=1&sig=x", "https://acct.blob.core.windows.net/i/2.json"]
    r = parse_request(
        json.dumps({"version": 1, "action": "ingest", "collection": COLL, "item_urls": urls}).encode(),
        META,
        Limits(item_url_hosts=HostAllowList(["*.blob.core.windows.net"])),
    )
    assert r.item_urls == tuple(urls) and r.items == ()


def test_version_must_be_the_integer_one():
    for bad in (True, 1.0, "1", None, 0, 2):
        err = reject(body(version=bad))
        assert err.field == "version", bad


def test_message_properties_are_checked():
    assert reject(body(), replace(META, message_id="m" * 129)).field == "message_id"
    assert reject(body(), replace(META, correlation_id="c" * 129)).field == "correlation_id"
    assert reject(body(), replace(META, reply_to_session_id="s" * 129)).field == "reply_to_session_id"
    limits = Limits(allowed_reply_to=frozenset({"Replies"}))
    assert parse_request(body(), META, limits).request_id == "msg-1"  # "replies" matches "Replies"
    err = reject(body(), replace(META, reply_to="sb://evil.servicebus.windows.net/replies"), limits)
    assert err.field == "reply_to"


def test_id_boundaries():
    assert validate_item(item("x" * 149), COLL, "items[0]", Limits())["id"] == "x" * 149
    assert reject_item(item("x" * 150)).field == "items[0].id"
    assert validate_item(item("..."), COLL, "items[0]", Limits())["id"] == "..."
    assert reject_item(item("abc\n")).field == "items[0].id"  # no trailing-newline loophole


def test_geometry_variants_and_bbox_rules():
    ring = [[170.0, -10.0], [-170.0, -10.0], [-170.0, 10.0], [170.0, 10.0], [170.0, -10.0]]
    ok = [
        item(geometry={"type": "MultiPolygon", "coordinates": [[ring]]}, bbox=[170.0, -10.0, -170.0, 10.0]),
        item(geometry={"type": "LineString", "coordinates": [[0, 0], [1, 1, 5.5]]}, bbox=[0, 0, 0, 1, 1, 5.5]),
        item(
            geometry={
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Point", "coordinates": [1, 2]},
                    {"type": "MultiPoint", "coordinates": [[1, 2]]},
                ],
            }
        ),
        item(geometry={"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]]]}),
    ]
    for it in ok:
        validate_item(it, COLL, "items[0]", Limits())
    gc: dict = {"type": "Point", "coordinates": [1, 2]}
    for _ in range(5):
        gc = {"type": "GeometryCollection", "geometries": [gc]}
    assert "nested too deep" in reject_item(item(geometry=gc)).message
    assert reject_item(item(bbox=[0, 0, 5, 1, 1, 4])).message.startswith("minimum elevation")
    assert reject_item(item(bbox=[0, -91, 1, 1])).field == "items[0].bbox"
    assert (
        reject_item(item(geometry={"type": "LineString", "coordinates": [[0, 0]]})).field
        == "items[0].geometry.coordinates"
    )
    assert (
        reject_item(item(geometry={"type": "Point", "coordinates": [1, 2, 3, 4]})).field
        == "items[0].geometry.coordinates[0]"
    )
    assert reject_item(item(geometry={"type": "Polygon", "coordinates": []})).field == "items[0].geometry.coordinates"


def test_datetimes():
    assert parse_rfc3339("2024-05-01T10:00:00.123456789+05:30") is not None
    assert parse_rfc3339("2024-05-01t10:00:00z") is not None
    fullwidth_year = "\uff12\uff10\uff12\uff14-05-01T10:00:00Z"
    for bad in ("2024-05-01", "2024-05-01T10:00:00", "2024-05-01T25:00:00Z", fullwidth_year, 20240501):
        assert parse_rfc3339(bad) is None, bad
    validate_item(
        item(
            properties={
                "datetime": "2024-05-01T10:00:00Z",
                "start_datetime": "2024-05-01T00:00:00Z",
                "end_datetime": "2024-05-02T00:00:00Z",
            }
        ),
        COLL,
        "items[0]",
        Limits(),
    )
    err = reject_item(item(properties={"datetime": None, "start_datetime": "2024-05-01T00:00:00Z"}))
    assert err.field == "items[0].properties.end_datetime"
    assert reject_item(item(properties={"datetime": 5})).field == "items[0].properties.datetime"


def test_depth_limit_boundary():
    def nest(levels: int):
        value: object = 1
        for _ in range(levels):
            value = {"k": value}
        return value

    # the item is level 1, properties level 2, so properties.x nested n more objects is level 2 + n
    validate_item(item(properties={"datetime": "2024-05-01T10:00:00Z", "x": nest(62)}), COLL, "items[0]", Limits())
    err = reject_item(item(properties={"datetime": "2024-05-01T10:00:00Z", "x": nest(63)}))
    assert err.field == "items[0].properties.x" + ".k" * 7 and "deeper than 64" in err.message


def test_item_size_and_asset_limits_are_configurable():
    small = Limits(max_item_bytes=250)
    it = item(assets={f"a{i}": {"href": "https://x/y"} for i in range(3)})
    assert reject_item(it, small).field == "items[0]"  # measured: > 250 bytes
    it = item(assets={f"a{i}": {"href": "h"} for i in range(3)})
    assert "too many assets: 3" in reject_item(it, Limits(max_assets=2)).message
    assert reject(body(), limits=Limits(max_body_bytes=50)).field == "body"
    two = json.dumps({"version": 1, "action": "ingest", "collection": COLL, "items": [item("a"), item("b")]})
    assert "too many entries: 2" in reject(two.encode(), limits=Limits(max_items=1)).message


def test_item_url_policy():
    allow = HostAllowList(["*.blob.core.windows.net", "127.0.0.1:8123", "emulator.local"])
    assert item_url_problem("https://a.blob.core.windows.net/c/x.json?sig=1", allow) is None
    assert item_url_problem("http://127.0.0.1:8123/x.json", allow) is None  # named exactly: http and loopback ok
    assert "internal" in item_url_problem("http://127.0.0.1:8124/x.json", allow)
    assert item_url_problem("http://emulator.local/x.json", allow) is None
    assert "https" in item_url_problem("http://a.blob.core.windows.net/x.json", allow)
    assert "allow-list" in item_url_problem("https://example.com/x.json", allow)
    assert "internal" in item_url_problem("https://sub.localhost/x", None)
    assert "internal" in item_url_problem("https://[fe80::1]/x", None)
    assert "internal" in item_url_problem("https://192.168.1.1/x", None)
    assert item_url_problem("https://8.8.8.8/x", None) is None
    assert "non-canonical" in item_url_problem("https://127.1/x", None)
    assert "not a valid URL" in item_url_problem("https://a.blob.core.windows.net:99999/x", allow)
    assert "longer than 2048" in item_url_problem("https://a.blob.core.windows.net/" + "x" * 2048, allow)


def test_results():
    t = datetime(2026, 5, 1, 10, 0, 0, 5000, tzinfo=UTC)
    request = parse_request(body(), replace(META, correlation_id="c-1"))
    result = Result.for_request(
        request, status="succeeded", items=[ItemOutcome("a", "succeeded")], received_at=t, completed_at=t
    )
    doc = result.to_dict()
    assert doc == {
        "version": 1,
        "request_id": "msg-1",
        "correlation_id": "c-1",
        "action": "ingest",
        "collection": COLL,
        "status": "succeeded",
        "items": [{"id": "a", "status": "succeeded"}],
        "operations": [],
        "error": None,
        "attempts": 3,
        "received_at": "2026-05-01T10:00:00.005Z",
        "completed_at": "2026-05-01T10:00:00.005Z",
    }
    assert json.loads(result.to_json_bytes()) == doc
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"
    err = InvalidRequest("must not be empty", field="items")
    inv = invalid_result(META, err, t, body=body(items=[]))
    assert (inv.status, inv.action, inv.collection, inv.attempts, inv.items) == ("invalid", "ingest", COLL, 3, [])
    assert inv.error == {"code": "InvalidRequest", "message": "items: must not be empty"}
    assert inv.received_at == t and inv.completed_at >= t


@pytest.mark.parametrize("bad", ["https://x/a\x01.tif", "https://x/a\x7f.tif", "https://x/\ta.tif", "https://x/a\n"])
def test_href_with_a_control_character_is_rejected(bad):
    err = reject_item(item(assets={"data": {"href": bad}}))
    assert err.field == "items[0].assets.data.href" and "control characters" in err.message
