"""Shared access policies of the Service Bus emulator: the unmodified SDK sees Azure's errors for a missing right
(ServiceBusAuthorizationError) and for a key that does not verify (ServiceBusAuthenticationError)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusAuthorizationError
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.access import (
    LISTEN,
    MANAGE,
    SEND,
    AccessControl,
    AccessPolicy,
    TokenRejected,
    parse_policies,
    parse_policy_flag,
    sas_token,
)
from gcw_emulators.servicebus.config import ConfigError

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_000.0


def control(*policies: AccessPolicy) -> AccessControl:
    return AccessControl(list(policies), clock=lambda: NOW)


# ---------------------------------------------------------------------------------------------- tokens, no sockets
def test_a_token_grants_its_policys_rights_on_its_resource_only() -> None:
    listener = AccessPolicy("listener", "k-listen", frozenset({LISTEN}))
    access = control(listener)
    grant = access.grant(sas_token("sb://127.0.0.1:5672/requests", listener, now=NOW))
    assert (grant.scope, grant.rights, grant.policy) == ("requests", frozenset({LISTEN}), "listener")
    grants = {grant.scope: grant}
    assert access.denied(grants, "requests", LISTEN, "r") is None
    assert access.denied(grants, "Requests/$DeadLetterQueue", LISTEN, "r") is None
    assert "'Send' claim(s) are required" in (access.denied(grants, "requests", SEND, "sb://x/requests") or "")
    assert access.denied(grants, "replies", LISTEN, "r") is not None  # another entity: another token
    assert access.denied(grants, "requests-2", LISTEN, "r") is not None  # a prefix is not the entity


def test_manage_implies_listen_and_send_and_the_root_policy_is_always_there() -> None:
    access = control()
    grant = access.grant(sas_token("sb://h/", access.policy("RootManageSharedAccessKey"), now=NOW))
    assert grant.scope == "" and grant.rights == frozenset({LISTEN, SEND, MANAGE})
    assert access.denied({"": grant}, "any/Subscriptions/s", SEND, "r") is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("Bearer eyJ", "InvalidToken"),
        ("SharedAccessSignature sr=x&sig=y", "MalformedToken"),
        ("SharedAccessSignature sr=x&sig=y&se=soon&skn=p", "MalformedToken"),
    ],
)
def test_malformed_tokens_are_rejected_with_the_reason(token: str, reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        control().grant(token)


def test_wrong_key_expired_token_and_entity_policy_used_elsewhere_are_rejected() -> None:
    on_requests = AccessPolicy("worker", "k1", frozenset({LISTEN}), entity="requests")
    access = control(on_requests)
    forged = AccessPolicy("worker", "not-k1", frozenset({LISTEN}))
    with pytest.raises(TokenRejected, match="InvalidSignature"):
        access.grant(sas_token("sb://h/requests", forged, now=NOW))
    with pytest.raises(TokenRejected, match="ExpiredToken"):
        access.grant(sas_token("sb://h/requests", on_requests, ttl=-1, now=NOW))
    with pytest.raises(TokenRejected, match="InvalidSignature"):
        access.grant(sas_token("sb://h/replies", on_requests, now=NOW))
    with pytest.raises(TokenRejected, match="InvalidSignature"):  # an entity policy cannot sign the namespace
        access.grant(sas_token("sb://h/", on_requests, now=NOW))
    assert access.grant(sas_token("sb://h/requests", on_requests, now=NOW)).rights == {LISTEN}


def test_the_secondary_key_verifies_too() -> None:
    policy = AccessPolicy("p", "primary", frozenset({SEND}), secondary_key="secondary")
    signed = sas_token("sb://h/q", AccessPolicy("p", "secondary", frozenset({SEND})), now=NOW)
    assert control(policy).grant(signed).rights == {SEND}


def test_policy_flag_and_config_json_name_what_is_wrong() -> None:
    assert parse_policy_flag("requests/worker:Listen,send:a:b=") == AccessPolicy(
        "worker", "a:b=", frozenset({LISTEN, SEND}), entity="requests"
    )
    assert parse_policy_flag("admin:Manage:k").rights == {LISTEN, SEND, MANAGE}
    with pytest.raises(ConfigError, match=r"expected \[ENTITY/\]NAME:RIGHTS:KEY"):
        parse_policy_flag("worker:Listen")
    with pytest.raises(ConfigError, match="right 'Read' is not one of Listen, Send, Manage"):
        parse_policy_flag("worker:Read:k")
    doc = {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": "ns",
                    "SharedAccessPolicies": [{"Name": "sender", "PrimaryKey": "k", "Rights": ["Send"]}],
                    "Queues": [
                        {
                            "Name": "requests",
                            "SharedAccessPolicies": [
                                {"Name": "worker", "PrimaryKey": "k2", "SecondaryKey": "k3", "Rights": ["Listen"]}
                            ],
                        }
                    ],
                }
            ]
        }
    }
    assert parse_policies(doc) == [
        AccessPolicy("sender", "k", frozenset({SEND})),
        AccessPolicy("worker", "k2", frozenset({LISTEN}), entity="requests", secondary_key="k3"),
    ]
    doc["UserConfig"]["Namespaces"][0]["Queues"][0]["SharedAccessPolicies"][0]["Rights"] = []
    with pytest.raises(ConfigError, match=r"Queues\[0\]\.SharedAccessPolicies\[0\]: Rights must be a non-empty"):
        parse_policies(doc)
    del doc["UserConfig"]["Namespaces"][0]["SharedAccessPolicies"][0]["PrimaryKey"]
    with pytest.raises(ConfigError, match=r"Namespaces\[0\]\.SharedAccessPolicies\[0\]\.PrimaryKey is required"):
        parse_policies(doc)


def test_duplicate_policies_and_policies_on_unknown_entities_fail_at_start(sb_emulator) -> None:
    with pytest.raises(ConfigError, match="declared twice"):
        AccessControl([AccessPolicy("p", "a", frozenset({SEND})), AccessPolicy("P", "b", frozenset({LISTEN}))])
    with pytest.raises(ConfigError, match="'nope', which is not a declared queue or topic"):
        sb_emulator(queues=[QueueConfig("q")], policies=[AccessPolicy("p", "k", frozenset({SEND}), entity="nope")])


# ---------------------------------------------------------------------------------------------- the SDK
def _client(conn: str) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(conn, retry_total=0)


def test_sdk_sees_azures_errors_for_a_missing_right_and_a_wrong_key(sb_emulator, tmp_path) -> None:
    config = tmp_path / "Config.json"
    config.write_text(
        json.dumps(
            {
                "UserConfig": {
                    "Namespaces": [
                        {
                            "Name": "ns",
                            "SharedAccessPolicies": [{"Name": "listener", "PrimaryKey": "kl", "Rights": ["Listen"]}],
                            "Queues": [{"Name": "replies"}],
                        }
                    ]
                }
            }
        )
    )
    emu = sb_emulator(
        queues=[QueueConfig("requests")],
        config_file=config,
        policies=[
            AccessPolicy("worker", "kw", frozenset({LISTEN}), entity="requests"),
            AccessPolicy("worker", "kw", frozenset({SEND}), entity="replies"),
        ],
    )
    with _client(emu.connection_string) as root, root.get_queue_sender("requests") as sender:
        sender.send_messages(ServiceBusMessage("m1"))

    with _client(emu.connection_string_for("worker", "requests")) as worker:
        with worker.get_queue_receiver("requests", max_wait_time=2) as receiver:  # Listen on requests
            assert [str(m) for m in receiver.peek_messages(max_message_count=5)] == ["m1"]
            got = receiver.receive_messages(max_message_count=1, max_wait_time=5)
            receiver.complete_message(got[0])
        with worker.get_queue_sender("replies") as replies:  # Send on replies: same name and key there
            replies.send_messages(ServiceBusMessage("r1"))
        missing_send = pytest.raises(ServiceBusAuthorizationError, match="'Send' claim")
        with missing_send, worker.get_queue_sender("requests") as sender:  # the right that is missing
            sender.schedule_messages(ServiceBusMessage("retry"), dt.datetime.now(dt.UTC))
        missing_listen = pytest.raises(ServiceBusAuthorizationError, match="'Listen' claim")
        with missing_listen, worker.get_queue_receiver("replies", max_wait_time=1) as receiver:
            receiver.receive_messages(max_message_count=1, max_wait_time=1)

    with _client(emu.connection_string_for("listener")) as listener:  # a namespace policy: every entity
        with listener.get_queue_receiver("replies", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=1) as r:
            assert r.peek_messages(max_message_count=1) == []
        with pytest.raises(ServiceBusAuthorizationError), listener.get_queue_sender("replies") as sender:
            sender.send_messages(ServiceBusMessage("no"))

    wrong_key = emu.connection_string.replace("SharedAccessKey=SAS_KEY_VALUE", "SharedAccessKey=guessed")
    rejected = pytest.raises(ServiceBusAuthenticationError)
    with _client(wrong_key) as intruder, rejected, intruder.get_queue_sender("requests") as sender:
        sender.send_messages(ServiceBusMessage("no"))


def test_policy_flag_of_the_command(tmp_path) -> None:
    cli = [sys.executable, "-c", "from worker.cli import main; main()", "emulator", "servicebus", "--port", "0"]
    proc = subprocess.run(
        [*cli, "--queue", "q", "--policy", "nope/p:Send:k"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0 and "'nope', which is not a declared queue or topic" in proc.stderr
    proc = subprocess.run([*cli, "--queue", "q", "--policy", "p:Listen"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "expected [ENTITY/]NAME:RIGHTS:KEY" in proc.stderr
