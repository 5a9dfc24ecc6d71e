"""Pure-logic tests of the runtime: breaker, backoff, message building, handling, configuration. No network."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from azure.servicebus import ServiceBusMessage

from worker.domain.contract import Limits, MessageMeta
from worker.domain.retry_policy import RequestRetryPolicy, backoff
from worker.domain.secrets import Secret
from worker.observability.metrics import Metrics
from worker.processing.processor import Outcome, Settle
from worker.servicebus.breaker import BreakerState, CircuitBreaker
from worker.servicebus.config import ConfigError, RunConfig
from worker.servicebus.handling import handle
from worker.servicebus.inflight import InFlight
from worker.servicebus.locks import renew_message_locks
from worker.servicebus.messages import (
    ATTEMPT_PROPERTY,
    REQUEST_ID_PROPERTY,
    attempt_of,
    build_reply,
    clip,
    reply_message_id,
)
from worker.servicebus.outcome import Disposition
from worker.servicebus.settings import ConsumerSettings

if TYPE_CHECKING:
    from worker.servicebus.owner import ReceiverOwner


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- circuit breaker -------------------------------------------------------------------------------------------
def test_breaker_opens_after_threshold_consecutive_failures_and_holds_intake() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    b = CircuitBreaker(threshold=3, open_seconds=10, clock=clock, on_change=changes.append)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.allowance(8) == 8
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.allowance(8) == 0
    assert b.reopens_in() == pytest.approx(10)
    assert changes == [BreakerState.OPEN]


def test_breaker_half_open_lets_one_probe_then_closes_on_success() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, open_seconds=5, clock=clock)
    b.record_failure()
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN
    assert b.allowance(10) == 1
    assert b.allowance(10) == 0  # the probe is out
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allowance(10) == 10


def test_breaker_failed_probe_reopens_for_longer_up_to_the_cap() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, open_seconds=5, max_open_seconds=12, clock=clock)
    b.record_failure()
    holds = []
    for _ in range(3):
        clock.now += b.reopens_in()
        assert b.allowance(1) == 1
        b.record_failure()
        holds.append(b.reopens_in())
    assert holds == [10, 12, 12]


def test_breaker_neutral_outcome_frees_the_probe() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, open_seconds=1, clock=clock)
    b.record_failure()
    clock.now += 1
    assert b.allowance(3) == 1
    b.record_neutral()  # e.g. the probe was invalid input: it said nothing about GeoCatalog
    assert b.allowance(3) == 1


# ---- backoff ---------------------------------------------------------------------------------------------------
def test_backoff_grows_exponentially_is_capped_and_honours_retry_after() -> None:
    assert [backoff(a, base=2, cap=30, jitter=0) for a in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert backoff(1, base=2, cap=30, jitter=0, retry_after=12) == 12
    assert backoff(1, base=2, cap=30, jitter=0, retry_after=100) == 30  # a huge Retry-After is capped
    rng = random.Random(1)
    values = {round(backoff(3, base=2, cap=100, jitter=0.2, rng=rng), 3) for _ in range(50)}
    assert len(values) > 10 and all(6.4 <= v <= 8.0 for v in values)
    full = [backoff(3, base=2, cap=100, jitter=1.0, rng=rng) for _ in range(200)]
    assert min(full) < 1.0 and max(full) <= 8.0  # full jitter: anywhere in [0, delay]
    with pytest.raises(ValueError):
        backoff(0, base=1, cap=1, jitter=0)


@pytest.mark.parametrize(
    "deliveries",
    [
        [(1, 1), (2, 1), (3, 1), (4, 1)],  # queue: each retry is a rescheduled copy, gcw-attempt counts
        [(1, 1), (1, 2), (1, 3), (1, 4)],  # session or topic subscription: abandoned, delivery_count counts
        [(1, 1), (1, 2), (3, 1), (4, 1)],  # queue whose first lock was lost: the copy continues the count
    ],
    ids=["queue", "session-or-topic", "queue-lost-lock"],
)
def test_one_retry_policy_counts_attempts_and_delays_alike_for_every_input_kind(deliveries) -> None:
    policy = RequestRetryPolicy(max_attempts=4, base_seconds=2, max_seconds=60, jitter=0)
    metas = [meta(attempt=a, delivery_count=d) for a, d in deliveries]
    assert [policy.attempt(m) for m in metas] == [1, 2, 3, 4]
    assert [policy.is_retry(m) for m in metas] == [False, True, True, True]
    assert [policy.exhausted(m) for m in metas] == [False, False, False, True]
    assert [policy.delay(m) for m in metas] == [2, 4, 8, 16]


# ---- messages --------------------------------------------------------------------------------------------------
def meta(**kw: object) -> MessageMeta:
    base = {
        "message_id": "m-1",
        "correlation_id": None,
        "reply_to": None,
        "reply_to_session_id": None,
        "session_id": None,
        "delivery_count": 1,
        "enqueued_time": None,
        "attempt": 1,
    }
    base.update(kw)
    return MessageMeta(**base)  # type: ignore[arg-type]


def test_reply_has_deterministic_id_correlation_and_session() -> None:
    reply = build_reply(b"{}", meta(correlation_id="corr-7", reply_to_session_id="s-9", attempt=2), status="succeeded")
    assert isinstance(reply, ServiceBusMessage)
    assert reply.message_id == "result-m-1"
    assert reply.correlation_id == "corr-7"
    assert reply.session_id == "s-9"
    assert reply.application_properties[REQUEST_ID_PROPERTY] == "m-1"
    assert reply.application_properties[ATTEMPT_PROPERTY] == 2
    plain = build_reply(b"{}", meta())
    assert plain.correlation_id == "m-1"  # falls back to the request's message id
    assert plain.session_id is None
    assert build_reply(b"{}", meta()).message_id == plain.message_id  # same request -> same reply id


def test_long_request_ids_give_bounded_distinct_reply_ids() -> None:
    a, b = reply_message_id("x" * 200), reply_message_id("x" * 199 + "y")
    assert len(a) <= 128 and len(b) <= 128 and a != b


def test_attempt_counter_parsing() -> None:
    assert attempt_of({}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: 3}) == 3
    assert attempt_of({ATTEMPT_PROPERTY: "4"}) == 4
    assert attempt_of({ATTEMPT_PROPERTY: "garbage"}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: -2}) == 1


def test_clip_bounds_descriptions() -> None:
    assert clip("short", 4096) == "short"
    clipped = clip("x" * 5000, 4096)
    assert clipped is not None and len(clipped) <= 4096 and clipped.endswith("[clipped]")


def test_reply_destination_only_allowed_entities() -> None:
    s = ConsumerSettings(reply_queue="replies", request_queue="q", allowed_reply_to=frozenset({"other"}))
    assert s.reply_destination(None) == "replies"
    assert s.reply_destination("other") == "other"
    assert s.reply_destination("evil") == "replies"
    assert s.can_reschedule
    assert not ConsumerSettings(reply_queue="r", request_topic="t", request_subscription="s").can_reschedule
    assert not ConsumerSettings(reply_queue="r", request_queue="q", sessions=True).can_reschedule


# ---- handling (worker-thread side) -----------------------------------------------------------------------------
def rec_for(body: bytes, **kw: object) -> InFlight:
    now = time.monotonic()
    return InFlight(
        message=None,
        meta=meta(**kw),
        body=body,
        received_at=dt.datetime.now(dt.UTC),
        received_mono=now,
        lock_duration=30,
        lock_expires_mono=now + 30,
    )


GOOD = json.dumps({"version": 1, "action": "delete", "collection": "c1", "item_ids": ["a", "b"]}).encode()


class RecordingProcessor:
    def __init__(self, outcome: Outcome | None = None, error: Exception | None = None) -> None:
        self.outcome, self.error, self.calls = outcome, error, []

    def process(self, request, cancel, *, received_at=None):  # type: ignore[no-untyped-def]
        self.calls.append(request)
        if self.error:
            raise self.error
        return self.outcome


def test_invalid_body_is_dead_lettered_with_an_invalid_result_without_processing() -> None:
    proc = RecordingProcessor()
    d = handle(rec_for(b"{not json", correlation_id="c-1"), proc, Limits())
    assert proc.calls == []
    assert d.action is Settle.DEAD_LETTER and d.reason == "InvalidRequest"
    assert d.result.status == "invalid" and d.result.correlation_id == "c-1"
    assert d.description and len(d.description) <= 4096 and "body" in d.description
    assert d.service_ok is None  # says nothing about GeoCatalog


def test_processor_exception_becomes_processing_error_dead_letter_with_failed_result() -> None:
    token = "sig=abcdefSECRET123"
    proc = RecordingProcessor(error=RuntimeError(f"boom https://a.blob.core.windows.net/c/x?{token}"))
    d = handle(rec_for(GOOD), proc, Limits())
    assert d.action is Settle.DEAD_LETTER and d.reason == "ProcessingError"
    assert d.result is not None and d.result.status == "failed"
    assert [i.id for i in d.result.items] == ["a", "b"]
    assert "RuntimeError" in d.description and "SECRET123" not in d.description
    assert "SECRET123" not in json.dumps(d.result.to_dict())


def test_the_runtime_passes_the_processors_retry_decision_through() -> None:
    proc = RecordingProcessor(Outcome(None, Settle.RETRY, retry_after=7.5, service_ok=False))
    d = handle(rec_for(GOOD, attempt=9), proc, Limits())  # the runtime does not second-guess exhaustion
    assert d.action is Settle.RETRY and d.result is None and d.retry_after == 7.5 and d.service_ok is False


def test_disposition_maps_processor_outcomes() -> None:
    assert Disposition.from_outcome(Outcome(None, Settle.RETRY, retry_after=3.0)).retry_after == 3.0
    ok = Disposition.from_outcome(Outcome(None, Settle.COMPLETE, service_ok=True))
    assert ok.action is Settle.COMPLETE and ok.service_ok is True
    assert Disposition.from_outcome(Outcome(None, Settle.DEAD_LETTER, reason="InvalidRequest")).service_ok is None


def test_processor_receives_the_cancel_event() -> None:
    seen: list[threading.Event] = []

    class P:
        def process(self, request, cancel, *, received_at=None):  # type: ignore[no-untyped-def]
            seen.append(cancel)
            return Outcome(None, Settle.RETRY)

    rec = rec_for(GOOD)
    handle(rec, P(), Limits())
    assert seen == [rec.cancel]


# ---- configuration ---------------------------------------------------------------------------------------------
VALID = {
    "servicebus_connection_string": Secret("Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=zzz"),
    "request_queue": "requests",
    "reply_queue": "replies",
    "geocatalog_url": "http://127.0.0.1:1234",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"servicebus_connection_string": None}, "exactly one of --servicebus-connection-string"),
        ({"servicebus_namespace": "ns"}, "exactly one of"),
        ({"servicebus_connection_string": Secret("nonsense;SharedAccessKey=zzz")}, "Endpoint="),
        ({"request_queue": None}, "--request-queue"),
        ({"request_topic": "t"}, "not both"),
        ({"reply_queue": None}, "--reply-queue (GCW_REPLY_QUEUE) is required"),
        ({"geocatalog_url": "ftp://x"}, "--geocatalog-url (GCW_GEOCATALOG_URL) must be an http(s) URL"),
        ({"concurrency": 0}, "--concurrency (GCW_CONCURRENCY) must be >= 1"),
        ({"drain_seconds": -1}, "--drain-seconds"),
        ({"health_port": 70000}, "--health-port"),
        ({"static_sas": ("nokey",)}, "account/container=TOKEN"),
        ({"log_level": "LOUD"}, "--log-level"),
        ({"burst_seconds": 0}, "--burst (GCW_BURST) must be > 0 seconds"),
    ],
)
def test_invalid_configuration_is_rejected_with_a_precise_message(change: dict, message: str) -> None:
    cfg = RunConfig(**{**VALID, **change})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert message in str(err.value)
    assert "zzz" not in str(err.value)


def test_valid_configuration_passes() -> None:
    RunConfig(**VALID).validate()
    RunConfig(**{**VALID, "request_queue": None, "request_topic": "t", "request_subscription": "s"}).validate()


def test_every_run_flag_and_env_var_is_documented() -> None:
    from pathlib import Path

    from worker.servicebus.cli import run_command

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for param in run_command.params:
        assert f"`{param.opts[0]}" in doc, f"{param.opts[0]} missing from docs/configuration.md"
        assert f"`{param.envvar}`" in doc, f"{param.envvar} missing from docs/configuration.md"


def test_every_variable_the_chart_sets_is_a_run_setting() -> None:
    """The chart's env mapping agrees with RunConfig (the one source of the flags and their GCW_* variables)."""
    import re
    from pathlib import Path

    from worker.servicebus.cli import run_command

    known = {param.envvar for param in run_command.params}
    templates = Path(__file__).resolve().parents[2] / "helm" / "geocatalog-worker" / "templates"
    used = {name for path in templates.glob("*.yaml") for name in re.findall(r"GCW_[A-Z0-9_]+", path.read_text())}
    assert used, "the chart sets no GCW_* variable?"
    assert used <= known, f"the chart sets variables no run flag reads: {sorted(used - known)}"


