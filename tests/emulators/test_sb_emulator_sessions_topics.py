"""Sessions, topics/subscriptions and the async client against the emulator, with the real SDK."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.exceptions import (
    OperationTimeoutError,
    ServiceBusAuthenticationError,
    ServiceBusError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)
from gcw_emulators.servicebus import QueueConfig, SubscriptionConfig, TopicConfig

from tests.emulators.test_sb_emulator_sdk import assert_entity_missing

pytestmark = pytest.mark.timeout(60)


def client(emu) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0)


def receive(receiver, count: int, wait: float = 5.0):
    out = []
    deadline = time.monotonic() + wait
    while len(out) < count and time.monotonic() < deadline:
        out += receiver.receive_messages(
            max_message_count=count - len(out), max_wait_time=max(0.2, deadline - time.monotonic())
        )
    return out


@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(
        queues=[QueueConfig("sq", lock_duration=3.0, requires_session=True), QueueConfig("plain", lock_duration=3.0)],
        topics=[
            TopicConfig(
                "events",
                subscriptions=[
                    SubscriptionConfig("a", lock_duration=3.0),
                    SubscriptionConfig("b", lock_duration=3.0, max_delivery_count=1),
                ],
            )
        ],
    )


def test_session_receiver_gets_only_its_session_in_order_with_state(emu):
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages([ServiceBusMessage(f"{sid}-{i}", session_id=sid) for i in range(3) for sid in "xy"])
        with c.get_queue_receiver("sq", session_id="y") as r:
            got = receive(r, 3)
            assert [str(m) for m in got] == ["y-0", "y-1", "y-2"]
            assert all(m.session_id == "y" for m in got)
            r.session.set_state(b"checkpoint-2")
            assert r.session.get_state() == b"checkpoint-2"
            before = r.session.locked_until_utc
            time.sleep(0.2)  # time passes, so that a renewed lock ends later
            r.session.renew_lock()
            assert r.session.locked_until_utc > before
            for m in got:
                r.complete_message(m)
        with c.get_queue_receiver("sq", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2) as r:
            assert r.session.session_id == "x"
            got = receive(r, 3)
            assert [str(m) for m in got] == ["x-0", "x-1", "x-2"]
            for m in got:
                r.complete_message(m)
        with c.get_queue_receiver("sq", session_id="y") as r:
            assert r.session.get_state() == b"checkpoint-2"


def test_empty_session_id_is_a_session_of_its_own(emu):
    """Azure takes "" as a session id (azure-servicebus 7.15 tests/test_sessions.py sends and receives one)."""
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages([ServiceBusMessage("empty", session_id=""), ServiceBusMessage("named", session_id="x")])
        with c.get_queue_receiver("sq", session_id="", max_wait_time=3) as r:
            (m,) = receive(r, 1)
            assert (str(m), m.session_id) == ("empty", "")
            r.session.set_state("s")
            r.complete_message(m)
            assert r.session.get_state() == b"s"
        with c.get_queue_receiver("sq", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=3) as r:
            assert r.session.session_id == "x"


def test_a_session_filter_that_is_not_a_string_is_refused(emu):
    """Session ids are strings: a receiver for session_id=1 fails to attach, as the sdist's
    tests/test_sessions.py (test_session_by_session_client_conn_str_receive_handler_peeklock) expects."""
    with client(emu) as c:
        with pytest.raises(ServiceBusError, match="must be a string"), c.get_queue_receiver("sq", session_id=1):
            pass
        with c.get_queue_receiver("sq", session_id="1", max_wait_time=3) as r:
            assert r.session.session_id == "1"


def test_list_sessions_honours_its_last_updated_time_filter(emu):
    """get-message-sessions: without a time, the sessions with messages; with one, those whose state was set
    after it (the SDK's list_queue_sessions(state_updated_after=...), azure-servicebus 7.15 _session_browser.py)."""
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages([ServiceBusMessage("1", session_id="old"), ServiceBusMessage("2", session_id="new")])
        with c.get_queue_receiver("sq", session_id="old", max_wait_time=3) as r:
            r.session.set_state("old-state")
        time.sleep(0.05)  # the filter is a point in time: let the clock pass the first update
        cutoff = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        with c.get_queue_receiver("sq", session_id="new", max_wait_time=3) as r:
            r.session.set_state("new-state")
        assert sorted(c.list_queue_sessions("sq")) == ["new", "old"]
        assert list(c.list_queue_sessions("sq", state_updated_after=cutoff)) == ["new"]
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        assert list(c.list_queue_sessions("sq", state_updated_after=later)) == []


def test_locked_session_cannot_be_taken_by_a_second_receiver(emu):
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages(ServiceBusMessage("m", session_id="s1"))
        with c.get_queue_receiver("sq", session_id="s1") as r1:
            receive(r1, 1)
            with pytest.raises(SessionCannotBeLockedError), c.get_queue_receiver("sq", session_id="s1") as r2:
                r2.receive_messages(max_wait_time=1)


def test_next_available_session_times_out_when_none(emu):
    with client(emu) as c:
        started = time.monotonic()
        with (
            pytest.raises(OperationTimeoutError),
            c.get_queue_receiver("sq", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1) as r,
        ):
            r.receive_messages(max_wait_time=1)
        assert time.monotonic() - started < 20


def test_closing_a_session_receiver_returns_unsettled_messages(emu):
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages(ServiceBusMessage("again", session_id="z"))
        with c.get_queue_receiver("sq", session_id="z") as r:
            (m,) = receive(r, 1)
            assert m.delivery_count == 0
        with c.get_queue_receiver("sq", session_id="z") as r:
            (m,) = receive(r, 1)
            assert str(m) == "again" and m.delivery_count == 1
            r.complete_message(m)


def test_session_lock_expiry_is_reported_and_auto_lock_renewer_prevents_it(emu):
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages(
                [ServiceBusMessage("kept", session_id="renewed"), ServiceBusMessage("lost", session_id="idle")]
            )
        with c.get_queue_receiver("sq", session_id="renewed") as r:
            renewer = AutoLockRenewer(max_lock_renewal_duration=20)
            renewer.register(r, r.session)
            time.sleep(4)  # past the 3 s session lock
            (m,) = receive(r, 1)
            r.complete_message(m)
            renewer.close()
        with c.get_queue_receiver("sq", session_id="idle") as r:
            time.sleep(3.5)  # past the 3 s session lock, unrenewed
            with pytest.raises(SessionLockLostError):
                r.receive_messages(max_message_count=1, max_wait_time=2)
        with c.get_queue_receiver("sq", session_id="idle") as r:  # the session is free again
            (m,) = receive(r, 1)
            assert str(m) == "lost"
            r.complete_message(m)


def test_a_receive_waiting_on_a_drained_session_keeps_the_session_lock(emu):
    """Azure over AMQP: a session receiver whose credit outlasts the session's messages keeps the session lock while
    it waits (Azure/azure-service-bus#694) and gets no session-lock-lost detach (Azure/azure-uamqp-python#183), so
    an iterator waiting longer than the lock duration ends on its own wait (azure-servicebus's
    test_session_by_queue_client_conn_str_receive_handler_receiveanddelete, sync and async)."""
    with client(emu) as c:
        with c.get_queue_sender("sq") as s:
            s.send_messages([ServiceBusMessage(f"d{i}", session_id="drained") for i in range(2)])
        mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE
        with c.get_queue_receiver("sq", session_id="drained", receive_mode=mode, max_wait_time=4) as r:
            assert [str(m) for m in r] == ["d0", "d1"]  # the loop ends 4 s after d1, past the 3 s session lock
            with pytest.raises(SessionCannotBeLockedError), c.get_queue_receiver("sq", session_id="drained") as other:
                other.receive_messages(max_wait_time=1)
        with c.get_queue_receiver("sq", session_id="drained", max_wait_time=1) as r:  # closing released it
            assert list(r) == []


def test_topic_fans_out_to_every_subscription(emu):
    with client(emu) as c:
        with c.get_topic_sender("events") as s:
            s.send_messages([ServiceBusMessage("e1", message_id="1"), ServiceBusMessage("e2", message_id="2")])
        for sub in ("a", "b"):
            with c.get_subscription_receiver("events", sub) as r:
                got = receive(r, 2)
                assert [m.message_id for m in got] == ["1", "2"]
                if sub == "a":
                    for m in got:
                        r.complete_message(m)
                else:
                    for m in got:
                        r.abandon_message(m)  # max_delivery_count=1 → dead-lettered
        with c.get_subscription_receiver("events", "b", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
            got = receive(d, 2)
            assert [m.dead_letter_reason for m in got] == ["MaxDeliveryCountExceeded"] * 2
            for m in got:
                d.complete_message(m)
    stats = emu.stats()["entities"]
    assert stats["events/Subscriptions/a"]["completed"] == 2 and stats["events"]["sent"] == 2
    assert stats["events/Subscriptions/b"]["dead_letter"] == 0


def test_correlation_filter_subscription_gets_only_matching_messages(sb_emulator):
    from gcw_emulators.servicebus.config import CorrelationFilter

    emu = sb_emulator(
        topics=[
            TopicConfig(
                "results",
                subscriptions=[
                    SubscriptionConfig("failures", filters=(CorrelationFilter(properties=(("status", "failed"),)),)),
                    SubscriptionConfig("tenant-a", filters=(CorrelationFilter(subject="ingest", correlation_id="a"),)),
                    SubscriptionConfig("everything"),
                ],
            )
        ]
    )
    with client(emu) as c:
        with c.get_topic_sender("results") as s:
            s.send_messages(
                [
                    ServiceBusMessage(
                        "1", subject="ingest", correlation_id="a", application_properties={"status": "ok"}
                    ),
                    ServiceBusMessage(
                        "2", subject="ingest", correlation_id="b", application_properties={"status": "failed"}
                    ),
                    ServiceBusMessage("3", subject="delete", correlation_id="a"),
                ]
            )
        for sub, expected in (("failures", ["2"]), ("tenant-a", ["1"]), ("everything", ["1", "2", "3"])):
            with c.get_subscription_receiver("results", sub) as r:
                got = receive(r, len(expected), wait=3)
                assert [str(m) for m in got] == expected, sub
                assert r.receive_messages(max_wait_time=0.3) == []
                for m in got:
                    r.complete_message(m)


def test_unknown_subscription_is_not_found(emu):
    """The put-token for a missing subscription is a 404, as Azure answers it (see test_sb_emulator_sdk.py)."""
    with (
        client(emu) as c,
        pytest.raises(ServiceBusAuthenticationError) as raised,
        c.get_subscription_receiver("events", "nope") as r,
    ):
        r.receive_messages(max_wait_time=1)
    assert_entity_missing(raised)


def test_async_client_send_receive_complete_and_dead_letter(emu):
    async def scenario() -> list[str]:
        async with AsyncServiceBusClient.from_connection_string(emu.connection_string, retry_total=0) as c:
            async with c.get_queue_sender("plain") as s:
                await s.send_messages([ServiceBusMessage("a1"), ServiceBusMessage("a2")])
            async with c.get_queue_receiver("plain") as r:
                got = []
                while len(got) < 2:
                    got += await r.receive_messages(max_message_count=2 - len(got), max_wait_time=3)
                await r.complete_message(got[0])
                await r.dead_letter_message(got[1], reason="R", error_description="D")
                await r.renew_message_lock(got[0]) if False else None
                return [str(m) for m in got]

    assert asyncio.run(scenario()) == ["a1", "a2"]
    counts = emu.stats()["entities"]["plain"]
    assert counts["completed"] == 1 and counts["dead_letter"] == 1
