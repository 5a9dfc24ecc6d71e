"""Dead-letter recovery against the Service Bus emulator with the unmodified azure-servicebus SDK.

Every test seeds a dead-letter queue the way the worker does (receive, then ``dead_letter_message`` with a
reason) and drives ``geocatalog-worker dlq ...`` through click, checking the broker's state afterwards with the
SDK directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from click.testing import CliRunner
from gcw_emulators.servicebus import QueueConfig, SubscriptionConfig, TopicConfig

from tests.support.harness import wait_until
from worker.cli import main

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]


def body(collection: str = "c1", action: str = "ingest", n: int = 0) -> bytes:
    payload: dict[str, Any] = {"version": "1", "action": action, "collection": collection}
    payload["items" if action == "ingest" else "item_ids"] = [{"id": f"i{n}"}] if action == "ingest" else [f"i{n}"]
    return json.dumps(payload).encode()


def dead_letter(
    cs: str, queue: str, messages: Iterable[tuple[ServiceBusMessage, str]], *, session: bool = False
) -> None:
    """Send each message, then receive it and dead-letter it with its reason (as the worker does)."""
    messages = list(messages)
    reasons = {m.message_id: reason for m, reason in messages}
    with ServiceBusClient.from_connection_string(cs) as client:
        with client.get_queue_sender(queue) as sender:
            sender.send_messages([m for m, _ in messages])
        sessions = sorted({m.session_id for m, _ in messages}) if session else [None]
        for sid in sessions:
            pending = {m.message_id for m, _ in messages if not session or m.session_id == sid}
            with client.get_queue_receiver(queue, session_id=sid, max_wait_time=2) as receiver:
                while pending:
                    got = receiver.receive_messages(max_message_count=50, max_wait_time=1)
                    if not got:
                        break
                    for m in got:
                        receiver.dead_letter_message(
                            m, reason=reasons[m.message_id], error_description=f"failed {m.message_id}"
                        )
                        pending.discard(m.message_id)
            assert not pending, f"not dead-lettered: {pending}"


def peek_dlq(cs: str, queue: str) -> list[Any]:
    with (
        ServiceBusClient.from_connection_string(cs) as client,
        client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver,
    ):
        return receiver.peek_messages(max_message_count=1000, sequence_number=1)


def drain(cs: str, queue: str, *, session_id: str | None = None, expect: int | None = None) -> list[Any]:
    """Receive and complete everything in ``queue`` (the worker's side)."""
    out: list[Any] = []
    with (
        ServiceBusClient.from_connection_string(cs) as client,
        client.get_queue_receiver(queue, session_id=session_id, max_wait_time=2) as receiver,
    ):
        while expect is None or len(out) < expect:
            got = receiver.receive_messages(max_message_count=100, max_wait_time=1)
            if not got:
                break
            for m in got:
                receiver.complete_message(m)
            out += got
    return out


def props(m: Any) -> dict[str, Any]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (m.application_properties or {}).items()
    }


def dlq(cs: str, command: str, *args: str, queue: str | None = "requests", exit_code: int | None = 0) -> Any:
    entity = ["--request-queue", queue] if queue else []
    result = CliRunner().invoke(
        main, ["dlq", command, "--servicebus-connection-string", cs, *entity, *args], catch_exceptions=False
    )
    if exit_code is not None:
        assert result.exit_code == exit_code, result.output
    return result


def seq_of(messages: Iterable[Any]) -> list[int]:
    return sorted(m.sequence_number for m in messages)


# --------------------------------------------------------------------------------------------------------
@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(
        queues=[
            QueueConfig("requests", lock_duration=2),
            QueueConfig("replays", lock_duration=2),
            QueueConfig("sessions", lock_duration=10, requires_session=True),
        ],
        topics=[TopicConfig("events", subscriptions=[SubscriptionConfig("worker"), SubscriptionConfig("audit")])],
    )