def test_run_flags_are_generated_from_run_config() -> None:
    from dataclasses import fields

    from worker.options import config_from_values
    from worker.servicebus.cli import run_command
    from worker.servicebus.config import RunConfig, flag_of

    params = {param.name: param for param in run_command.params}
    assert list(params) == [f.name for f in fields(RunConfig)]  # one flag per setting, in declaration order
    for f in fields(RunConfig):
        assert params[f.name].opts[0] == flag_of(f)
        if f.default not in (None, ()):
            assert params[f.name].default == f.default, f.name
    ctx = run_command.make_context(
        "run", ["--geocatalog-token", "t0k", "--sign-host", "a", "--sign-host", "b", "--no-content-digest"]
    )
    cfg = config_from_values(ctx.params)
    assert cfg.sign_hosts == ("a", "b") and cfg.content_digest is False
    assert cfg.geocatalog_token is not None and cfg.geocatalog_token.reveal() == "t0k" and "t0k" not in repr(cfg)
    assert cfg.concurrency == RunConfig().concurrency


# ---- hostile message properties and bodies (must never crash the receiver-owner thread) -------------------------
def test_attempt_counter_survives_non_finite_numbers() -> None:
    assert attempt_of({ATTEMPT_PROPERTY: float("inf")}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: float("-inf")}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: float("nan")}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: "1e400"}) == 1
    assert attempt_of({ATTEMPT_PROPERTY: object()}) == 1


