"""The management API over HTTPS, driven by the SDK's own ``ServiceBusAdministrationClient`` (sync and aio):
entities, runtime counts, subscriptions, rules with SQL filters and actions, persistence with ``data_dir``."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.aio.management import ServiceBusAdministrationClient as AsyncAdministrationClient
from azure.servicebus.management import (
    AccessRights,
    ApiVersion,
    AuthorizationRule,
    CorrelationRuleFilter,
    ServiceBusAdministrationClient,
    SqlRuleAction,
    SqlRuleFilter,
    TrueRuleFilter,
)
from gcw_emulators.identity import storage_token
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.access import LISTEN, ROOT_KEY_NAME, ROOT_KEY_VALUE, ROOT_POLICY, AccessPolicy, sas_token
from gcw_emulators.servicebus.management import ManagementApi, iso_duration
from gcw_emulators.servicebus.store import Store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def emu(sb_emulator):
    return sb_emulator(queues=[QueueConfig("configured", lock_duration=5)], management_port=0)


def admin(emu) -> ServiceBusAdministrationClient:
    return ServiceBusAdministrationClient.from_connection_string(
        emu.management_connection_string, connection_verify=str(emu.ca_cert)
    )


def receive_all(receiver, count: int) -> list:
    out: list = []
    deadline = time.monotonic() + 10
    while len(out) < count and time.monotonic() < deadline:
        out += receiver.receive_messages(max_message_count=count - len(out), max_wait_time=1)
    return out


def test_queue_lifecycle_and_runtime_counts(emu):
    with admin(emu) as m:
        assert [q.name for q in m.list_queues()] == ["configured"]
        assert m.get_queue("configured").lock_duration == dt.timedelta(seconds=5)
        m.create_queue(
            "made",
            max_delivery_count=2,
            lock_duration=dt.timedelta(seconds=45),
            user_metadata="kept as sent",
            dead_lettering_on_message_expiration=True,
        )
        made = m.get_queue("made")
        assert (made.max_delivery_count, made.lock_duration, made.user_metadata) == (
            2,
            dt.timedelta(seconds=45),
            "kept as sent",
        )
        assert made.dead_lettering_on_message_expiration is True
        made.max_delivery_count = 4
        m.update_queue(made)
        assert m.get_queue("made").max_delivery_count == 4
        with pytest.raises(ResourceExistsError):
            m.create_queue("made")
        with ServiceBusClient.from_connection_string(emu.connection_string) as c:
            with c.get_queue_sender("made") as s:
                s.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
                s.schedule_messages(ServiceBusMessage("later"), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
            with c.get_queue_receiver("made") as r:
                (first,) = receive_all(r, 1)
                r.dead_letter_message(first, reason="test")
        runtime = m.get_queue_runtime_properties("made")
        assert (
            runtime.active_message_count,
            runtime.dead_letter_message_count,
            runtime.scheduled_message_count,
            runtime.total_message_count,
        ) == (1, 1, 1, 3)
        assert runtime.size_in_bytes > 0
        m.delete_queue("made")
        with pytest.raises(ResourceNotFoundError):
            m.get_queue("made")
        with pytest.raises(ResourceNotFoundError):
            m.delete_queue("made")


def test_entity_created_through_the_api_works_over_amqp_at_once(emu):
    with admin(emu) as m:
        m.create_queue("fresh", requires_session=True)
    with ServiceBusClient.from_connection_string(emu.connection_string) as c:
        with c.get_queue_sender("fresh") as s:
            s.send_messages(ServiceBusMessage("in a session", session_id="s1"))
        with c.get_queue_receiver("fresh", session_id="s1") as r:
            (msg,) = receive_all(r, 1)
            r.complete_message(msg)


def test_sql_filters_actions_and_correlation_rules_route_topic_messages(emu):
    with admin(emu) as m:
        m.create_topic("t")
        m.create_subscription("t", "all")
        m.create_subscription("t", "blue")
        m.create_rule(
            "t",
            "blue",
            "big-blue",
            filter=SqlRuleFilter("color = 'blue' AND n > @min", parameters={"@min": 1}),
            action=SqlRuleAction("SET seen = 'yes'; REMOVE n"),
        )
        m.delete_rule("t", "blue", "$Default")
        m.create_subscription("t", "corr")
        m.create_rule(
            "t", "corr", "by-subject", filter=CorrelationRuleFilter(label="invoice", properties={"tenant": "a"})
        )
        m.delete_rule("t", "corr", "$Default")
        assert [r.name for r in m.list_rules("t", "blue")] == ["big-blue"]
        rule = m.get_rule("t", "blue", "big-blue")
        assert rule.filter.sql_expression == "color = 'blue' AND n > @min"
        assert rule.action.sql_expression == "SET seen = 'yes'; REMOVE n"
        assert sorted(s.name for s in m.list_subscriptions("t")) == ["all", "blue", "corr"]
        with ServiceBusClient.from_connection_string(emu.connection_string) as c:
            with c.get_topic_sender("t") as s:
                s.send_messages(
                    [
                        ServiceBusMessage("blue-2", application_properties={"color": "blue", "n": 2}),
                        ServiceBusMessage("blue-1", application_properties={"color": "blue", "n": 1}),
                        ServiceBusMessage("red", application_properties={"color": "red", "n": 5}),
                        ServiceBusMessage("inv", subject="invoice", application_properties={"tenant": "a"}),
                    ]
                )
            with c.get_subscription_receiver("t", "blue") as r:
                (msg,) = receive_all(r, 1)
                assert str(msg) == "blue-2"
                assert msg.application_properties == {b"color": b"blue", b"seen": b"yes"}
                r.complete_message(msg)
            with c.get_subscription_receiver("t", "corr") as r:
                assert [str(x) for x in receive_all(r, 1)] == ["inv"]
        assert m.get_subscription_runtime_properties("t", "all").active_message_count == 4
        assert m.get_subscription_runtime_properties("t", "blue").active_message_count == 0
        assert m.get_topic_runtime_properties("t").subscription_count == 3
        m.update_rule("t", "blue", m.get_rule("t", "blue", "big-blue"), filter=TrueRuleFilter())
        assert m.get_rule("t", "blue", "big-blue").filter.sql_expression == "1=1"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("color ==", "expected a property name"),
        ("sys.DeliveryCount > 1", "sys.DeliveryCount is not supported"),
        ("n = @missing", "parameter @missing is not given"),
    ],
)
def test_unsupported_sql_is_refused_with_the_reason(emu, expression, reason):
    with admin(emu) as m:
        m.create_topic("t")
        m.create_subscription("t", "s")
        with pytest.raises(HttpResponseError, match=reason) as info:
            m.create_rule("t", "s", "bad", filter=SqlRuleFilter(expression))
        assert info.value.status_code == 400


def test_api_entities_and_rules_persist_with_data_dir(sb_emulator, tmp_path):
    first = sb_emulator(management_port=0, data_dir=tmp_path)
    with admin(first) as m:
        reader = AuthorizationRule(key_name="reader", rights=[AccessRights.LISTEN])
        m.create_queue("durable", max_delivery_count=7, authorization_rules=[reader])
        key = m.get_queue("durable").authorization_rules[0].primary_key
        m.create_topic("t")
        m.create_subscription("t", "s", lock_duration=dt.timedelta(seconds=20))
        m.create_rule("t", "s", "only-a", filter=SqlRuleFilter("k = 'a'"))
        m.delete_rule("t", "s", "$Default")
        m.create_queue("dropped")
        m.delete_queue("dropped")
    with ServiceBusClient.from_connection_string(first.connection_string) as c, c.get_queue_sender("durable") as s:
        s.send_messages(ServiceBusMessage("kept"))
    first.stop()
    second = sb_emulator(management_port=0, data_dir=tmp_path)
    with admin(second) as m:
        assert sorted(q.name for q in m.list_queues()) == ["durable"]
        assert m.get_queue("durable").max_delivery_count == 7
        assert m.get_queue("durable").authorization_rules[0].primary_key == key  # the generated key persists
        assert m.get_subscription("t", "s").lock_duration == dt.timedelta(seconds=20)
        assert [r.name for r in m.list_rules("t", "s")] == ["only-a"]
        assert m.get_queue_runtime_properties("durable").active_message_count == 1


class EntraCredential:
    """A token credential handing out an Entra ID access token (a JWT, as DefaultAzureCredential gets one)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        token, expires = storage_token()
        return AccessToken(token, expires)