def seed_mixed(cs: str) -> None:
    msgs = [
        (ServiceBusMessage(body("a", n=1), message_id="a1"), "IngestFailed"),
        (ServiceBusMessage(body("a", n=2), message_id="a2"), "IngestFailed"),
        (ServiceBusMessage(body("b", n=3), message_id="b3"), "IngestFailed"),
        (ServiceBusMessage(body("b", "delete", 4), message_id="b4"), "InvalidRequest"),
        (ServiceBusMessage(body("a", "delete", 5), message_id="a5"), "RetriesExhausted"),
        (ServiceBusMessage(b"\x00 not json", message_id="x6"), "InvalidRequest"),
    ]
    dead_letter(cs, "requests", msgs)


def test_summary_counts(emu):
    cs = emu.connection_string
    seed_mixed(cs)
    summary = json.loads(dlq(cs, "summary", "--json").stdout)
    assert summary["total"] == 6
    assert {g["reason"]: g["count"] for g in summary["by_reason"]} == {
        "IngestFailed": 3,
        "InvalidRequest": 2,
        "RetriesExhausted": 1,
    }
    assert {g["collection"]: g["count"] for g in summary["by_collection"]} == {"a": 3, "b": 2, "-": 1}
    assert {g["action"]: g["count"] for g in summary["by_action"]} == {"ingest": 3, "delete": 2, "-": 1}
    groups = {(g["reason"], g["collection"], g["action"]): g["count"] for g in summary["groups"]}
    assert groups == {
        ("IngestFailed", "a", "ingest"): 2,
        ("IngestFailed", "b", "ingest"): 1,
        ("InvalidRequest", "b", "delete"): 1,
        ("InvalidRequest", "-", "-"): 1,
        ("RetriesExhausted", "a", "delete"): 1,
    }
    for g in summary["by_reason"]:
        assert g["first_seen"] <= g["last_seen"]
    filtered = json.loads(dlq(cs, "summary", "--json", "--collection", "a").stdout)
    assert filtered["total"] == 3
    table = dlq(cs, "summary").output
    assert "6 message(s)" in table and "RetriesExhausted" in table


def test_filters_select_exactly_and_inspection_changes_nothing(emu):
    cs = emu.connection_string
    seed_mixed(cs)
    before = [(m.sequence_number, m.delivery_count) for m in peek_dlq(cs, "requests")]

    def ids(*args: str) -> list[str]:
        out = dlq(cs, "list", "--format", "ndjson", *args).stdout
        return [json.loads(line)["message_id"] for line in out.splitlines() if line.strip()]

    assert ids() == ["a1", "a2", "b3", "b4", "a5", "x6"]
    assert ids("--reason", "InvalidRequest") == ["b4", "x6"]
    assert ids("--reason", "IngestFailed", "--collection", "b") == ["b3"]
    assert ids("--action", "delete") == ["b4", "a5"]
    assert ids("--message-id", "a2", "--message-id", "x6") == ["a2", "x6"]
    assert ids("--limit", "2", "--collection", "b") == ["b3", "b4"]
    assert ids("--description", "FAILED A") == ["a1", "a2", "a5"]
    assert ids("--older-than", "1h") == []
    assert ids("--newer-than", "1h") == ["a1", "a2", "b3", "b4", "a5", "x6"]
    future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
    assert len(ids("--older-than", future)) == 6
    line = json.loads(dlq(cs, "list", "--format", "ndjson", "--message-id", "b4").stdout)
    assert line["dead_letter_reason"] == "InvalidRequest"
    assert line["dead_letter_error_description"] == "failed b4"
    assert line["body"]["item_ids"] == ["i4"] and line["delivery_count"] is not None and line["enqueued_time"]
    shown = json.loads(dlq(cs, "show", "a5").stdout)
    assert shown["message_id"] == "a5" and shown["dead_letter_reason"] == "RetriesExhausted"
    assert "no dead-lettered message" in dlq(cs, "show", "nope", exit_code=1).output
    bad = dlq(cs, "list", "--older-than", "soon", exit_code=2)
    assert "--older-than 'soon'" in bad.output
    # peeking locked nothing and changed nothing
    assert [(m.sequence_number, m.delivery_count) for m in peek_dlq(cs, "requests")] == before
    assert drain(cs, "requests") == []


