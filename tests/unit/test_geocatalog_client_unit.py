"""Pure-logic tests of the GeoCatalog client pieces: Retry-After parsing, backoff, Operation parsing, errors."""

from __future__ import annotations

import email.utils
import json
import random
import time

import pytest
from requests.structures import CaseInsensitiveDict

from worker.adapters.geocatalog.client import (
    AuthError,
    Cancelled,
    EncodedItems,
    GeoCatalogClient,
    GeoCatalogError,
    NetworkError,
    NotFound,
    Operation,
    OperationTimeout,
    ServerError,
    Throttled,
    ValidationError,
    auth_fault_cause,
    bearer_challenge,
    encode_item,
)
from worker.adapters.geocatalog.retry import RetryPolicy, parse_retry_after
from worker.domain.errors import ConfigurationFault, ErrorKind, FaultCause, WorkerError
from worker.domain.secrets import Secret


def headers(**kw: str) -> CaseInsensitiveDict:
    return CaseInsensitiveDict({k.replace("_", "-"): v for k, v in kw.items()})


# ------------------------------------------------------------------------------------------ Retry-After


def test_retry_after_seconds() -> None:
    assert parse_retry_after(headers(Retry_After="3")) == 3.0
    assert parse_retry_after(headers(Retry_After=" 0 ")) == 0.0
    assert parse_retry_after(headers(Retry_After="1.5")) == 1.5


def test_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = parse_retry_after(headers(Retry_After=future))
    assert value is not None
    assert 27 <= value <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(headers(Retry_After=past)) == 0.0


def test_retry_after_ms_headers_take_precedence() -> None:
    assert parse_retry_after(headers(retry_after_ms="250", Retry_After="9")) == 0.25
    assert parse_retry_after(headers(x_ms_retry_after_ms="1500")) == 1.5
    # case-insensitive like real response headers
    assert parse_retry_after(CaseInsensitiveDict({"Retry-After-Ms": "100"})) == 0.1


def test_retry_after_invalid_or_missing_is_none() -> None:
    assert parse_retry_after(headers()) is None
    assert parse_retry_after(headers(Retry_After="soon")) is None
    assert parse_retry_after(headers(Retry_After="-5")) == 0.0
    assert parse_retry_after(headers(retry_after_ms="nan-ish")) is None
    assert parse_retry_after(headers(Retry_After="inf")) is None


def test_backoff_full_jitter_bounds() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
    rng = random.Random(0)
    for retry in range(1, 10):
        cap = min(4.0, 0.5 * 2 ** (retry - 1))
        samples = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.8  # full jitter spreads over the whole range
        assert min(samples) < cap * 0.2


# ------------------------------------------------------------------------------------------ Operation


def test_operation_succeeded() -> None:
    op = Operation.from_json(
        {
            "id": "op-1",
            "status": "Succeeded",
            "type": "AddItem",
            "collectionId": "c",
            "additionalInformation": {"TotalItems": "2", "TotalFailedItems": 0},
            "statusHistory": [{"status": "Pending"}, {"status": "Finished"}],
        },
        retry_after=2.0,
    )
    assert op.terminal and op.succeeded
    assert op.type == "AddItem" and op.collection_id == "c"
    assert op.additional_information == {"TotalItems": "2", "TotalFailedItems": "0"}
    assert op.retry_after == 2.0
    assert op.error_code is None


def test_operation_failed_doubly_nested_error() -> None:
    op = Operation.from_json(
        {
            "id": "op-2",
            "status": "Failed",
            "error": {"error": {"code": "ItemAlreadyExistsInCollection", "message": "Item 'x' already exists"}},
        }
    )
    assert op.terminal and not op.succeeded
    assert op.error_code == "ItemAlreadyExistsInCollection"
    assert op.error_message == "Item 'x' already exists"


def test_operation_failed_falls_back_to_history_and_redacts() -> None:
    op = Operation.from_json(
        {
            "id": "op-3",
            "status": "failed",
            "statusHistory": [
                {"status": "Pending"},
                {
                    "status": "Failed",
                    "errorCode": "PublicAccessRestricted",
                    "errorMessage": "cannot read https://a.blob.core.windows.net/c/x.tif?se=1&sig=SECRET",
                },
            ],
        }
    )
    assert op.terminal
    assert op.error_code == "PublicAccessRestricted"
    assert "SECRET" not in (op.error_message or "")


@pytest.mark.parametrize("status", ["Pending", "Running", "Canceling"])
def test_operation_non_terminal(status: str) -> None:
    assert not Operation.from_json({"id": "x", "status": status}).terminal