def test_the_credential_is_checked_as_azure_does(sb_emulator):
    emu = sb_emulator(management_port=0, policies=[AccessPolicy("listener", "k-listen", frozenset({LISTEN}))])
    host = f"{emu.host}:{emu.management_port}"

    def queues(policy: str | EntraCredential, key: str = "") -> list[str]:
        verify = str(emu.ca_cert)
        if isinstance(policy, EntraCredential):
            client = ServiceBusAdministrationClient(host, policy, connection_verify=verify)
        else:
            conn = f"Endpoint=sb://{host}/;SharedAccessKeyName={policy};SharedAccessKey={key}"
            client = ServiceBusAdministrationClient.from_connection_string(conn, connection_verify=verify)
        with client as m:
            return [q.name for q in m.list_queues()]

    assert queues(ROOT_KEY_NAME, ROOT_KEY_VALUE) == []
    assert queues(EntraCredential()) == []
    refused = [
        (ROOT_KEY_NAME, "not-the-key", "InvalidSignature"),
        ("invalid", "invalid", "InvalidSignature"),
        ("listener", "k-listen", "'Manage' claim"),  # a valid key without the Manage right
    ]
    for policy, key, reason in refused:
        with pytest.raises(ClientAuthenticationError, match=reason) as info:
            queues(policy, key)
        assert info.value.status_code == 401
        assert "not-the-key" not in str(info.value) and "sig=" not in str(info.value)