def test_replay_preserves_properties_and_completes_only_the_selected(emu):
    cs = emu.connection_string
    original = ServiceBusMessage(
        body("a", n=1),
        message_id="req-1",
        correlation_id="corr-1",
        reply_to="results",
        reply_to_session_id="reply-session",
        content_type="application/json",
        subject="ingest-request",
        application_properties={"tenant": "t1", "priority": 5, "ratio": 0.5, "flag": True, "gcw-attempt": 3},
    )
    other = ServiceBusMessage(body("b", n=2), message_id="req-2")
    dead_letter(cs, "requests", [(original, "IngestFailed"), (other, "InvalidRequest")])
    dry = dlq(cs, "replay", "--reason", "IngestFailed", "--dry-run", "--json")
    assert json.loads(dry.stdout)["would_replay"] == 1
    assert len(peek_dlq(cs, "requests")) == 2 and drain(cs, "requests") == []  # dry run changed nothing

    report = json.loads(dlq(cs, "replay", "--reason", "IngestFailed", "--json").stdout)
    assert (report["selected"], report["replayed"], report["failed"], report["not_reached"]) == (1, 1, [], [])
    replayed = drain(cs, "requests")
    assert len(replayed) == 1
    m = replayed[0]
    assert b"".join(m.body) == body("a", n=1)
    assert (m.correlation_id, m.reply_to, m.reply_to_session_id) == ("corr-1", "results", "reply-session")
    assert (m.content_type, m.subject) == ("application/json", "ingest-request")
    assert m.message_id not in (None, "req-1")
    p = props(m)
    assert {k: p[k] for k in ("tenant", "priority", "ratio", "flag")} == {
        "tenant": "t1",
        "priority": 5,
        "ratio": 0.5,
        "flag": True,
    }
    assert p["gcw-original-message-id"] == "req-1" and p["gcw-replay-count"] == 1
    assert p["gcw-last-dead-letter-reason"] == "IngestFailed"
    assert "gcw-attempt" not in p and "DeadLetterReason" not in p
    left = peek_dlq(cs, "requests")
    assert [x.message_id for x in left] == ["req-2"]  # the other one stays


def test_replay_refuses_past_max_replays_and_counts_up(emu):
    cs = emu.connection_string
    msgs = [
        (ServiceBusMessage(body(n=1), message_id="fresh"), "IngestFailed"),
        (
            ServiceBusMessage(body(n=2), message_id="tired", application_properties={"gcw-replay-count": 2}),
            "IngestFailed",
        ),
    ]
    dead_letter(cs, "requests", msgs)
    result = dlq(cs, "replay", "--max-replays", "2")
    assert "refused 1" in result.output and "already replayed 2 time(s)" in result.output
    assert [m.message_id for m in peek_dlq(cs, "requests")] == ["tired"]  # left in the DLQ, reported
    (m,) = drain(cs, "requests")
    assert props(m)["gcw-replay-count"] == 1
    # the replay fails again and comes back: its count keeps going up until the limit refuses it
    dead_letter(
        cs,
        "requests",
        [
            (
                ServiceBusMessage(b"".join(m.body), message_id=m.message_id, application_properties=props(m)),
                "IngestFailed",
            )
        ],
    )
    report = json.loads(dlq(cs, "replay", "--max-replays", "2", "--json").stdout)
    assert report["replayed"] == 1 and len(report["refused"]) == 1
    (again,) = drain(cs, "requests")
    assert props(again)["gcw-replay-count"] == 2 and props(again)["gcw-original-message-id"] == "fresh"


