"""The Azure Resource Manager stand-in (``gcw_emulators.servicebus.arm``), driven over real HTTPS by the clients the
azure-servicebus tests' preparers use: azure-mgmt-resource's ``ResourceManagementClient`` and azure-mgmt-servicebus'
``ServiceBusManagementClient`` (installed into the tools folder by ``sdk_live.sb.test_dependencies()``, as for the
package's own tests). What ARM creates is the broker's: a policy's keys from ``listKeys`` sign AMQP tokens."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusAuthorizationError
from gcw_emulators.identity import storage_token
from gcw_emulators.servicebus import ServiceBusEmulator

from tests.emulators.sdk_live import pc, sb

pytestmark = pytest.mark.timeout(120)

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP, NAMESPACE = "rgpy-arm-test", "armtestns"


class _Credential:
    """A bearer token as ``DefaultAzureCredential`` would get one (the stand-in needs a well-formed token)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token, expires = storage_token()
        return AccessToken(token, expires)


@pytest.fixture(scope="module")
def mgmt() -> Iterator[None]:
    try:
        deps = str(sb.test_dependencies())
    except pc.Unavailable as exc:
        pytest.skip(str(exc))
    sys.path.append(deps)
    yield
    sys.path.remove(deps)


@pytest.fixture
def emu(sb_emulator: Any, mgmt: None) -> ServiceBusEmulator:
    return sb_emulator(arm_port=0)


def _clients(emu: ServiceBusEmulator) -> tuple[Any, Any]:
    from azure.mgmt.resource import ResourceManagementClient
    from azure.mgmt.servicebus import ServiceBusManagementClient

    kwargs = {
        "base_url": emu.arm_url,
        "credential_scopes": [f"{emu.arm_url}.default"],
        "connection_verify": str(emu.ca_cert),
    }
    return (
        ResourceManagementClient(_Credential(), SUBSCRIPTION, **kwargs),
        ServiceBusManagementClient(_Credential(), SUBSCRIPTION, **kwargs),
    )


def _client(emu: ServiceBusEmulator, key_name: str, key: str) -> ServiceBusClient:
    """The broker, signing with a policy's key (the plain listener: the namespace's name does not resolve here)."""
    return ServiceBusClient.from_connection_string(
        f"Endpoint=sb://{emu.host}:{emu.port};SharedAccessKeyName={key_name};SharedAccessKey={key};"
        "UseDevelopmentEmulator=true"
    )


def test_preparer_calls_provision_entities_and_keys_the_broker_accepts(emu: ServiceBusEmulator) -> None:
    from azure.mgmt.servicebus.models import AccessRights, SBAuthorizationRule, SBQueue, SBSubscription

    groups, bus = _clients(emu)
    group = groups.resource_groups.create_or_update(GROUP, {"location": "westus", "tags": {"BuildId": "local"}})
    assert (group.name, group.location, group.tags) == (GROUP, "westus", {"BuildId": "local"})

    started = time.monotonic()
    body = {"sku": {"name": "Standard"}, "location": "westus", "disableLocalAuth": False}
    namespace = bus.namespaces.begin_create_or_update(GROUP, NAMESPACE, body).result()
    assert time.monotonic() - started < 5  # a long-running operation, done at the first poll
    assert namespace.name == NAMESPACE
    assert namespace.properties.provisioning_state == "Succeeded"
    assert bus.namespaces.get(GROUP, NAMESPACE).properties.service_bus_endpoint == (
        f"https://{NAMESPACE}{emu.namespace_suffix}:443/"
    )
    root = bus.namespaces.list_keys(GROUP, NAMESPACE, "RootManageSharedAccessKey")
    assert root.primary_connection_string == (
        f"Endpoint=sb://{NAMESPACE}.servicebus.gcw.test/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=SAS_KEY_VALUE"
    )

    queue = bus.queues.create_or_update(GROUP, NAMESPACE, "armqueue", SBQueue(lock_duration="PT10S"))
    assert queue.properties.lock_duration == dt.timedelta(seconds=10)
    assert emu.store is not None and emu.store.resolve("armqueue").config.lock_duration == 10
    bus.topics.create_or_update(GROUP, NAMESPACE, "armtopic", {})
    sub = bus.subscriptions.create_or_update(
        GROUP, NAMESPACE, "armtopic", "armsub", SBSubscription(requires_session=True, lock_duration="PT1M")
    )
    assert sub.properties.requires_session is True
    assert emu.store.resolve("armtopic/Subscriptions/armsub").config.lock_duration == 60

    rule = bus.namespaces.create_or_update_authorization_rule(
        GROUP, NAMESPACE, "sender", SBAuthorizationRule(rights=[AccessRights.send])
    )
    assert rule.properties.rights == ["Send"]
    keys = bus.namespaces.list_keys(GROUP, NAMESPACE, "sender")
    assert keys.primary_connection_string.startswith(f"Endpoint=sb://{NAMESPACE}.servicebus.gcw.test/")
    with _client(emu, keys.key_name, keys.primary_key) as client:
        with client.get_queue_sender("armqueue") as sender:
            sender.send_messages(ServiceBusMessage("signed with an ARM-made key"))
        with pytest.raises(ServiceBusAuthorizationError), client.get_queue_receiver("armqueue") as receiver:
            receiver.receive_messages(max_wait_time=2)
    with _client(emu, root.key_name, root.primary_key) as client, client.get_queue_receiver("armqueue") as receiver:
        assert [str(m) for m in receiver.receive_messages(max_wait_time=5)] == ["signed with an ARM-made key"]

    queue_rule = bus.queues.create_or_update_authorization_rule(
        GROUP, NAMESPACE, "armqueue", "listener", SBAuthorizationRule(rights=[AccessRights.listen])
    )
    assert queue_rule.name == "listener"
    queue_keys = bus.queues.list_keys(GROUP, NAMESPACE, "armqueue", "listener")
    assert queue_keys.primary_connection_string.endswith(";EntityPath=armqueue")

    bus.queues.delete(GROUP, NAMESPACE, "armqueue")
    assert [q.path for q in emu.store.queues()] == []
    with pytest.raises(KeyError):
        emu.access.policy("listener", "armqueue")  # the queue's policies went with it

    bus.namespaces.begin_delete(GROUP, NAMESPACE).result()
    assert emu.store.topics() == []
    with pytest.raises(KeyError):
        emu.access.policy("sender")
    groups.resource_groups.begin_delete(GROUP, polling=False).result()


def test_errors_are_arms_own(emu: ServiceBusEmulator) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    groups, bus = _clients(emu)
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        bus.queues.create_or_update("missing-group", NAMESPACE, "q", {})
    groups.resource_groups.create_or_update(GROUP, {"location": "westus"})
    # the preparers retry on this message while a namespace is being created
    with pytest.raises(ResourceNotFoundError, match=f"The requested resource {NAMESPACE} does not exist"):
        bus.queues.create_or_update(GROUP, NAMESPACE, "q", {})
    url = f"{emu.arm_url}subscriptions/{SUBSCRIPTION}/resourcegroups/{GROUP}?api-version=2022-09-01"
    answer = requests.get(url, verify=str(emu.ca_cert), timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "AuthenticationFailed"