@pytest.mark.parametrize(
    ("create", "reason"),
    [
        ({"lock_duration": dt.timedelta(minutes=6)}, "LockDuration PT6M is out of range"),
        ({"lock_duration": "P10675199DT2H48M5.4775807S"}, "LockDuration P10675199DT2H48M5.4775.*S is out of range"),
        ({"duplicate_detection_history_time_window": dt.timedelta(days=25)}, "from PT20S to P7D"),
        ({"auto_delete_on_idle": dt.timedelta(minutes=1)}, "AutoDeleteOnIdle PT1M is out of range"),
        ({"max_message_size_in_kilobytes": 1024}, "only a Premium namespace sets it"),
    ],
)
def test_values_azure_refuses_are_a_400(emu, create, reason):
    with admin(emu) as m:
        with pytest.raises(HttpResponseError, match=reason) as info:
            m.create_queue("refused", **create)
        assert info.value.status_code == 400
        queue = m.create_queue("kept", lock_duration=dt.timedelta(minutes=5))
        for name, value in create.items():
            setattr(queue, name, value)
        with pytest.raises(HttpResponseError, match=reason):
            m.update_queue(queue)
        assert m.get_queue("kept").lock_duration == dt.timedelta(minutes=5)
        assert [q.name for q in m.list_queues()] == ["configured", "kept"]


def test_api_version_2017_04_has_no_message_size(emu):
    with ServiceBusAdministrationClient.from_connection_string(
        emu.management_connection_string, connection_verify=str(emu.ca_cert), api_version=ApiVersion.V2017_04
    ) as old:
        old.create_queue("q")
        assert old.get_queue("q").max_message_size_in_kilobytes is None
        with pytest.raises(HttpResponseError, match="not a property in api-version 2017-04"):
            old.create_queue("big", max_message_size_in_kilobytes=256)
    with admin(emu) as m:
        assert m.get_queue("q").max_message_size_in_kilobytes == 256