class _Body:
    def __init__(self, body: object) -> None:
        self.body = body


@pytest.mark.parametrize(
    "body", [None, {b"k": b"v"}, {"k": b"v"}, [b"a", 1], 3.5, True, dt.datetime(2026, 1, 1), object()]
)
def test_body_bytes_never_raises_on_odd_amqp_bodies(body: object) -> None:
    from worker.servicebus.messages import body_bytes

    assert isinstance(body_bytes(_Body(body)), bytes)  # type: ignore[arg-type]


def test_body_bytes_of_a_missing_body_is_empty() -> None:
    from worker.servicebus.messages import body_bytes

    assert body_bytes(_Body(None)) == b""  # type: ignore[arg-type]


def test_reply_with_overlong_reply_to_session_id_is_still_buildable() -> None:
    # the contract answers such a request ``invalid``; the SDK refuses a session_id over 128 characters, which
    # raised on the receiver-owner thread and killed the loop (and every pod the message was redelivered to)
    reply = build_reply(b"{}", meta(reply_to_session_id="s" * 200), status="invalid")
    assert reply.session_id is None
    assert reply.message_id == "result-m-1"


def test_reply_destination_matches_allowed_entities_case_insensitively() -> None:
    # the contract accepts reply_to case-insensitively, so the reply must go where the request asked
    s = ConsumerSettings(reply_queue="replies", request_queue="q", allowed_reply_to=frozenset({"Other"}))
    assert s.reply_destination("OTHER") == "Other"
    assert s.reply_destination("other") == "Other"
    assert s.reply_destination("REPLIES") == "replies"
    assert s.reply_destination("evil") == "replies"


