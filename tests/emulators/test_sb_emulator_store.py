"""Pure-logic tests of the emulator's broker state (no sockets): an injected clock drives every expiry."""

from __future__ import annotations

import json

import pytest
from gcw_emulators.servicebus.config import (
    ConfigError,
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
    parse_config,
    parse_duration,
)
from gcw_emulators.servicebus.store import (
    EntityNotFound,
    Incoming,
    LockLost,
    MessageNotFound,
    MessageState,
    NotAllowed,
    SessionCannotBeLocked,
    SessionLockLost,
    Store,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    s = Store(clock=clock)
    s.add_queue(QueueConfig("q", lock_duration=10, max_delivery_count=2))
    s.add_queue(QueueConfig("sq", lock_duration=10, requires_session=True))
    s.add_queue(QueueConfig("ttl", default_ttl=5, dead_letter_on_expiration=True))
    s.add_queue(QueueConfig("dup", requires_duplicate_detection=True, duplicate_detection_window=60))
    s.add_topic(TopicConfig("t", subscriptions=[SubscriptionConfig("a"), SubscriptionConfig("b")]))
    return s


def msg(body: str = "x", **kw) -> Incoming:
    return Incoming(payload=body, raw=body.encode(), **kw)


def test_sequence_numbers_and_fifo(store: Store):
    assert store.enqueue("q", [msg("a"), msg("b")]) == [1, 2]
    first = store.next_message("q", peek_lock=True)
    second = store.next_message("q", peek_lock=True)
    assert (first.payload, second.payload) == ("a", "b")
    assert store.next_message("q", peek_lock=True) is None


def test_lock_expiry_increments_count_and_max_delivery_dead_letters(store: Store, clock: Clock):
    store.enqueue("q", [msg()])
    m = store.next_message("q", peek_lock=True)
    token = m.lock_token
    clock.t += 10.1
    assert "q" in store.tick().changed
    with pytest.raises(LockLost):
        store.complete(token)
    again = store.next_message("q", peek_lock=True)
    assert again.delivery_count == 1
    store.abandon(again.lock_token)          # count 2 == max → dead-lettered
    dlq = store.next_message("q/$DeadLetterQueue", peek_lock=True)
    assert dlq.dead_letter_reason == "MaxDeliveryCountExceeded" and dlq.dead_letter_source == "q"
    assert store.stats()["entities"]["q"]["dead_letter"] == 1


def test_renew_extends_lock_and_release_keeps_count(store: Store, clock: Clock):
    store.enqueue("q", [msg()])
    m = store.next_message("q", peek_lock=True)
    clock.t += 8
    until = store.renew_lock(m.lock_token)
    assert until == clock.t + 10
    clock.t += 8
    store.tick()
    assert m.state is MessageState.LOCKED
    store.release(m.lock_token)
    again = store.next_message("q", peek_lock=True)
    assert again.delivery_count == 0


def test_settling_an_unknown_token_is_lock_lost(store: Store):
    import uuid

    with pytest.raises(LockLost):
        store.complete(uuid.uuid4())


def test_defer_and_receive_deferred(store: Store):
    store.enqueue("q", [msg("d")])
    m = store.next_message("q", peek_lock=True)
    store.defer(m.lock_token)
    assert store.next_message("q", peek_lock=True) is None
    (again,) = store.receive_deferred("q", [m.seq], peek_lock=True)
    store.abandon(again.lock_token)
    assert again.state is MessageState.DEFERRED          # abandoning a deferred message keeps it deferred
    with pytest.raises(MessageNotFound):
        store.receive_deferred("q", [999], peek_lock=True)


def test_scheduled_messages_appear_when_due_and_can_be_cancelled(store: Store, clock: Clock):
    seqs = store.enqueue("q", [msg("s1", scheduled_at=clock.t + 5), msg("s2", scheduled_at=clock.t + 5)])
    store.cancel_scheduled("q", [seqs[1]])
    assert store.next_message("q", peek_lock=True) is None
    assert [m.state for m in store.peek("q", 1, 10)] == [MessageState.SCHEDULED]
    clock.t += 5
    store.tick()
    assert store.next_message("q", peek_lock=True).payload == "s1"


def test_ttl_expiry_dead_letters_when_configured(store: Store, clock: Clock):
    store.enqueue("ttl", [msg("old"), msg("short", ttl=1)])
    clock.t += 1.5
    store.tick()
    assert store.stats()["entities"]["ttl"]["dead_letter"] == 1
    clock.t += 4
    assert store.next_message("ttl", peek_lock=True) is None   # expired at receive time too
    assert store.stats()["entities"]["ttl"]["dead_letter"] == 2
    reasons = {m.dead_letter_reason for m in store.peek("ttl/$deadletterqueue", 1, 10)}
    assert reasons == {"TTLExpiredException"}


def test_duplicate_detection_window(store: Store, clock: Clock):
    assert store.enqueue("dup", [msg(message_id="a"), msg(message_id="a"), msg(message_id="b")]) == [1, None, 2]
    clock.t += 61
    assert store.enqueue("dup", [msg(message_id="a")]) == [3]


def test_unknown_entities(store: Store):
    for path in ("nope", "q/Subscriptions/x", "t/Subscriptions/zzz", "t"):
        with pytest.raises(EntityNotFound):
            store.resolve(path)
    with pytest.raises(EntityNotFound):
        store.enqueue("nope", [msg()])
    assert store.resolve("T/subscriptions/A/$DeadLetterQueue").path == "t/Subscriptions/a/$DeadLetterQueue"


def test_topic_fan_out(store: Store):
    store.enqueue("t", [msg("e")])
    assert store.next_message("t/Subscriptions/a", peek_lock=False).payload == "e"
    assert store.next_message("t/Subscriptions/b", peek_lock=False).payload == "e"


def test_sessions_exclusive_ordered_and_expiring(store: Store, clock: Clock):
    with pytest.raises(NotAllowed):
        store.enqueue("sq", [msg("no session")])
    store.enqueue("sq", [msg("x1", session_id="x"), msg("y1", session_id="y"), msg("x2", session_id="x")])
    owner_a, owner_b = object(), object()
    assert store.accept_session("sq", None, owner_a) == "x"
    assert store.accept_session("sq", None, owner_b) == "y"
    with pytest.raises(SessionCannotBeLocked):
        store.accept_session("sq", "x", owner_b)
    first = store.next_message("sq", peek_lock=True, session_id="x", owner=owner_a)
    second = store.next_message("sq", peek_lock=True, session_id="x", owner=owner_a)
    assert (first.payload, second.payload) == ("x1", "x2")
    store.set_session_state("sq", "x", b"state")
    clock.t += 11
    lost = store.tick().lost_sessions
    assert {(sid, owner is owner_a) for owner, _, sid in lost} >= {("x", True)}
    with pytest.raises((SessionLockLost, LockLost)):
        store.complete(first.lock_token)
    with pytest.raises(SessionLockLost):
        store.renew_session_lock("sq", "x", owner_a)
    assert store.accept_session("sq", "x", owner_b) == "x"
    again = store.next_message("sq", peek_lock=True, session_id="x", owner=owner_b)
    assert again.payload == "x1" and again.delivery_count == 1
    assert store.get_session_state("sq", "x") == b"state"


def test_a_session_lock_is_held_while_its_owner_waits_on_the_drained_session(store: Store, clock: Clock):
    store.enqueue("sq", [msg("d1", session_id="d"), msg("k1", session_id="k")])
    drained, keeper = object(), object()
    assert store.accept_session("sq", "d", drained) == "d"
    assert store.accept_session("sq", "k", keeper) == "k"
    store.next_message("sq", peek_lock=False, session_id="d", owner=drained)  # "d" is empty now, "k" is not
    clock.t += 11
    lost = store.tick(waiting=lambda owner: True).lost_sessions
    assert [(sid, owner is keeper) for owner, _, sid in lost] == [("k", True)]
    assert store.session_locked_until("sq", "d") == clock.t + 10  # held for another lock duration
    clock.t += 11
    assert [sid for _, _, sid in store.tick(waiting=lambda owner: False).lost_sessions] == ["d"]  # no receive waits


def test_config_json_and_durations():
    doc = {"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
        {"Name": "q", "Properties": {"LockDuration": "PT1M", "MaxDeliveryCount": 3, "RequiresSession": True,
                                     "DefaultMessageTimeToLive": "PT1H", "DeadLetteringOnMessageExpiration": True,
                                     "RequiresDuplicateDetection": True,
                                     "DuplicateDetectionHistoryTimeWindow": "PT20S"}}],
        "Topics": [{"Name": "t", "Properties": {}, "Subscriptions": [
            {"Name": "s", "Properties": {"LockDuration": "00:00:05"}}]}]}]}}
    queues, topics = parse_config(json.loads(json.dumps(doc)))
    q = queues[0]
    assert (q.lock_duration, q.max_delivery_count, q.requires_session, q.default_ttl) == (60, 3, True, 3600)
    assert q.dead_letter_on_expiration and q.requires_duplicate_detection and q.duplicate_detection_window == 20
    assert topics[0].subscriptions[0].lock_duration == 5
    assert parse_duration("P14D", "x") == 14 * 86400
    with pytest.raises(ConfigError, match=r"Queues\[0\]\.Properties\.LockDuration"):
        parse_config({"UserConfig": {"Namespaces": [
            {"Queues": [{"Name": "q", "Properties": {"LockDuration": "soon"}}]}]}})
    with pytest.raises(ConfigError, match="Name is required"):
        parse_config({"UserConfig": {"Namespaces": [{"Queues": [{"Properties": {}}]}]}})
    with pytest.raises(ConfigError, match="lock_duration"):
        QueueConfig("q", lock_duration=0)