def test_export_purge_replay_from_file_round_trip(emu, tmp_path):
    cs = emu.connection_string
    msgs = [
        (
            ServiceBusMessage(
                body("a", n=i),
                message_id=f"p{i}",
                correlation_id=f"c{i}",
                reply_to="results",
                application_properties={"n": i, "text": f"ünï ✓ {i}"},
            ),
            "IngestFailed" if i % 2 else "RetriesExhausted",
        )
        for i in range(6)
    ]
    dead_letter(cs, "requests", msgs)
    export = tmp_path / "look.ndjson"
    dlq(cs, "export", "--to", str(export), "--reason", "IngestFailed")
    assert [json.loads(x)["message_id"] for x in export.read_text().splitlines()] == ["p1", "p3", "p5"]
    assert len(peek_dlq(cs, "requests")) == 6  # export only peeks

    assert "no filter given" in dlq(cs, "purge", "--yes", exit_code=2).output
    assert "pass --yes" in dlq(cs, "purge", "--reason", "IngestFailed", exit_code=2).output
    assert "would purge 3" in dlq(cs, "purge", "--reason", "IngestFailed", "--dry-run").output
    assert len(peek_dlq(cs, "requests")) == 6

    saved = tmp_path / "purged.ndjson"
    out = json.loads(dlq(cs, "purge", "--all", "--yes", "--to", str(saved), "--json").stdout)
    assert (out["selected"], out["purged"], out["exported"]) == (6, 6, 6)
    assert peek_dlq(cs, "requests") == []
    assert drain(cs, "requests") == []  # purge sends nothing

    report = json.loads(dlq(cs, "replay", "--from", str(saved), "--json").stdout)
    assert report["replayed"] == 6
    replayed = sorted(drain(cs, "requests"), key=lambda m: props(m)["n"])
    assert [props(m)["gcw-original-message-id"] for m in replayed] == [f"p{i}" for i in range(6)]
    assert [m.correlation_id for m in replayed] == [f"c{i}" for i in range(6)]
    assert [b"".join(m.body) for m in replayed] == [body("a", n=i) for i in range(6)]
    assert [props(m)["text"] for m in replayed] == [f"ünï ✓ {i}" for i in range(6)]


def test_session_queue_replay_keeps_session_id(emu):
    cs = emu.connection_string
    msgs = [
        (ServiceBusMessage(body(n=i), message_id=f"s{i}", session_id=f"sess-{i % 2}"), "IngestFailed") for i in range(4)
    ]
    dead_letter(cs, "sessions", msgs, session=True)
    assert len(peek_dlq(cs, "sessions")) == 4  # the DLQ of a session queue is read without a session
    report = json.loads(dlq(cs, "replay", "--json", queue="sessions").stdout)
    assert report["replayed"] == 4
    for sid, expected in (("sess-0", {"s0", "s2"}), ("sess-1", {"s1", "s3"})):
        got = drain(cs, "sessions", session_id=sid, expect=2)
        assert {props(m)["gcw-original-message-id"] for m in got} == expected
        assert {m.session_id for m in got} == {sid}