@pytest.mark.parametrize("body", [{}, {"id": ""}, {"id": "x"}, {"id": 5, "status": "Pending"}, [], "nope"])
def test_operation_malformed(body) -> None:
    with pytest.raises(GeoCatalogError) as info:
        Operation.from_json(body)
    assert info.value.code == "MalformedOperation"


# ------------------------------------------------------------------------------------------ errors / config


def test_error_kinds() -> None:
    assert ValidationError("x").kind == ErrorKind.INVALID
    assert NotFound("x").kind == ErrorKind.PERMANENT
    assert AuthError("x").kind == ErrorKind.CONFIGURATION
    assert isinstance(AuthError("x"), ConfigurationFault)
    for cls in (Throttled, ServerError, NetworkError, OperationTimeout, Cancelled):
        assert cls("x").kind == ErrorKind.TRANSIENT
        assert issubclass(cls, WorkerError)


@pytest.mark.parametrize(
    ("status", "message", "challenge", "cause"),
    [
        (403, "Forbidden", "", FaultCause.GEOCATALOG_FORBIDDEN),
        (403, "", 'Bearer error="insufficient_scope"', FaultCause.GEOCATALOG_FORBIDDEN),
        (
            401,
            "",
            'Bearer authorization_uri="https://login.microsoftonline.com/t", error="invalid_token"',
            FaultCause.GEOCATALOG_UNAUTHORIZED,
        ),
        (
            401,
            "",
            'Bearer error="invalid_token", error_description="The access token has been obtained for wrong '
            'audience or resource"',
            FaultCause.GEOCATALOG_AUDIENCE,
        ),
        (
            401,
            "Audience validation failed. Audience did not match.",
            "Bearer resource_id=https://x",
            FaultCause.GEOCATALOG_AUDIENCE,
        ),
        (401, "The access token expired", 'Bearer error="invalid_token"', FaultCause.GEOCATALOG_UNAUTHORIZED),
        (401, "", "Basic realm=x", FaultCause.GEOCATALOG_UNAUTHORIZED),
    ],
)
def test_auth_fault_cause_from_status_and_challenge(status, message, challenge, cause) -> None:
    assert auth_fault_cause(status, message, challenge) is cause


def test_bearer_challenge_parses_quoted_and_bare_parameters() -> None:
    got = bearer_challenge('Bearer authorization_uri="https://login/x", error="invalid_token", resource_id=https://r')
    assert got == {"authorization_uri": "https://login/x", "error": "invalid_token", "resource_id": "https://r"}
    assert bearer_challenge('Basic realm="x"') == {}


def test_error_text_is_redacted() -> None:
    err = ValidationError("bad href https://a.blob.core.windows.net/c/x?sv=1&sig=SECRETSIG and Bearer abc.def")
    assert "SECRETSIG" not in str(err)
    assert "abc.def" not in str(err)


def test_client_requires_auth_and_http_url() -> None:
    with pytest.raises(ValueError, match="credential or a static_token"):
        GeoCatalogClient("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="http"):
        GeoCatalogClient("ftp://x", static_token=Secret("t"))


def test_client_bare_string_token_accepted_and_never_in_repr() -> None:
    client = GeoCatalogClient("http://127.0.0.1:1/", static_token="plain-token")
    assert client.base_url == "http://127.0.0.1:1"
    assert "plain-token" not in repr(vars(client))
    client.close()


# ------------------------------------------------------------------------------------------ encoded items


def test_encoded_items_are_the_post_body_and_count_their_bytes() -> None:
    items = [{"id": "a", "properties": {"title": "Zürich"}}, {"id": "b", "properties": {}}]
    encoded = EncodedItems(items)
    assert list(encoded) == items and len(encoded) == 2 and encoded[1]["id"] == "b"
    body = encoded.body()
    assert json.loads(body) == {"type": "FeatureCollection", "features": items}
    assert len(body) == len(b'{"type":"FeatureCollection","features":[]}') + 1 + sum(len(encode_item(i)) for i in items)
    assert "Zürich".encode() in encode_item(items[0])  # UTF-8, not \u escapes: the size the service sees
    with pytest.raises(ValueError):
        encode_item({"id": "n", "bbox": [float("nan")]})  # not JSON
    with pytest.raises(ValueError, match="one encoding per item"):
        EncodedItems(items, [b"{}"])


def test_server_seconds_from_the_operation_timestamps() -> None:
    body = {
        "id": "op",
        "status": "Succeeded",
        "creationTime": "2025-10-27T17:56:47.126281Z",
        "finishTime": "2025-10-27T17:56:54.016281Z",
    }
    assert Operation.from_json(body).server_seconds == pytest.approx(6.89)
    assert Operation.from_json({**body, "finishTime": None}).server_seconds is None
    assert Operation.from_json({**body, "finishTime": "soon"}).server_seconds is None