def test_correlation_filters_route_topic_messages(clock: Clock):
    from gcw_emulators.servicebus.config import CorrelationFilter

    s = Store(clock=clock)
    s.add_topic(TopicConfig("t", subscriptions=[
        SubscriptionConfig("all"),
        SubscriptionConfig("ingest", filters=(CorrelationFilter(subject="ingest"),
                                              CorrelationFilter(properties=(("priority", "high"),)))),
    ]))

    def attrs(subject=None, **props):
        return {"subject": subject, "properties": props}

    s.enqueue("t", [msg("a", attributes=attrs("ingest")), msg("b", attributes=attrs("delete")),
                    msg("c", attributes=attrs("delete", priority="high")), msg("d")])
    got = []
    while (m := s.next_message("t/Subscriptions/ingest", peek_lock=False)) is not None:
        got.append(m.payload)
    assert got == ["a", "c"]
    assert s.stats()["entities"]["t/Subscriptions/all"]["active"] == 4


def test_config_json_rules():
    doc = {"UserConfig": {"Namespaces": [{"Topics": [{"Name": "t", "Subscriptions": [
        {"Name": "corr", "Rules": [{"Name": "r", "Properties": {"FilterType": "Correlation", "CorrelationFilter": {
            "Label": "ingest", "CorrelationId": "c1", "Properties": {"tenant": "a"}}}}]},
        {"Name": "sqltrue", "Rules": [{"Name": "r", "Properties": {"FilterType": "Sql",
                                                                     "SqlFilter": {"SqlExpression": "1=1"}}}]}]}]}]}}
    _, topics = parse_config(doc)
    corr, sqltrue = topics[0].subscriptions
    assert corr.accepts({"subject": "ingest", "correlation_id": "c1", "properties": {"tenant": "a"}})
    assert not corr.accepts({"subject": "ingest", "correlation_id": "c1", "properties": {"tenant": "b"}})
    assert sqltrue.filters == () and sqltrue.accepts(None)
    bad_sql = {"UserConfig": {"Namespaces": [{"Topics": [{"Name": "t", "Subscriptions": [
        {"Name": "s", "Rules": [{"Name": "r", "Properties": {"FilterType": "Sql",
                                                               "SqlFilter": {"SqlExpression": "x > 1"}}}]}]}]}]}}
    with pytest.raises(ConfigError, match=r"Subscriptions\[0\]\.Rules\[0\]: SQL filters are not supported"):
        parse_config(bad_sql)
    bad_field = {"UserConfig": {"Namespaces": [{"Topics": [{"Name": "t", "Subscriptions": [
        {"Name": "s", "Rules": [{"Name": "r", "Properties": {"FilterType": "Correlation",
                                                               "CorrelationFilter": {"Lable": "x"}}}]}]}]}]}}
    with pytest.raises(ConfigError, match=r"unknown field.*Lable"):
        parse_config(bad_field)
