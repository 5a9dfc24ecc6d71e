"""Property tests (hypothesis) for request parsing: it never fails with anything but InvalidRequest, valid generated
requests round-trip, and whatever the JSON Schema rejects the parser rejects too (the parser is never laxer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from worker.adapters.hosts import HostAllowList
from worker.domain.contract import InvalidRequest, Limits, MessageMeta, parse_request, validate_item

ROOT = Path(__file__).resolve().parents[2]
REQUEST = jsonschema.Draft202012Validator(json.loads((ROOT / "worker/schemas/request-v1.schema.json").read_text()))
LIMITS = Limits(allowed_reply_to=frozenset({"replies"}), item_url_hosts=HostAllowList(["*.blob.core.windows.net"]))
META = MessageMeta("msg-1", None, "replies", None, None, 1, None)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+,()."
ids = st.text(ID_CHARS, min_size=1, max_size=149).filter(lambda s: s not in (".", ".."))
collections = st.text(
    ID_CHARS.replace("+", "").replace(",", "").replace("(", "").replace(")", ""), min_size=1, max_size=40
).filter(lambda s: s not in (".", ".."))
lons = st.floats(-180, 180, allow_nan=False)
lats = st.floats(-90, 90, allow_nan=False)
instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def rfc3339(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@st.composite
def items(draw: Any, collection: str, item_id: str) -> dict:
    w, e = sorted((draw(lons), draw(lons)))
    s, n = sorted((draw(lats), draw(lats)))
    if draw(st.booleans()):
        geometry: dict = {"type": "Point", "coordinates": [w, s]}
        bbox = [w, s, w, s]
    else:
        ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
        geometry = {"type": "Polygon", "coordinates": [ring]}
        bbox = [w, s, e, n]
    if draw(st.booleans()):
        props: dict = {"datetime": rfc3339(draw(instants))}
    else:
        a, b = sorted((draw(instants), draw(instants)))
        props = {"datetime": None, "start_datetime": rfc3339(a), "end_datetime": rfc3339(b)}
    props.update(
        draw(st.dictionaries(st.sampled_from(["platform", "gsd", "title", "x:extra"]), json_values, max_size=3))
    )
    asset_keys = st.text(ID_CHARS, min_size=1, max_size=20)
    assets = draw(
        st.dictionaries(
            asset_keys,
            st.builds(
                lambda p: {"href": f"https://a.blob.core.windows.net/c/{p}"},
                st.text("abc123/", min_size=1, max_size=10),
            ),
            max_size=5,
        )
    )
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "assets": assets,
        "links": [],
    }
    if draw(st.booleans()):
        item["collection"] = collection
    return item


@st.composite
def requests_(draw: Any) -> dict:
    collection = draw(collections)
    kind = draw(st.sampled_from(["inline", "urls", "delete"]))
    if kind == "delete":
        return {
            "version": 1,
            "action": "delete",
            "collection": collection,
            "item_ids": draw(st.lists(ids, min_size=1, max_size=5, unique=True)),
        }
    body: dict = {"version": 1, "action": "ingest", "collection": collection}
    if draw(st.booleans()):
        body["mode"] = draw(st.sampled_from(["upsert", "create"]))
    if kind == "urls":
        paths = draw(st.lists(st.text("abcxyz019-_/", min_size=1, max_size=20), min_size=1, max_size=5, unique=True))
        body["item_urls"] = [f"https://acct.blob.core.windows.net/items/{p}.json?sv=1&sig=s" for p in paths]
    else:
        item_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
        body["items"] = [draw(items(collection, i)) for i in item_ids]
    return body


@SETTINGS
@given(requests_())
def test_valid_requests_parse_validate_and_round_trip(body):
    raw = json.dumps(body).encode()
    REQUEST.validate(body)
    request = parse_request(raw, META, LIMITS)
    expected = dict(body)
    if body["action"] == "ingest":
        expected.setdefault("mode", "upsert")
        if "items" in body:
            expected["items"] = [dict(it, collection=body["collection"]) for it in body["items"]]
    assert request.to_body() == expected
    assert parse_request(json.dumps(request.to_body()).encode(), META, LIMITS) == request


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_invalid_request(raw):
    try:
        parse_request(raw, META, LIMITS)
    except InvalidRequest as err:
        assert "\n" not in str(err) and err.field


@SETTINGS
@given(json_values)
def test_arbitrary_json_only_ever_raises_invalid_request(value):
    try:
        parse_request(json.dumps(value).encode(), META, LIMITS)
    except InvalidRequest as err:
        assert "\n" not in str(err) and err.field
    try:
        validate_item(value, "c", "items[0]", LIMITS)
    except InvalidRequest as err:
        assert err.field and err.field.startswith("items[0]")


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


hostile_strings = st.sampled_from(
    [
        "",
        ".",
        "..",
        "a/b",
        "a?b",
        "a#b",
        "caf\u00e9",
        "a\u0000b",
        "a\nb",
        "x" * 150,
        "\u202e",
        "NaN",
        "1",
        "https://169.254.169.254/",
        "http://localhost/x",
        "2024-13-01T00:00:00Z",
        "2024-05-01T10:00:00",
        "Feature",
        "ingest",
        "delete",
    ]
)
mutants = json_values | hostile_strings | st.integers() | st.floats()


@SETTINGS
@given(requests_(), st.data())
def test_whatever_the_schema_rejects_the_parser_rejects(body, data):
    paths = _paths(body)
    path = data.draw(st.sampled_from(paths[1:]))
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(mutants)
    try:
        raw = json.dumps(body, allow_nan=False).encode()
    except ValueError:
        assume(False)
    schema_ok = REQUEST.is_valid(body)
    try:
        parse_request(raw, META, LIMITS)
        parsed = True
    except InvalidRequest as err:
        assert "\n" not in str(err) and err.field
        parsed = False
    if not schema_ok:
        assert not parsed, f"schema rejects but parser accepts: {path} in {raw[:300]!r}"
