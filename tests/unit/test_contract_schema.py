"""Code and schema agree: every example in docs/messages.md validates against the JSON Schema and is accepted by
the worker; every hostile corpus body is rejected by the worker, and by the schema wherever the schema can express
the rule (the manifest says which; for the others the test proves the schema accepts, so the gap stays known).

Run as a module to print the validation cost figures quoted in docs/messages.md:
    .venv/bin/python -m tests.unit.test_contract_schema
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from worker.adapters.hosts import HostAllowList
from worker.domain.contract import (
    InvalidRequest,
    ItemOutcome,
    Limits,
    MessageMeta,
    OperationRef,
    Result,
    invalid_result,
    parse_request,
    parse_result,
)

ROOT = Path(__file__).resolve().parents[2]
REQUEST_SCHEMA = json.loads((ROOT / "worker/schemas/request-v1.schema.json").read_text())
RESULT_SCHEMA = json.loads((ROOT / "worker/schemas/result-v1.schema.json").read_text())
REQUEST = jsonschema.Draft202012Validator(REQUEST_SCHEMA)
RESULT = jsonschema.Draft202012Validator(RESULT_SCHEMA)
CORPUS = ROOT / "tests/data/hostile"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
EXAMPLE = re.compile(r"<!-- example: (request|result) ([\w-]+) -->\s*```json\n(.*?)```", re.S)
EXAMPLES = [(kind, name, text) for kind, name, text in EXAMPLE.findall((ROOT / "docs/messages.md").read_text())]
LIMITS = Limits(allowed_reply_to=frozenset({"replies"}), item_url_hosts=HostAllowList(["*.blob.core.windows.net"]))
META = MessageMeta("msg-1", "corr-1", "replies", None, None, 1, None)


def test_schemas_are_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(REQUEST_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)


def test_docs_have_examples_for_each_action_and_each_result_status():
    names = {(kind, name) for kind, name, _ in EXAMPLES}
    assert {("request", "ingest-inline"), ("request", "ingest-urls"), ("request", "delete")} <= names
    statuses = {json.loads(text)["status"] for kind, _, text in EXAMPLES if kind == "result"}
    assert statuses == {"succeeded", "failed", "invalid"}


@pytest.mark.parametrize("kind,name,text", EXAMPLES, ids=[f"{k}-{n}" for k, n, _ in EXAMPLES])
def test_docs_example_validates_and_parses(kind, name, text):
    doc = json.loads(text)
    if kind == "request":
        REQUEST.validate(doc)
        request = parse_request(text.encode(), META, LIMITS)
        assert request.action == doc["action"] and request.collection == doc["collection"]
        # the canonical body of the parsed request is itself valid and parses to the same request
        again = json.dumps(request.to_body()).encode()
        REQUEST.validate(json.loads(again))
        assert parse_request(again, META, LIMITS) == request
    else:
        RESULT.validate(doc)
        assert parse_result(text.encode()).to_dict() == doc


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("case", MANIFEST, ids=[c["file"] for c in MANIFEST])
def test_corpus_body_is_rejected_by_code_and_by_schema_where_expressible(case):
    body = (CORPUS / case["file"]).read_bytes()
    with pytest.raises(InvalidRequest):
        parse_request(body, replace(META, **case["meta"]), LIMITS)
    if case["schema"] is None:  # not a JSON document at all: nothing for a schema to look at
        with pytest.raises((ValueError, RecursionError)):
            json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        return
    errors = list(REQUEST.iter_errors(json.loads(body)))
    if case["schema"]:
        assert errors, f"schema accepts {case['file']}"
    else:
        assert not errors, f"schema now rejects {case['file']}: mark it schema=true in make_corpus.py"


def _result(status: str, **over) -> Result:
    now = datetime(2026, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    result = Result(
        request_id="r-1",
        correlation_id="c-1",
        action="delete",
        collection="coll",
        status=status,
        items=[ItemOutcome("a", "succeeded"), ItemOutcome("b", "failed", {"code": "X", "message": "y"})],
        operations=[OperationRef("op-1", "Succeeded")],
        error=None,
        attempts=2,
        received_at=now,
        completed_at=now,
    )
    for k, v in over.items():
        setattr(result, k, v)
    return result


def test_results_built_by_code_validate_against_the_result_schema():
    for result in (
        _result("succeeded", items=[ItemOutcome("a", "succeeded")]),
        _result("failed"),
        _result(
            "invalid", items=[], error={"code": "InvalidRequest", "message": "version: x"}, action=None, collection=None
        ),
    ):
        doc = json.loads(result.to_json_bytes())
        RESULT.validate(doc)
        assert parse_result(result.to_json_bytes()) == result


def test_result_schema_rejects_inconsistent_results():
    bad = [
        _result("invalid", error=None).to_dict(),  # invalid needs an error
        _result("succeeded", action=None).to_dict(),  # succeeded needs the action
        dict(_result("failed").to_dict(), received_at="2026-05-01 10:00"),
        dict(_result("failed").to_dict(), status="partial"),
    ]
    for doc in bad:
        assert not RESULT.is_valid(doc), doc


def test_invalid_result_fills_what_it_can_read():
    body = (CORPUS / "stac-bbox-5.json").read_bytes()
    with pytest.raises(InvalidRequest) as info:
        parse_request(body, META, LIMITS)
    result = invalid_result(META, info.value, body=body)
    assert (result.action, result.collection, result.status) == ("ingest", "sentinel-2", "invalid")
    hostile = invalid_result(META, info.value, body=(CORPUS / "collection-slash.json").read_bytes())
    assert hostile.collection is None  # an unreadable or invalid collection is never echoed
    assert invalid_result(META, info.value, body=b"\xff").action is None


def _bench() -> None:  # pragma: no cover - run by hand
    import time

    body = (CORPUS / "reply-to-not-allowed.json").read_bytes()
    doc = json.loads(body)
    doc["items"] = [dict(doc["items"][0], id=f"i{i}") for i in range(100)]
    body100 = json.dumps(doc).encode()
    for label, data, n in (("1 item", body, 5000), ("100 items", body100, 300)):
        t0 = time.process_time()
        for _ in range(n):
            parse_request(data, META)
        ours = (time.process_time() - t0) / n * 1e6
        t0 = time.process_time()
        for _ in range(n):
            REQUEST.is_valid(json.loads(data))
        schema = (time.process_time() - t0) / n * 1e6
        print(f"{label} ({len(data)} bytes): parse_request {ours:.1f} us CPU, jsonschema {schema:.1f} us CPU")


if __name__ == "__main__":  # pragma: no cover
    _bench()