def test_reply_correlation_id_is_always_within_the_service_bus_limit() -> None:
    # a correlation_id over 128 characters makes the request ``invalid`` (contract), but the reply used to copy it
    # onto its correlation id: Service Bus rejects such a message, so the reply never went out and the request was
    # redelivered until MaxDeliveryCount without any result. The SDK checks only message_id / session_id /
    # reply_to_session_id / partition_key (MESSAGE_PROPERTY_MAX_LENGTH), not correlation_id: we must.
    from azure.servicebus._common.constants import MESSAGE_PROPERTY_MAX_LENGTH

    long_corr = build_reply(b"{}", meta(correlation_id="c" * 200), status="invalid")
    assert long_corr.correlation_id == "m-1"  # the request's message id (its result's request_id) instead
    exactly = build_reply(b"{}", meta(correlation_id="c" * 128))
    assert exactly.correlation_id == "c" * 128  # at the limit: kept
    from worker.servicebus.messages import reply_correlation_id

    # a message id over the limit too (also ``invalid``), with or without a correlation id: a stable hash
    for m in (meta(message_id="x" * 300), meta(message_id="x" * 300, correlation_id="c" * 300)):
        reply = build_reply(b"{}", m, status="invalid")
        assert len(reply.correlation_id) <= MESSAGE_PROPERTY_MAX_LENGTH
        assert reply.correlation_id == reply_correlation_id(m) == build_reply(b"{}", m).correlation_id
    assert reply_correlation_id(meta(message_id="x" * 300)) != reply_correlation_id(meta(message_id="x" * 301))
    # every id the reply carries passes the SDK's own validation when set again
    for m in (meta(correlation_id="c" * 200, reply_to_session_id="s" * 200), meta(message_id="x" * 300)):
        reply = build_reply(b"{}", m, status="invalid")
        ServiceBusMessage(
            b"{}", message_id=reply.message_id, correlation_id=reply.correlation_id, session_id=reply.session_id
        )
        assert all(
            len(v) <= MESSAGE_PROPERTY_MAX_LENGTH
            for v in (reply.message_id, reply.correlation_id, reply.session_id or "")
        )


