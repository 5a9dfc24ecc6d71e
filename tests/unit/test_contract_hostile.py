"""The hostile request corpus (tests/data/hostile/, regenerate with make_corpus.py): each body is rejected with an
InvalidRequest naming the right field and reason, in one line, without secrets; its invalid result is valid."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from worker.adapters.hosts import HostAllowList
from worker.domain.contract import InvalidRequest, Limits, MessageMeta, invalid_result, parse_request

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
SCHEMAS = Path(__file__).resolve().parents[2] / "worker" / "schemas"
RESULT_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "result-v1.schema.json").read_text()))

LIMITS = Limits(
    allowed_reply_to=frozenset({"replies", "Replies-Audit"}),
    item_url_hosts=HostAllowList(["*.blob.core.windows.net"]),
)
META = MessageMeta(
    message_id="msg-1",
    correlation_id="corr-1",
    reply_to="replies",
    reply_to_session_id=None,
    session_id=None,
    delivery_count=1,
    enqueued_time=None,
)


def _reject(body: bytes, meta: MessageMeta = META, limits: Limits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body, meta, limits)
    return info.value


def _assert_well_formed(err: InvalidRequest, body: bytes, meta: MessageMeta = META) -> None:
    text = str(err)
    assert "\n" not in text and "\r" not in text and len(text) <= 700
    assert text.isprintable()
    assert "SECRETSIG" not in text
    assert err.kind == "invalid" and err.code == "InvalidRequest"
    result = invalid_result(meta, err, body=body, limits=LIMITS)
    doc = json.loads(result.to_json_bytes())
    RESULT_SCHEMA.validate(doc)
    assert doc["status"] == "invalid" and doc["error"] == {"code": "InvalidRequest", "message": text}
    assert doc["request_id"] == meta.message_id


def test_corpus_is_complete_and_committed():
    files = {p.name for p in CORPUS.iterdir() if p.suffix in (".json", ".bin", ".txt")} - {"manifest.json"}
    assert files == {case["file"] for case in MANIFEST}
    assert len(MANIFEST) >= 100


@pytest.mark.parametrize("case", MANIFEST, ids=[c["file"] for c in MANIFEST])
def test_hostile_body_is_rejected_with_precise_field(case):
    body = (CORPUS / case["file"]).read_bytes()
    meta = replace(META, **case["meta"])
    err = _reject(body, meta)
    assert err.field == case["field"], str(err)
    assert case["reason"] in err.message, str(err)
    _assert_well_formed(err, body, meta)


def test_reply_to_is_matched_case_insensitively_and_none_means_default():
    body = (CORPUS / "reply-to-not-allowed.json").read_bytes()  # a valid body
    assert parse_request(body, replace(META, reply_to="REPLIES-audit"), LIMITS).collection == "sentinel-2"
    assert parse_request(body, replace(META, reply_to=None), LIMITS).collection == "sentinel-2"
    assert parse_request(body, replace(META, reply_to="anything"), Limits()).collection == "sentinel-2"


def test_ten_megabyte_body_is_rejected_before_parsing():
    body = b'{"version": 1, "padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    err = _reject(body)
    assert err.field == "body" and "too large" in err.message and str(len(body)) in err.message
    _assert_well_formed(err, body)


def test_item_over_one_megabyte_is_rejected_inline():
    it = json.loads((CORPUS / "reply-to-not-allowed.json").read_text())
    it["items"][0]["properties"]["blob"] = "x" * 1_100_000
    body = json.dumps(it).encode()
    err = _reject(body)
    assert err.field == "items[0]" and "the limit is 1048576" in err.message
    _assert_well_formed(err, body)


def test_many_small_items_in_a_big_body_are_each_measured_but_accepted():
    doc = json.loads((CORPUS / "reply-to-not-allowed.json").read_text())
    base = doc["items"][0]
    base["properties"]["blob"] = "y" * 1000
    doc["items"] = [dict(base, id=f"i-{i}") for i in range(1000)]
    body = json.dumps(doc).encode()
    assert len(body) > 1_048_576
    assert len(parse_request(body, META, LIMITS).items) == 1000


def test_huge_array_of_items_is_rejected_by_count():
    doc = json.loads((CORPUS / "reply-to-not-allowed.json").read_text())
    doc["items"] = [doc["items"][0]] * 1001
    err = _reject(json.dumps(doc).encode())
    assert err.field == "items" and "too many entries: 1001" in err.message


def test_sas_query_in_rejected_url_is_redacted():
    err = _reject((CORPUS / "item-url-not-allow-listed.json").read_bytes())
    assert "SECRETSIG" not in str(err) and "evil.example.com" in str(err) and "sig=***" in str(err)


def test_stateless_parser_keeps_working_after_every_hostile_body():
    good = (CORPUS / "reply-to-not-allowed.json").read_bytes()
    for case in MANIFEST:
        with pytest.raises(InvalidRequest):
            parse_request((CORPUS / case["file"]).read_bytes(), replace(META, **case["meta"]), LIMITS)
        assert parse_request(good, META, LIMITS).items[0]["id"] == "item-1"
