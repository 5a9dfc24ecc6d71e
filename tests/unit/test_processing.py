"""Pure-logic tests of worker.processing.processor: outcome mapping and classification, with an in-memory catalog."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from tests.support.fakes import FakeCatalog, make_item
from tests.support.processing import processing_settings
from worker.adapters.geocatalog.client import AuthError, ServerError
from worker.domain import contract
from worker.domain.errors import FaultCause, InvalidError, PermanentError, TransientError, WorkerError
from worker.processing.batching import Batcher, BatchSettings
from worker.processing.processor import MAX_DESCRIPTION, Outcome, ProcessingSettings, Processor, Settle

pytestmark = pytest.mark.timeout(30)


def meta(attempt: int = 1, delivery_count: int = 1, message_id: str = "m-1") -> contract.MessageMeta:
    return contract.MessageMeta(
        message_id=message_id,
        correlation_id="corr-1",
        reply_to="results",
        reply_to_session_id=None,
        session_id=None,
        delivery_count=delivery_count,
        enqueued_time=None,
        attempt=attempt,
    )


def ingest(items=(), item_urls=(), mode="upsert", **kw) -> contract.Request:
    return contract.Request(
        meta=meta(**kw),
        version=1,
        action="ingest",
        collection="c1",
        items=tuple(items),
        item_urls=tuple(item_urls),
        mode=mode,
    )


def delete(ids, **kw) -> contract.Request:
    return contract.Request(meta=meta(**kw), version=1, action="delete", collection="c1", item_ids=tuple(ids))


class DictFetcher:
    def __init__(self, docs: dict[str, object], error: WorkerError | None = None) -> None:
        self.docs = docs
        self.error = error

    def fetch(self, url: str) -> dict:
        if self.error is not None:
            raise self.error
        return self.docs[url]  # type: ignore[return-value]


class FailingSigner:
    def __init__(self, error: WorkerError) -> None:
        self.error = error

    def sign_item(self, item: dict) -> dict:
        raise self.error


class MarkingSigner:
    def sign_item(self, item: dict) -> dict:
        out = dict(item)
        out["assets"] = {k: dict(a, href=a["href"] + "?sig=SECRETSIG") for k, a in item["assets"].items()}
        return out


@pytest.fixture
def fake() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def make(fake):
    made: list[Batcher] = []

    def build(*, fetcher=None, signer=None, **settings) -> Processor:
        settings.setdefault("transient_retries", 0)
        settings.setdefault("transient_retry_delay", 0.0)
        b = Batcher(fake, BatchSettings(linger=0.0))
        made.append(b)
        return Processor(fake, signer, fetcher, b, processing_settings(**settings))

    yield build
    for b in made:
        b.close()


def run(p: Processor, req: contract.Request, cancel: threading.Event | None = None) -> Outcome:
    return p.process(req, cancel or threading.Event(), received_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_inline_ingest_succeeds(make, fake):
    out = run(make(), ingest([make_item("a"), make_item("b")]))
    assert out.settle is Settle.COMPLETE and out.reason is None
    r = out.result.to_dict()
    assert r["status"] == "succeeded"
    assert r["items"] == [{"id": "a", "status": "succeeded"}, {"id": "b", "status": "succeeded"}]
    assert len(r["operations"]) == 1 and r["operations"][0]["status"] == "Succeeded"
    assert r["request_id"] == "m-1" and r["correlation_id"] == "corr-1" and r["attempts"] == 1
    assert set(fake.items) == {("c1", "a"), ("c1", "b")}


def test_signed_items_are_what_gets_submitted(make, fake):
    run(make(signer=MarkingSigner()), ingest([make_item("a")]))
    assert fake.submitted[("c1", "a")]["assets"]["data"]["href"].endswith("?sig=SECRETSIG")


def test_claim_check_items_are_fetched_validated_and_ingested(make, fake):
    docs = {"https://h/a.json": make_item("a"), "https://h/b.json": make_item("b")}
    out = run(make(fetcher=DictFetcher(docs)), ingest(item_urls=list(docs)))
    assert out.settle is Settle.COMPLETE
    assert [i.id for i in out.result.items] == ["a", "b"]


def test_fetched_item_that_is_malformed_makes_the_request_invalid(make, fake):
    bad = make_item("a")
    del bad["geometry"]
    out = run(make(fetcher=DictFetcher({"u0": make_item("z"), "u1": bad})), ingest(item_urls=["u0", "u1"]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "InvalidRequest"
    assert out.result.status == "invalid"
    assert out.result.error["code"] == "InvalidRequest"
    assert "item_urls[1]" in out.result.error["message"]
    assert fake.calls["POST"] == 0


def test_fetched_items_with_duplicate_ids_are_invalid(make, fake):
    docs = {"u0": make_item("a"), "u1": make_item("a")}
    out = run(make(fetcher=DictFetcher(docs)), ingest(item_urls=["u0", "u1"]))
    assert out.reason == "InvalidRequest"
    assert "item_urls[1].id" in out.result.error["message"]


def test_fetch_refused_as_invalid_is_dead_lettered(make):
    err = InvalidError("host not allowed", code="HostNotAllowed", field="item_urls[0]")
    out = run(make(fetcher=DictFetcher({}, err)), ingest(item_urls=["https://evil/x.json"]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "InvalidRequest"
    assert out.result.error == {"code": "HostNotAllowed", "message": "item_urls[0]: host not allowed"}


def test_transient_fetch_failure_retries_without_result(make):
    err = TransientError("503 from blob", code="FetchFailed", retry_after=7.0)
    out = run(make(fetcher=DictFetcher({}, err), retry_base=1.0), ingest(item_urls=["u"]))
    assert out.settle is Settle.RETRY and out.result is None
    assert out.retry_after >= 7.0


def test_signing_failure_transient_retries_and_permanent_fails(make):
    t = run(
        make(signer=FailingSigner(TransientError("sas 503", code="SasUnavailable"))),
        ingest([make_item("a")]),
    )
    assert t.settle is Settle.RETRY and t.result is None
    p = run(
        make(signer=FailingSigner(PermanentError("sas 403", code="SasForbidden"))),
        ingest([make_item("a")]),
    )
    assert p.settle is Settle.DEAD_LETTER and p.reason == "IngestFailed"
    assert p.result.status == "failed" and p.result.items[0].error["code"] == "SasForbidden"


def test_transient_operation_failure_retries_with_backoff(make, fake):
    fake.op_faults.append("InternalError")
    out = run(make(retry_base=4.0, retry_max=100.0), ingest([make_item("a")], attempt=2))
    assert out.settle is Settle.RETRY and out.result is None
    assert 4.0 <= out.retry_after <= 8.0  # base * 2**(attempt-1), equal jitter


def test_transient_failure_on_last_attempt_is_dead_lettered_retries_exhausted(make, fake):
    fake.op_faults.append("InternalError")
    out = run(make(max_attempts=3), ingest([make_item("a"), make_item("b")], attempt=3))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "RetriesExhausted"
    assert out.result.status == "failed"
    assert {i.error["code"] for i in out.result.items} == {"InternalError"}
    assert "after 3 attempt(s)" in out.description


def test_in_process_retry_recovers_a_transient_failure(make, fake):
    fake.op_faults.append("InternalIntermitentError")
    out = run(make(transient_retries=1), ingest([make_item("a")]))
    assert out.settle is Settle.COMPLETE and out.result.status == "succeeded"
    assert [o.status for o in out.result.operations] == ["Failed", "Succeeded"]


def test_http_transient_error_from_client_retries(make, fake):
    class Flaky(FakeCatalog):
        def create_items(self, collection, items, *, cancel=None):
            raise ServerError("503 Service Unavailable", status=503, retry_after=2.0)

    b = Batcher(Flaky(), BatchSettings(linger=0.0))
    try:
        p = Processor(Flaky(), None, None, b, processing_settings(transient_retries=0, retry_base=1.0))
        out = run(p, ingest([make_item("a")]))
    finally:
        b.close()
    assert out.settle is Settle.RETRY and out.retry_after >= 2.0


def test_auth_failure_after_refresh_holds_the_request_unanswered(make):
    class NoAuth(FakeCatalog):
        def create_items(self, collection, items, *, cancel=None):
            raise AuthError("403 after token refresh", status=403, cause=FaultCause.GEOCATALOG_FORBIDDEN)

        def delete_item(self, collection, item_id, *, cancel=None):
            raise AuthError("401 after token refresh", status=401)

    b = Batcher(NoAuth(), BatchSettings(linger=0.0))
    try:
        p = Processor(NoAuth(), None, None, b, ProcessingSettings())
        out = run(p, ingest([make_item("a"), make_item("b")]))
        deleted = run(p, delete(["a"]))
    finally:
        b.close()
    assert (out.settle, out.reason, out.result) == (Settle.HOLD, "geocatalog_forbidden", None)
    assert "403 after token refresh" in out.description
    assert (deleted.settle, deleted.reason, deleted.result) == (Settle.HOLD, "geocatalog_unauthorized", None)


def test_partial_permanent_failure_is_answered_and_completed(make, fake):
    fake.item_faults["b"] = "IngestionAuthenticationFailed"
    out = run(make(), ingest([make_item("a"), make_item("b")]))
    assert out.settle is Settle.COMPLETE and out.reason is None
    r = out.result
    assert r.status == "failed"
    assert [i.status for i in r.items] == ["succeeded", "failed"]
    assert r.items[1].error["code"] == "IngestionAuthenticationFailed"
    assert r.error["code"] == "IngestionAuthenticationFailed" and "1 of 2" in r.error["message"]


def test_all_items_failing_permanently_is_dead_lettered_with_details(make, fake):
    fake.item_faults.update({"a": "IngestionResourceForbidden", "b": "PublicAccessRestricted"})
    out = run(make(), ingest([make_item("a"), make_item("b")]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "IngestFailed"
    assert out.result.status == "failed" and out.result.error["code"] == "ItemsFailed"
    assert "a: IngestionResourceForbidden" in out.description and "b: PublicAccessRestricted" in out.description
    assert "collection 'c1'" in out.description and "1 attempt(s)" in out.description


def test_upsert_redelivery_succeeds_and_ingests_nothing_twice(make, fake):
    p = make()
    first = run(p, ingest([make_item("a"), make_item("b")]))
    again = run(p, ingest([make_item("a"), make_item("b")], delivery_count=2))
    assert first.result.status == again.result.status == "succeeded"
    assert len(fake.items) == 2 and fake.calls["PUT"] == 0


def test_create_mode_conflict_fails_that_item(make, fake):
    p = make()
    run(p, ingest([make_item("a")], mode="create"))
    out = run(p, ingest([make_item("a", value=2)], mode="create"))
    assert out.result.status == "failed"
    assert out.result.items[0].error["code"] == "ItemAlreadyExistsInCollection"
    assert out.settle is Settle.DEAD_LETTER and out.reason == "IngestFailed"


def test_delete_counts_missing_items_as_deleted(make, fake):
    fake.items[("c1", "a")] = make_item("a")
    out = run(make(), delete(["a", "gone"]))
    assert out.settle is Settle.COMPLETE and out.result.status == "succeeded"
    assert [o.status for o in out.result.operations] == ["Succeeded", "Failed"]  # NoRecordsToDelete == success
    assert ("c1", "a") not in fake.items


def test_delete_permanent_failure_and_transient_failure(make, fake):
    fake.items[("c1", "a")] = make_item("a")
    fake.op_faults.append("SomethingBroke")
    out = run(make(), delete(["a"]))
    assert out.reason == "DeleteFailed" and out.result.items[0].error["code"] == "SomethingBroke"
    fake.op_faults.append("InternalError")
    out = run(make(), delete(["a"]))
    assert out.settle is Settle.RETRY and out.result is None


def test_cancelled_request_retries_with_no_result(fake):
    cancel = threading.Event()
    b = Batcher(fake, BatchSettings(linger=1.0))
    try:
        p = Processor(fake, None, None, b, ProcessingSettings())
        threading.Timer(0.05, cancel.set).start()
        out = run(p, ingest([make_item("a")]), cancel)
    finally:
        b.close()
    assert out.settle is Settle.RETRY and out.result is None and out.retry_after == 0.0
    assert fake.calls["POST"] == 0


def test_description_is_bounded_and_has_no_secrets(make, fake):
    items = [make_item(f"item-{n:04d}-" + "x" * 100) for n in range(60)]
    fake.item_faults = {it["id"]: "IngestionAuthenticationFailed" for it in items}
    out = run(make(signer=MarkingSigner()), ingest(items))
    assert out.reason == "IngestFailed"
    assert len(out.description) <= MAX_DESCRIPTION
    assert "SECRETSIG" not in out.result.to_json_bytes().decode() and "SECRETSIG" not in out.description


def test_secret_in_operation_message_is_redacted_everywhere(make, fake):
    class Leaky(FakeCatalog):
        def create_items(self, collection, items, *, cancel=None):
            op = super().create_items(collection, items, cancel=cancel)
            import dataclasses

            return dataclasses.replace(
                op,
                status="Failed",
                error_code="IngestionAuthenticationFailed",
                error_message="denied https://acct.blob.core.windows.net/ctr/a.tif?sv=1&sig=TOPSECRET",
            )

    leaky = Leaky()
    b = Batcher(leaky, BatchSettings(linger=0.0))
    try:
        out = run(Processor(leaky, None, None, b, ProcessingSettings()), ingest([make_item("a")]))
    finally:
        b.close()
    assert out.result.items[0].error["code"] == "IngestionAuthenticationFailed"
    assert "TOPSECRET" not in out.result.to_json_bytes().decode()
    assert "TOPSECRET" not in (out.description or "")


class SomeFailFetcher:
    """Serves ``docs``; raises ``error`` for the URLs in ``failing``."""

    def __init__(self, docs: dict[str, object], failing: set[str], error: WorkerError) -> None:
        self.docs, self.failing, self.error = docs, failing, error

    def fetch(self, url: str) -> dict:
        if url in self.failing:
            raise self.error
        return self.docs[url]  # type: ignore[return-value]


def test_claim_check_request_failure_has_one_entry_per_url_with_fetched_ids_or_url_index(make):
    # docs/messages.md promises one items[] entry per item; a whole-request failure of an item_urls request used to
    # answer ``items: []`` because request.items is empty for a claim check
    err = TransientError("blob 503", code="ItemFetchUnavailable")
    docs = {"u0": make_item("a"), "u2": make_item("c")}
    out = run(
        make(fetcher=SomeFailFetcher(docs, {"u1"}, err), max_attempts=1, fetch_concurrency=1),
        ingest(item_urls=["u0", "u1", "u2"]),
    )
    assert out.settle is Settle.DEAD_LETTER and out.reason == "RetriesExhausted"
    r = out.result.to_dict()
    assert r["status"] == "failed"
    # sequential fetch: u0 fetched (id known), u1 failed, u2 never fetched -> the URL index stands in
    assert [i["id"] for i in r["items"]] == ["a", "item_urls[1]", "item_urls[2]"]
    assert all(i["status"] == "failed" and i["error"]["code"] == "ItemFetchUnavailable" for i in r["items"])


def test_claim_check_request_failure_after_fetching_uses_every_fetched_id(make):
    # every item fetched, then signing fails for good: the entries carry the fetched ids
    signer = FailingSigner(PermanentError("SAS 403", code="SasForbidden"))
    docs = {"u0": make_item("a"), "u1": make_item("b")}
    out = run(make(fetcher=DictFetcher(docs), signer=signer), ingest(item_urls=["u0", "u1"]))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "IngestFailed"
    assert [(i.id, i.status, i.error["code"]) for i in out.result.items] == [
        ("a", "failed", "SasForbidden"),
        ("b", "failed", "SasForbidden"),
    ]


def test_claim_check_request_without_fetcher_fails_with_one_entry_per_url(make):
    out = run(make(), ingest(item_urls=["u0", "u1"]))
    assert out.result.status == "failed" and out.result.error["code"] == "NoFetcher"
    assert [i.id for i in out.result.items] == ["item_urls[0]", "item_urls[1]"]


@pytest.mark.parametrize(
    "fields",
    [{"attempt": 3, "delivery_count": 1}, {"attempt": 1, "delivery_count": 3}],
    ids=["queue-rescheduled", "session-or-topic-abandoned"],
)
def test_the_retry_policy_decides_exhaustion_for_every_input_kind(make, fake, fields):
    """A session/topic retry (attempt 1, delivery_count 3) is exhausted like a queue reschedule (attempt 3)."""
    fake.op_faults.append("InternalError")
    out = run(make(max_attempts=3), ingest([make_item("a")], **fields))
    assert out.settle is Settle.DEAD_LETTER and out.reason == "RetriesExhausted"
    assert out.result.attempts == 3 and out.service_ok is False
    assert "after 3 attempt(s)" in out.description


def test_a_redelivery_is_a_retry_for_the_policy(make, fake):
    fake.op_faults.append("InternalError")
    out = run(make(max_attempts=3, retry_base=2.0, retry_max=60.0), ingest([make_item("a")], delivery_count=2))
    assert out.settle is Settle.RETRY and out.service_ok is False
    assert 3.2 <= out.retry_after <= 4.0  # attempt 2: base * 2, jitter shortens by up to 20 %