def test_authorization_rules_and_forwarding_as_azure_returns_them(emu):
    with admin(emu) as m:
        m.create_topic("dest")
        rule = AuthorizationRule(key_name="reader", rights=[AccessRights.LISTEN])
        m.create_queue("src", forward_to="dest", authorization_rules=[rule])
        queue = m.get_queue("src")
        (kept,) = queue.authorization_rules
        assert (kept.key_name, kept.rights, kept.claim_type) == ("reader", ["Listen"], "SharedAccessKey")
        assert len(base64.b64decode(kept.primary_key)) == 32 and kept.secondary_key != kept.primary_key
        assert kept.created_at_utc is not None
        assert queue.forward_to == f"sb://{emu.host}:{emu.management_port}/dest"
        queue.forward_to = None
        queue.forward_dead_lettered_messages_to = "configured"
        m.update_queue(queue)
        again = m.get_queue("src")
        assert again.forward_to is None
        assert again.forward_dead_lettered_messages_to == f"sb://{emu.host}:{emu.management_port}/configured"
        assert again.authorization_rules[0].primary_key == kept.primary_key  # generated once, then kept
        with pytest.raises(HttpResponseError, match="destination entity 'nowhere' does not exist"):
            m.create_subscription("dest", "s", forward_to="nowhere")
        with pytest.raises(HttpResponseError, match="not an entity of this namespace"):
            m.create_subscription("dest", "s", forward_to="sb://elsewhere.servicebus.windows.net/dest")
        with pytest.raises(HttpResponseError, match="rights must be one or more of"):
            m.create_queue("bad-rule", authorization_rules=[AuthorizationRule(key_name="none", rights=[])])
    # the namespace is the one the client called (its Host), here under another name of the same address
    alias = emu.management_connection_string.replace(f"sb://{emu.host}:", "sb://localhost:")
    with ServiceBusAdministrationClient.from_connection_string(alias, connection_verify=str(emu.ca_cert)) as m:
        assert m.create_queue("via-alias", forward_to="dest").forward_to == f"sb://localhost:{emu.management_port}/dest"


def test_rule_parameters_keep_their_type_and_filter_by_it(emu):
    when = dt.datetime(2020, 7, 5, 11, 12, 13, tzinfo=dt.UTC)
    with admin(emu) as m:
        m.create_topic("t")
        m.create_subscription("t", "late")
        params = {"@after": when, "@window": dt.timedelta(hours=1), "@n": 2}
        m.create_rule("t", "late", "after", filter=SqlRuleFilter("at > @after", parameters=params))
        m.delete_rule("t", "late", "$Default")
        m.create_subscription("t", "stamped")  # a SQL action setting typed parameters: encoded as AMQP types
        stamp = SqlRuleAction("SET seen = @after; SET span = @window", parameters=params)
        m.create_rule("t", "stamped", "stamp", filter=SqlRuleFilter("at < @after", parameters=params), action=stamp)
        m.delete_rule("t", "stamped", "$Default")
        got = m.get_rule("t", "late", "after").filter.parameters
        assert got == {"@after": when, "@window": dt.timedelta(hours=1), "@n": 2}
        with ServiceBusClient.from_connection_string(emu.connection_string) as c:
            with c.get_topic_sender("t") as s:
                s.send_messages(
                    [
                        ServiceBusMessage("early", application_properties={"at": when - dt.timedelta(days=1)}),
                        ServiceBusMessage("late", application_properties={"at": when + dt.timedelta(days=1)}),
                    ]
                )
            with c.get_subscription_receiver("t", "late") as r:
                assert [str(x) for x in receive_all(r, 1)] == ["late"]
            with c.get_subscription_receiver("t", "stamped") as r:
                (early,) = receive_all(r, 1)
                # the SDK reads an AMQP timestamp as milliseconds and a com.microsoft:timespan as its 100 ns ticks
                assert early.application_properties[b"seen"] == int(when.timestamp() * 1000)
                assert early.application_properties[b"span"] == 3600 * 10**7


def test_topic_runtime_properties_count_the_filters(emu):
    with admin(emu) as m:
        m.create_topic("t")
        m.create_subscription("t", "a")  # its $Default rule is a true filter: a SQL one
        m.create_subscription("t", "b")
        m.create_rule("t", "b", "sql", filter=SqlRuleFilter("n > 1"))
        m.create_rule("t", "b", "corr", filter=CorrelationRuleFilter(correlation_id="x"))
        runtime = m.get_topic_runtime_properties("t")
        assert (runtime.sql_filter_count, runtime.correlation_filter_count) == (3, 1)