# ---- receiver owner: opening a session receiver ----------------------------------------------------------------
class _NoSessionReceiver:
    """A session receiver whose open finds no session (what the SDK raises after max_wait_time)."""

    def __init__(self) -> None:
        self.closed = 0

    def __enter__(self) -> _NoSessionReceiver:
        from azure.servicebus.exceptions import OperationTimeoutError

        raise OperationTimeoutError(message="no session available")

    def close(self) -> None:
        self.closed += 1


class _ReceiverClient:
    def __init__(self) -> None:
        self.receivers: list[_NoSessionReceiver] = []

    def get_queue_receiver(self, queue_name: str, **kwargs: object) -> _NoSessionReceiver:
        self.receivers.append(_NoSessionReceiver())
        return self.receivers[-1]


def test_session_receiver_that_finds_no_session_is_closed_every_time() -> None:
    # each idle attempt used to drop the receiver without close(): its handler (and, depending on the SDK's error
    # path, its AMQP connection) was left to the garbage collector, once per max_wait_time on every idle owner
    from worker.observability.health import HealthState
    from worker.observability.metrics import Metrics
    from worker.servicebus.owner import ReceiverOwner

    receivers = _ReceiverClient()
    owner = ReceiverOwner(
        "session-0",
        client=None,  # type: ignore[arg-type]  # never reached: no session, so no sender is opened
        settings=ConsumerSettings(reply_queue="replies", request_queue="requests", sessions=True),
        dispatch=lambda rec, own: None,
        breaker=CircuitBreaker(),
        metrics=Metrics(),
        health=HealthState(),
        capacity=1,
        receiver_client=receivers,  # type: ignore[arg-type]
    )
    for _ in range(5):
        assert owner._open() is False
    assert [r.closed for r in receivers.receivers] == [1] * 5
    assert owner._link.receiver is None