def test_subscription_replay_never_reaches_other_subscribers(emu):
    cs = emu.connection_string
    with ServiceBusClient.from_connection_string(cs) as client:
        with client.get_topic_sender("events") as sender:
            sender.send_messages([ServiceBusMessage(body(n=i), message_id=f"t{i}") for i in range(3)])
        with client.get_subscription_receiver("events", "worker") as receiver:
            got = []
            while len(got) < 3:
                got += receiver.receive_messages(max_message_count=10, max_wait_time=2)
            for m in got:
                receiver.dead_letter_message(m, reason="IngestFailed", error_description="x")
        with client.get_subscription_receiver("events", "audit") as receiver:  # audit consumed its copies
            seen = 0
            while seen < 3:
                batch = receiver.receive_messages(max_message_count=10, max_wait_time=2)
                for m in batch:
                    receiver.complete_message(m)
                seen += len(batch)
    sub = ["--request-topic", "events", "--request-subscription", "worker"]
    refused = dlq(cs, "replay", *sub, queue=None, exit_code=2)
    assert "every subscription of topic 'events'" in refused.output
    report = json.loads(dlq(cs, "replay", *sub, "--replay-queue", "replays", "--json", queue=None).stdout)
    assert report["replayed"] == 3
    assert {props(m)["gcw-original-message-id"] for m in drain(cs, "replays")} == {"t0", "t1", "t2"}
    with ServiceBusClient.from_connection_string(cs) as client:
        for name in ("worker", "audit"):
            with client.get_subscription_receiver("events", name) as receiver:
                assert receiver.receive_messages(max_message_count=10, max_wait_time=1) == []
            with client.get_subscription_receiver("events", name, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
                assert r.peek_messages(10, sequence_number=1) == []


def test_failed_sends_leave_everything_in_the_dlq(emu):
    cs = emu.connection_string
    msgs = [(ServiceBusMessage(body(n=i), message_id=f"f{i}"), "IngestFailed") for i in range(7)]
    dead_letter(cs, "requests", msgs)
    missing = dlq(cs, "replay", "--replay-queue", "no-such-queue", exit_code=1)
    # Azure's answer to the put-token for a missing queue (a 404: ServiceBusAuthenticationError), with its words
    assert "Status code: 404" in missing.output and "no-such-queue' could not be found" in missing.output
    assert len(peek_dlq(cs, "requests")) == 7
    # a session queue refuses messages without a session id: every send fails
    result = dlq(cs, "replay", "--replay-queue", "sessions", "--json", exit_code=1)
    report = json.loads(result.stdout)
    assert report["replayed"] == 0 and len(report["failed"]) == 5  # stops after 5 failed sends in a row
    assert "5 sends failed in a row" in report["stopped_because"]
    assert len(report["not_reached"]) == 2
    assert [m.message_id for m in peek_dlq(cs, "requests")] == [f"f{i}" for i in range(7)]
    assert drain(cs, "requests") == [] and emu.stats()["entities"]["sessions"]["active"] == 0


@pytest.mark.slow
def test_replay_killed_half_way_loses_nothing(emu):
    cs = emu.connection_string
    ids = [f"k{i:02d}" for i in range(16)]
    dead_letter(
        cs, "requests", [(ServiceBusMessage(body(n=i), message_id=mid), "IngestFailed") for i, mid in enumerate(ids)]
    )
    cmd = [
        sys.executable,
        "-c",
        "from worker.cli import main; main()",
        "dlq",
        "replay",
        "--servicebus-connection-string",
        cs,
        "--request-queue",
        "requests",
        "--rate",
        "4",
        "--batch",
        "8",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    try:
        if not wait_until(lambda: emu.stats()["entities"]["requests"]["active"] >= 4, 60, interval=0.05):
            pytest.fail("the replay never started sending")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    # nothing lost at any moment: each request is in the DLQ, in the request queue, or both
    # the killed process's locks on the dead letters expire (lock_duration=2)
    assert wait_until(lambda: emu.stats()["entities"]["requests"]["dead_letter_locked"] == 0, 10)
    in_dlq = {m.message_id for m in peek_dlq(cs, "requests")}
    assert 0 < len(in_dlq) < len(ids), "the kill should land half-way"
    report = json.loads(dlq(cs, "replay", "--json").stdout)
    assert report["replayed"] == len(in_dlq) and report["failed"] == []
    assert peek_dlq(cs, "requests") == []
    replayed = drain(cs, "requests")
    originals = [props(m)["gcw-original-message-id"] for m in replayed]
    assert set(originals) == set(ids)  # nothing lost
    assert len(originals) - len(set(originals)) <= 1  # at most the one in flight was duplicated


def test_unreachable_broker_is_one_clear_line_without_the_key():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cs = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=SuperSecretKey123=;UseDevelopmentEmulator=true"
    result = dlq(cs, "summary", exit_code=1)
    assert "ServiceBusConnectionError" in result.output
    assert "SuperSecretKey123" not in result.output
    assert "Traceback" not in result.output
