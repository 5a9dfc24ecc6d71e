"""Pure parts of dead-letter recovery: durations, filters, records and their NDJSON form, grouping,
replay messages, pacing, replay targets, export files. No network."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.recovery.entity import Entity, TargetError, resolve_target
from worker.recovery.export import ExportWriter, read_records
from worker.recovery.records import DeadLetterRecord, RecordError
from worker.recovery.replay import Pacer, ReplayRefused, build_message, replay_message_id
from worker.recovery.selection import Filters, SelectionError, parse_duration, parse_when
from worker.recovery.summary import render_summary, render_table, shorten, summarize, wrap_cell

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rec(seq: int, **kw) -> DeadLetterRecord:
    body = kw.pop("body", None)
    if body is None:
        body = json.dumps({"version": "1", "action": kw.pop("action", "ingest"), "collection": kw.pop("coll", "c1")})
    kw.setdefault("message_id", f"m{seq}")
    kw.setdefault("enqueued_time", NOW - timedelta(hours=seq))
    kw.setdefault("dead_letter_reason", "IngestFailed")
    return DeadLetterRecord(sequence_number=seq, body=body.encode() if isinstance(body, str) else body, **kw)


# ---- durations and timestamps --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 7 * 86400), ("1w", 7 * 86400), ("1d12h", 129600), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-2h", "2h-", "two hours"])
def test_parse_duration_rejects(text):
    with pytest.raises(SelectionError, match="not a duration"):
        parse_duration(text)


def test_parse_when_duration_and_iso():
    assert parse_when("2h", now=NOW, option="--older-than") == NOW - timedelta(hours=2)
    assert parse_when("2026-02-01T00:00:00Z", now=NOW, option="--x") == datetime(2026, 2, 1, tzinfo=UTC)
    naive = parse_when("2026-02-01T00:00:00", now=NOW, option="--x")
    assert naive.tzinfo is not None and naive == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(SelectionError, match="--newer-than 'yesterday'"):
        parse_when("yesterday", now=NOW, option="--newer-than")


# ---- filters -------------------------------------------------------------------------------------------
def test_filters_each_condition():
    records = [
        rec(1, coll="a", dead_letter_reason="IngestFailed"),
        rec(
            2,
            coll="b",
            dead_letter_reason="InvalidRequest",
            action="delete",
            dead_letter_error_description="x AuthError",
        ),
        rec(3, coll="a", dead_letter_reason="MaxDeliveryCountExceeded"),
        rec(5, coll="c", application_properties={"gcw-original-message-id": "orig-5"}),
    ]

    def pick(**kw):
        f = Filters.from_options(now=NOW, **kw)
        return [r.sequence_number for r in records if f.matches(r)]

    assert pick() == [1, 2, 3, 5]
    assert pick(reasons=["InvalidRequest", "MaxDeliveryCountExceeded"]) == [2, 3]
    assert pick(collections=["a"]) == [1, 3]
    assert pick(actions=["delete"]) == [2]
    assert pick(message_ids=["m3", "orig-5"]) == [3, 5]
    assert pick(older_than="150m") == [3, 5]  # enqueued 3h and 5h ago
    assert pick(newer_than="150m") == [1, 2]
    assert pick(newer_than="4h", older_than="90m") == [2, 3]
    assert pick(collections=["a"], older_than="2h") == [3]
    assert pick(descriptions=["AUTHERROR", "nothing"]) == [2]


def test_filters_contradictory_window_is_an_error():
    with pytest.raises(SelectionError, match=r"--newer-than .* must be before --older-than"):
        Filters.from_options(newer_than="1h", older_than="2h", now=NOW)


def test_filters_message_without_enqueued_time_never_matches_a_time_filter():
    f = Filters.from_options(older_than="1h", now=NOW)
    assert not f.matches(rec(1, enqueued_time=None))


# ---- records: JSON round trip keeps everything replay needs ------------------------------------------------
def full_record() -> DeadLetterRecord:
    return rec(
        42,
        body=b"\x00\xffnot json",
        correlation_id="corr",
        reply_to="results",
        reply_to_session_id="rs",
        session_id="s1",
        partition_key="s1",
        content_type="application/json",
        subject="req",
        to="somewhere",
        time_to_live=timedelta(seconds=3600),
        delivery_count=10,
        dead_letter_error_description="boom",
        dead_letter_source="requests",
        application_properties={
            "i": 7,
            "f": 1.5,
            "b": True,
            "s": "text",
            "n": None,
            "raw": b"\xff\x00",
            "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "looks-tagged": "$bytes",
        },
        entity="requests",
    )


def test_record_json_round_trip_is_lossless():
    record = full_record()
    line = json.dumps(record.to_dict())
    again = DeadLetterRecord.from_dict(json.loads(line))
    assert again == record
    assert again.application_properties["raw"] == b"\xff\x00"
    assert isinstance(again.application_properties["u"], uuid.UUID)
    assert again.to_dict()["body"] is None  # binary body: no text view, base64 only


@given(
    body=st.binary(max_size=200),
    props=st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.binary(max_size=20), st.uuids()),
        max_size=6,
    ),
)
def test_record_round_trip_property(body, props):
    record = DeadLetterRecord(sequence_number=1, message_id="m", body=body, application_properties=props)
    assert DeadLetterRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("body_base64"), "'body_base64' is missing"),
        (lambda d: d.update(body_base64="***"), "'body_base64' is not valid base64"),
        (lambda d: d.update(format="other/9"), "field 'format' must be"),
        (lambda d: d.update(sequence_number="x"), "'sequence_number' must be an integer"),
        (lambda d: d.update(enqueued_time="noon"), "'enqueued_time' is not an ISO-8601"),
        (lambda d: d["application_properties"].update(x={"$what": 1}), r"application_properties\['x'\]: unknown tag"),
    ],
)
def test_record_from_dict_errors_name_the_field(mutate, match):
    data = full_record().to_dict()
    mutate(data)
    with pytest.raises(RecordError, match=match):
        DeadLetterRecord.from_dict(data, where="f.ndjson line 3")


def test_original_message_id_prefers_replay_then_runtime_request_id():
    assert rec(1).original_message_id == "m1"
    assert rec(1, application_properties={"gcw-request-id": "req"}).original_message_id == "req"
    both = {"gcw-request-id": "req", "gcw-original-message-id": "first"}
    assert rec(1, application_properties=both).original_message_id == "first"


# ---- summary -------------------------------------------------------------------------------------------
def test_summary_groups_counts_and_times():
    records = [
        rec(1, coll="a", dead_letter_reason="IngestFailed", dead_letter_error_description="x"),
        rec(2, coll="a", dead_letter_reason="IngestFailed", dead_letter_error_description="x"),
        rec(3, coll="b", dead_letter_reason="IngestFailed", application_properties={"gcw-replay-count": 2}),
        rec(4, coll="a", dead_letter_reason="InvalidRequest", action="delete"),
        rec(5, body=b"\x00not json", dead_letter_reason=None),
    ]
    s = summarize(records, entity="requests").to_dict()
    assert s["total"] == 5
    by_reason = {g["reason"]: g for g in s["by_reason"]}
    assert by_reason["IngestFailed"]["count"] == 3
    assert by_reason["IngestFailed"]["first_seen"] == (NOW - timedelta(hours=3)).isoformat()
    assert by_reason["IngestFailed"]["last_seen"] == (NOW - timedelta(hours=1)).isoformat()
    assert by_reason["IngestFailed"]["max_replay_count"] == 2
    assert by_reason["IngestFailed"]["top_description"] == "x"
    assert by_reason["-"]["count"] == 1
    assert {g["collection"]: g["count"] for g in s["by_collection"]} == {"a": 3, "b": 1, "-": 1}
    assert {g["action"]: g["count"] for g in s["by_action"]} == {"ingest": 3, "delete": 1, "-": 1}
    groups = {(g["reason"], g["collection"], g["action"]): g["count"] for g in s["groups"]}
    assert groups[("IngestFailed", "a", "ingest")] == 2
    assert s["by_reason"][0]["reason"] == "IngestFailed"  # largest group first
    table = render_summary(summarize(records, entity="requests"))
    assert "5 message(s)" in table and "IngestFailed" in table


# ---- replay messages -----------------------------------------------------------------------------------
def test_build_message_keeps_properties_and_sets_replay_fields():
    record = full_record()
    record = DeadLetterRecord(
        **{
            **record.__dict__,
            "body": b'{"a":1}',
            "application_properties": {
                **{k: v for k, v in record.application_properties.items() if k != "raw"},
                "DeadLetterReason": "IngestFailed",
                "DeadLetterErrorDescription": "boom",
                "gcw-attempt": 5,
                "gcw-request-id": "m0",
                "gcw-replay-count": 1,
            },
        }
    )
    target = resolve_target(Entity(queue="requests"))
    msg = build_message(record, target=target, max_replays=3)
    assert b"".join(msg.body) == b'{"a":1}'
    assert (msg.correlation_id, msg.reply_to, msg.reply_to_session_id) == ("corr", "results", "rs")
    assert (msg.session_id, msg.partition_key, msg.content_type, msg.subject, msg.to) == (
        "s1",
        "s1",
        "application/json",
        "req",
        "somewhere",
    )
    assert msg.time_to_live == timedelta(seconds=3600)
    props = msg.application_properties
    assert props["gcw-original-message-id"] == "m0"  # the runtime's request id of a retry copy
    assert props["gcw-replay-count"] == 2
    assert props["gcw-last-dead-letter-reason"] == "IngestFailed"
    for gone in ("DeadLetterReason", "DeadLetterErrorDescription", "gcw-attempt", "gcw-request-id", "gcw-replay-to"):
        assert gone not in props
    assert props["i"] == 7 and props["s"] == "text"
    assert msg.message_id == replay_message_id(record, 2) != record.message_id


def test_replay_message_id_is_deterministic_and_distinct():
    a, b = rec(1), rec(2)
    assert replay_message_id(a, 1) == replay_message_id(a, 1)
    assert len({replay_message_id(a, 1), replay_message_id(a, 2), replay_message_id(b, 1)}) == 3


def test_build_message_without_correlation_uses_original_id():
    msg = build_message(rec(1), target=resolve_target(Entity(queue="q")), max_replays=3)
    assert msg.correlation_id == "m1"


def test_build_message_refuses_past_max_replays_and_value_bodies():
    target = resolve_target(Entity(queue="q"))
    with pytest.raises(ReplayRefused, match="already replayed 3 time"):
        build_message(rec(1, application_properties={"gcw-replay-count": 3}), target=target, max_replays=3)
    with pytest.raises(ReplayRefused, match="value body"):
        build_message(rec(1, body_type="value"), target=target, max_replays=3)
    with pytest.raises(ReplayRefused, match="property 'raw' is binary"):
        build_message(rec(1, application_properties={"raw": b"\xff"}), target=target, max_replays=3)


def test_build_message_via_topic_tags_the_subscription():
    target = resolve_target(Entity(topic="t", subscription="worker"), via_topic=True)
    msg = build_message(rec(1, application_properties={"gcw-replay-to": "old"}), target=target, max_replays=3)
    assert msg.application_properties["gcw-replay-to"] == "worker"
    assert (target.topic, target.queue) == ("t", None)


# ---- targets -------------------------------------------------------------------------------------------
def test_resolve_target_rules():
    assert resolve_target(Entity(queue="q")).queue == "q"
    assert resolve_target(Entity(queue="q"), replay_queue="r").queue == "r"
    assert resolve_target(Entity(topic="t", subscription="s"), replay_queue="r").queue == "r"
    with pytest.raises(TargetError, match="every subscription of topic 't'"):
        resolve_target(Entity(topic="t", subscription="s"))
    with pytest.raises(TargetError, match="only applies to a topic subscription"):
        resolve_target(Entity(queue="q"), via_topic=True)
    with pytest.raises(TargetError, match="not both"):
        resolve_target(Entity(topic="t", subscription="s"), replay_queue="r", via_topic=True)
    with pytest.raises(ValueError, match="a queue, or a topic with a subscription"):
        Entity(queue="q", topic="t", subscription="s")


# ---- pacing ------------------------------------------------------------------------------------------
def test_pacer_spaces_calls():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert slept == pytest.approx([0.25] * 4)
    Pacer(None, clock=lambda: now[0], sleep=sleep).wait()
    assert len(slept) == 4


# ---- export files --------------------------------------------------------------------------------------
def test_export_file_round_trip_and_no_overwrite(tmp_path):
    path = tmp_path / "out.ndjson"
    records = [full_record(), rec(2), rec(3)]
    with ExportWriter(path) as writer:
        for r in records:
            writer.write(r)
        writer.sync()
    assert writer.count == 3
    assert list(read_records(path)) == records
    with pytest.raises(RecordError, match="already exists"), ExportWriter(path):
        pass
    assert list(read_records(path)) == records  # untouched


def test_read_records_names_file_and_line(tmp_path):
    path = tmp_path / "bad.ndjson"
    path.write_text(json.dumps(rec(1).to_dict()) + "\n\n{not json\n")
    reader = read_records(path)
    assert next(reader).sequence_number == 1
    with pytest.raises(RecordError, match=r"bad.ndjson line 3: not JSON"):
        next(reader)
    with pytest.raises(RecordError, match="cannot read"):
        list(read_records(tmp_path / "missing.ndjson"))


# ---- error codes and the list table ----------------------------------------------------------------------
def _processor_description(what: str) -> str:
    """A description as worker.processing.processor words it (its ``_describe``)."""
    from types import SimpleNamespace

    from worker.processing.processor import _describe

    request = SimpleNamespace(action="ingest", request_id="req-1", collection="c1")
    return _describe(request, what, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("description", "code"),
    [
        (
            _processor_description("all 1 items failed: x-1: CollectionDoesNotExist: POST ...: 404"),
            "CollectionDoesNotExist",
        ),
        (
            _processor_description("2 of 3 items failed: a: ItemInvalid: bad; b: Conflict: exists"),
            "ItemInvalid, Conflict",
        ),
        (_processor_description("all 2 items failed: a: X: m; b: X: m"), "X"),
        (_processor_description("OperationFailed: the operation failed"), "OperationFailed"),
        (_processor_description("invalid request: NotAnItem: blob: must be a JSON object"), "NotAnItem"),
        ("invalid request (attempt 1): InvalidEvent: data.url: required", "InvalidEvent"),
        ("processing raised RuntimeError: boom (attempt 1); traceback: ...", "RuntimeError"),
        ("Message could not be consumed after 10 delivery attempts.", None),  # Service Bus's own
        ("failed a1", None),
        (None, None),
    ],
)
def test_the_error_code_is_read_from_the_workers_descriptions(description, code) -> None:
    assert rec(1, dead_letter_error_description=description).error_code == code
    assert rec(1, dead_letter_error_description=description).to_dict()["error_code"] == code


def test_descriptions_wrap_and_a_cut_is_marked() -> None:
    text = "word " * 40  # 200 characters
    cell = wrap_cell(text, 30, 2)
    lines = cell.split("\n")
    assert len(lines) == 2 and all(len(line) <= 30 for line in lines)
    assert lines[-1].endswith("chars)") and "… (+" in lines[-1]
    assert "…" not in wrap_cell(text, 30, None) and len(wrap_cell(text, 30, None).split("\n")) == 7
    assert shorten("alpha beta gamma delta", 14) == "alpha beta …"  # at a word, with an ellipsis
    assert shorten("short", 14) == "short"
    table = render_table(["A", "B", "C"], [["1", "x\ny", "z"], ["22", "w", "v"]]).splitlines()
    assert table == ["A   B  C", "1   x  z", "    y", "22  w  v"]


def test_summary_counts_error_codes_per_reason() -> None:
    records = [
        rec(1, dead_letter_error_description=_processor_description("all 1 items failed: a: Conflict: x")),
        rec(2, dead_letter_error_description=_processor_description("all 1 items failed: b: Conflict: y")),
        rec(3, dead_letter_error_description="hand-written"),
    ]
    summary = summarize(records, entity="q")
    assert summary.to_dict()["by_reason"][0]["error_codes"] == {"Conflict": 2, "-": 1}
    assert "Conflict x2, - x1" in render_summary(summary)