def _owner(settings: ConsumerSettings, *, capacity: int, clock: Callable[[], float] = time.monotonic) -> ReceiverOwner:
    """A receiver owner on fakes: no client (nothing here opens a sender), a receiver client that finds nothing."""
    from worker.observability.health import HealthState
    from worker.servicebus.owner import ReceiverOwner

    return ReceiverOwner(
        "r-0",
        client=None,  # type: ignore[arg-type]
        settings=settings,
        dispatch=lambda rec, own: None,
        breaker=CircuitBreaker(),
        metrics=Metrics(),
        health=HealthState(),
        capacity=capacity,
        receiver_client=_ReceiverClient(),  # type: ignore[arg-type]
        clock=clock,
    )


def test_burst_counts_empty_time_from_the_first_empty_look_and_after_the_last_scheduled_retry() -> None:
    now = [100.0]
    owner = _owner(
        ConsumerSettings(reply_queue="replies", request_queue="requests", sessions=True, burst_seconds=3),
        capacity=1,
        clock=lambda: now[0],
    )
    assert owner.empty_for() == 0.0  # nothing looked at yet
    owner._open()  # no session to accept: empty
    now[0] += 2
    owner._open()
    assert owner.empty_for() == 2.0  # from the first empty look, not the latest
    owner._note_intake(found_nothing=False)  # a message arrived (or intake was held)
    assert owner.empty_for() == 0.0
    owner._open()
    owner._retries_due_at = now[0] + 5  # a retry it scheduled is due in 5 s: the queue is not done
    now[0] += 6
    assert owner.empty_for() == 1.0


# ---- result size -----------------------------------------------------------------------------------------------
def _big_result(n: int = 1000, message_chars: int = 2000, ops: int = 0, id_chars: int = 149):  # type: ignore[no-untyped-def]
    from worker.domain.contract import ItemOutcome, OperationRef, Result

    ids = [f"i{k:04d}".ljust(id_chars, "x") for k in range(n)]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return Result(
        request_id="m-1",
        correlation_id="c-1",
        action="ingest",
        collection="c1",
        status="failed",
        items=[ItemOutcome(i, "failed", {"code": "Bad", "message": f"{i}: " + "x" * message_chars}) for i in ids],
        operations=[OperationRef(f"{k:08d}-0000-4000-8000-000000000000", "Failed") for k in range(ops)],
        error={"code": "Bad", "message": f"{n} of {n} items failed"},
        attempts=1,
        received_at=now,
        completed_at=now,
    ), ids