def test_async_administration_client(emu):
    async def scenario() -> list[str]:
        async with AsyncAdministrationClient.from_connection_string(
            emu.management_connection_string, connection_verify=str(emu.ca_cert)
        ) as m:
            await m.create_topic("at")
            await m.create_subscription("at", "s1")
            names = [s.name async for s in m.list_subscriptions("at")]
            await m.delete_topic("at")
            return names

    assert asyncio.run(scenario()) == ["s1"]


def test_feeds_page_with_a_next_link():
    store = Store()
    for i in range(5):
        store.add_queue(QueueConfig(f"q{i}"))
    api = ManagementApi(store, namespace="example:1")
    auth = {"authorization": sas_token("https://example:1", ROOT_POLICY)}
    status, body = api.handle("GET", "/$Resources/queues", {"$skip": "1", "$top": "2"}, auth, b"")
    assert status == 200
    assert body.count(b"<entry") == 2 and b"q1" in body and b"q2" in body
    assert b'rel="next"' in body and b"$skip=3&amp;$top=2" in body
    status, body = api.handle("GET", "/$Resources/queues", {"$skip": "4"}, auth, b"")
    assert body.count(b"<entry") == 1 and b'rel="next"' not in body
    assert api.handle("GET", "/$Resources/sessions", {}, auth, b"")[0] == 400
    assert api.handle("PUT", "/q9", {}, auth, b"not xml")[0] == 400
    assert api.handle("GET", "/$Resources/queues", {}, {}, b"")[0] == 401


def test_iso_durations_round_trip_what_azure_writes():
    assert [iso_duration(s) for s in (30, 60, 600, 90061, None)] == [
        "PT30S",
        "PT1M",
        "PT10M",
        "P1DT1H1M1S",
        "P10675199DT2H48M5.4775807S",
    ]


@pytest.mark.xdist_group("sb-amqps-5671")
def test_amqps_listener_serves_clients_without_the_emulator_flag(sb_emulator):
    """Without ``UseDevelopmentEmulator`` the SDK dials TLS on 5671; a loopback address of its own avoids clashes."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    emu = sb_emulator(host=host, queues=[QueueConfig("q")], amqps_port=5671)
    credential = AzureNamedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")  # the root policy (access.py)
    with ServiceBusClient(host, credential, connection_verify=str(emu.ca_cert), retry_total=0) as c:
        with c.get_queue_sender("q") as s:
            s.send_messages(ServiceBusMessage("over tls"))
        with c.get_queue_receiver("q") as r:
            (msg,) = receive_all(r, 1)
            assert str(msg) == "over tls"
            r.complete_message(msg)


@pytest.mark.xdist_group("sb-amqps-5671")
def test_concurrent_renewals_over_amqps_keep_the_connection(sb_emulator):
    """TLS ends in front of the frame sequencer, so out-of-order transfers from threads are accepted on 5671 too."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    emu = sb_emulator(host=host, queues=[QueueConfig("q", lock_duration=5)], amqps_port=5671, status_port=0)
    credential = AzureNamedKeyCredential("RootManageSharedAccessKey", "SAS_KEY_VALUE")  # the root policy (access.py)
    with (
        ServiceBusClient(host, credential, connection_verify=str(emu.ca_cert), retry_total=0) as c,
        c.get_queue_receiver("q") as r,
    ):
        with c.get_queue_sender("q") as s:
            s.send_messages([ServiceBusMessage(f"m{i}") for i in range(100)])
        messages = receive_all(r, 100)
        with ThreadPoolExecutor(8) as pool:
            assert len(list(pool.map(r.renew_message_lock, messages))) == 100
        for m in messages:
            r.complete_message(m)
    stats = emu.stats()
    assert stats["entities"]["q"]["completed"] == 100
    assert stats["wire"]["transfers_renumbered"] > 0  # the client did send out of order
