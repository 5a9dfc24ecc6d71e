"""The worker's classification of Service Bus configuration faults (``worker.servicebus.faults``) on the errors the
unmodified SDK raises against the emulator, which answers as Azure does: a put-token for a missing entity is a 404
(``ServiceBusAuthenticationError``), a key that does not verify a 401 (the same class), a missing right a refused
attach (``ServiceBusAuthorizationError``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusClient
from gcw_emulators.servicebus import QueueConfig
from gcw_emulators.servicebus.access import LISTEN, AccessPolicy

from worker.domain.errors import FaultCause
from worker.servicebus.preflight import check_receive, check_sender
from worker.servicebus.settings import ConsumerSettings

pytestmark = pytest.mark.timeout(60)

KEY = "listen-only-key"


@pytest.fixture
def emu(sb_emulator):  # type: ignore[no-untyped-def]
    return sb_emulator(
        queues=[QueueConfig("requests"), QueueConfig("replies")],
        policies=[AccessPolicy("listener", KEY, frozenset({LISTEN}))],
    )


def _client(connection_string: str) -> Iterator[ServiceBusClient]:
    with ServiceBusClient.from_connection_string(connection_string, retry_total=0) as client:
        yield client


@pytest.fixture
def client(emu) -> Iterator[ServiceBusClient]:  # type: ignore[no-untyped-def]
    yield from _client(emu.connection_string)


def test_a_missing_entity_is_entity_not_found_with_the_put_tokens_description(client: ServiceBusClient) -> None:
    sender = check_sender(client, "send_reply", "no-such-replies", "results")
    assert (sender.ok, sender.cause) == (False, FaultCause.SERVICEBUS_ENTITY_NOT_FOUND), sender
    assert "Status code: 404" in sender.detail and "no-such-replies' could not be found" in sender.detail
    receiver = check_receive(client, ConsumerSettings(reply_queue="replies", request_queue="no-such-requests"))
    assert (receiver.ok, receiver.cause) == (False, FaultCause.SERVICEBUS_ENTITY_NOT_FOUND), receiver
    assert check_sender(client, "send_reply", "replies", "results").ok


def test_a_key_that_does_not_verify_stays_unauthorized(emu) -> None:  # type: ignore[no-untyped-def]
    wrong = emu.connection_string.replace("SAS_KEY_VALUE", "not-the-key")
    assert wrong != emu.connection_string
    for client in _client(wrong):
        result = check_sender(client, "send_reply", "replies", "results")
        assert (result.ok, result.cause) == (False, FaultCause.SERVICEBUS_UNAUTHORIZED), result
        assert "Status code: 401" in result.detail and "not-the-key" not in result.detail


def test_a_missing_right_is_forbidden(emu) -> None:  # type: ignore[no-untyped-def]
    """A Listen-only key's put-token is accepted; the sender's attach is refused for the Send right."""
    listen_only = emu.connection_string.replace("RootManageSharedAccessKey", "listener").replace("SAS_KEY_VALUE", KEY)
    for client in _client(listen_only):
        result = check_sender(client, "send_reply", "replies", "results")
        assert (result.ok, result.cause) == (False, FaultCause.SERVICEBUS_FORBIDDEN), result
        receiver = check_receive(client, ConsumerSettings(reply_queue="replies", request_queue="requests"))
        assert receiver.ok, receiver