@pytest.mark.parametrize(
    ("message_chars", "ops", "id_chars", "expect"),
    [
        (2000, 0, 20, "cut to 256"),  # clipping the messages is enough
        (2000, 0, 149, "collapsed"),  # distinct messages: clipped to 64 -> still differ -> messages dropped
        (2000, 3000, 149, "operations listed"),
        (10, 0, 149, None),  # fits as it is
    ],
)
def test_result_body_is_bounded_keeping_status_counts_and_every_item(message_chars, ops, id_chars, expect) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    import jsonschema

    from worker.servicebus.messages import DEFAULT_MAX_RESULT_BYTES, result_body

    n = 100 if expect is None else 1000
    result, ids = _big_result(n=n, message_chars=message_chars, ops=ops, id_chars=id_chars)
    body, shortened = result_body(result)
    assert len(body) <= DEFAULT_MAX_RESULT_BYTES
    doc = json.loads(body)
    schema = json.loads((Path(__file__).resolve().parents[2] / "worker/schemas/result-v1.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert [i["id"] for i in doc["items"]] == ids and {i["status"] for i in doc["items"]} == {"failed"}
    assert doc["status"] == "failed" and doc["error"]["code"] == "Bad"
    assert doc["error"]["message"].startswith(f"{len(ids)} of {len(ids)} items failed")
    if expect is None:
        assert shortened is None and body == result.to_json_bytes()
    else:
        assert expect in shortened and "result shortened to fit" in doc["error"]["message"]


def test_result_body_collapses_repeated_item_errors() -> None:
    from worker.domain.contract import ItemOutcome
    from worker.servicebus.messages import result_body

    result, ids = _big_result(id_chars=40)
    same = {"code": "AssetAccessDenied", "message": "storage said 403 " + "y" * 2000}
    result.items = [ItemOutcome(i, "failed", dict(same)) for i in ids]
    body, shortened = result_body(result, 150 * 1024)
    doc = json.loads(body)
    assert len(body) <= 150 * 1024 and "collapsed" in shortened
    assert doc["items"][0]["error"]["message"].startswith("storage said 403")
    assert all(i["error"] == {"code": "AssetAccessDenied", "message": "same as items[0]"} for i in doc["items"][1:])


def test_the_configuration_summary_names_every_setting_and_no_secret() -> None:
    from worker.domain.secrets import Secret
    from worker.servicebus.config import RunConfig

    cfg = RunConfig(
        servicebus_connection_string=Secret(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET"
        ),
        request_queue="q",
        reply_queue="r",
        geocatalog_url="https://gc.example",
        geocatalog_token=Secret("BEARER-SECRET"),
        sas_subscription_key=Secret("SUBKEY-SECRET"),
        static_sas=("acct/ctr=sv=2024&sig=SIGSECRET",),
        sign_hosts=("*.blob.core.windows.net",),
    )
    summary = cfg.summary()
    text = repr(summary)
    assert not [s for s in ("TOPSECRET", "BEARER-SECRET", "SUBKEY-SECRET", "SIGSECRET") if s in text]
    assert summary["servicebus_endpoint"] == "sb://ns.example/"
    assert summary["geocatalog_token"] == "set" and summary["sas_subscription_key"] == "set"
    assert summary["static_sas"] == ["acct/ctr"] and summary["sign_hosts"] == ["*.blob.core.windows.net"]
    assert summary["concurrency"] == 64 and summary["request_queue"] == "q"


# ---- configuration faults -------------------------------------------------------------------------------------


def test_a_configuration_fault_opens_the_breaker_at_once_and_a_passing_probe_clears_it() -> None:
    now = [0.0]
    heard: list[str | None] = []
    b = CircuitBreaker(threshold=5, open_seconds=1.0, clock=lambda: now[0], on_fault=lambda c, _d: heard.append(c))
    b.hold("geocatalog_forbidden", "403")
    assert (b.state, b.fault, b.allowance(8)) == (BreakerState.OPEN, "geocatalog_forbidden", 0)
    b.hold("geocatalog_forbidden", "403 again")  # another held request: no new report
    now[0] = 1.0
    assert b.allowance(8) == 1  # half-open: one held request is the probe
    b.hold("geocatalog_forbidden", "403")  # the probe met the fault: open for twice as long
    now[0] = 2.5
    assert b.allowance(8) == 0
    now[0] = 3.0
    assert b.allowance(8) == 1
    b.record_success()
    assert (b.state, b.fault, b.allowance(8)) == (BreakerState.CLOSED, None, 8)
    assert heard == ["geocatalog_forbidden", None]


def test_a_self_probed_fault_lets_no_request_through_until_cleared() -> None:
    now = [0.0]
    b = CircuitBreaker(open_seconds=1.0, clock=lambda: now[0])
    b.hold("geocatalog_endpoint", "refused", probe_with_requests=False)
    now[0] = 100.0
    assert (b.state, b.allowance(4)) == (BreakerState.OPEN, 0)
    b.record_success()
    assert b.allowance(4) == 4


def test_hold_outcome_maps_to_a_hold_disposition_that_says_nothing_to_the_breaker() -> None:
    d = Disposition.from_outcome(Outcome(None, Settle.HOLD, "geocatalog_forbidden", "403"))
    assert (d.action, d.reason, d.service_ok, d.result) == (Settle.HOLD, "geocatalog_forbidden", None, None)


def test_config_faults_report_readiness_gauge_and_one_log_line_per_change() -> None:
    from structlog.testing import capture_logs

    from worker.observability.health import HealthState
    from worker.observability.metrics import Metrics
    from worker.servicebus.faults import ConfigFaults

    health, metrics = HealthState(), Metrics()
    health.set_connected("r", True)
    faults = ConfigFaults(health, metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("gcw_config_fault", {"cause": "servicebus_forbidden"})

    with capture_logs() as logs:
        faults.report("schedule", "servicebus_forbidden", "no Send on requests")
        faults.report("schedule", "servicebus_forbidden", "no Send on requests")
        ready, body = health.readiness()
        assert not ready and body["failed"] == {
            "schedule": {"cause": "servicebus_forbidden", "detail": "no Send on requests"}
        }
        assert gauge() == 1
        faults.clear("schedule")
        faults.clear("schedule")
    assert health.readiness()[0] and gauge() == 0
    assert [e["event"] for e in logs] == ["configuration_fault", "configuration_fault_cleared"]


# ---- lock renewal (owner-thread side) ---------------------------------------------------------------------------
class RenewingReceiver:
    def __init__(self) -> None:
        self.renewed: list[object] = []

    def renew_message_lock(self, message: object) -> dt.datetime:
        self.renewed.append(message)
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)


def test_lock_renewal_says_when_it_next_has_something_to_do() -> None:
    receiver, metrics = RenewingReceiver(), Metrics()
    fresh, due, capped = rec_for(GOOD), rec_for(GOOD), rec_for(GOOD)
    now = fresh.received_mono
    fresh.message, due.message, capped.message = "fresh", "due", "capped"
    due.lock_expires_mono = now + 10  # past half of its 30 s
    capped.received_mono, capped.lock_expires_mono = now - 100, now + 5  # held beyond the cap: not renewed
    lost, next_due = renew_message_locks(receiver, [fresh, due, capped], now, 60.0, metrics)
    assert lost == [] and receiver.renewed == ["due"] and due.renewals == 1
    # the next scan is due when the fresh lock reaches half its duration, or the capped one expires
    assert next_due == pytest.approx(min(fresh.lock_expires_mono - 15, due.lock_expires_mono - 15, now + 5))
    assert next_due == pytest.approx(now + 5)
    lost, _ = renew_message_locks(receiver, [capped], now + 5, 60.0, metrics)
    assert [r for r, _ in lost] == [capped]
    assert renew_message_locks(receiver, [], now, 60.0, metrics) == ([], float("inf"))


# ---- completions in one request ------------------------------------------------------------------------------
class _OneByOne:
    """A receiver without the SDK's update-disposition method (``_settle_message_via_mgmt_link``)."""

    def __init__(self) -> None:
        self.completed: list[str] = []

    def complete_message(self, message: SimpleNamespace) -> None:
        self.completed.append(message.lock_token)


class _LockLostTogether(_OneByOne):
    def _settle_message_via_mgmt_link(self, settlement: str, lock_tokens: list[str]) -> None:
        from azure.servicebus.exceptions import MessageLockLostError

        raise MessageLockLostError(message="The lock supplied is invalid.")


@pytest.mark.parametrize(("receiver", "counted"), [(_OneByOne, 3), (_LockLostTogether, 0)])
def test_completions_not_confirmed_together_are_settled_one_by_one_and_repeated_failures_stop_the_attempts(
    receiver: type[_OneByOne], counted: int
) -> None:
    from structlog.testing import capture_logs

    from worker.servicebus.owner import MAX_TOGETHER_FAILURES

    owner = _owner(ConsumerSettings(reply_queue="replies", request_queue="requests", settle_together=True), capacity=8)
    fake = owner._link.receiver = receiver()
    now = time.monotonic()
    with capture_logs() as logs:
        for turn in range(MAX_TOGETHER_FAILURES + 1):
            recs = [
                InFlight(
                    message=SimpleNamespace(lock_token=f"m{turn}-{i}"),
                    meta=MessageMeta(f"m{turn}-{i}", None, None, None, None, 1, None),
                    body=b"",
                    received_at=dt.datetime.now(dt.UTC),
                    received_mono=now,
                    lock_duration=30.0,
                    lock_expires_mono=now + 30.0,
                )
                for i in range(2)
            ]
            owner._inflight.update((r.key, r) for r in recs)
            owner._settle_all([(r, Disposition(action=Settle.COMPLETE)) for r in recs])
    assert fake.completed == [f"m{t}-{i}" for t in range(MAX_TOGETHER_FAILURES + 1) for i in range(2)]
    assert owner.in_flight == 0
    assert sum(e["event"] == "request_completed" for e in logs) == 2 * (MAX_TOGETHER_FAILURES + 1)
    assert owner._together_failures == counted  # a lost lock is an everyday answer: it does not count
    assert sum(e["event"] == "settle_together_disabled" for e in logs) == (1 if counted else 0)
