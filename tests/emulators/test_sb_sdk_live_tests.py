"""The ``azure-servicebus`` package's own tests, unmodified, in live mode against the Service Bus emulator (issue 19).

The tests come from the source distribution of the installed azure-servicebus (``sdk_live/sb.py``: downloaded at
test time into the tools folder, never copied into the repository) and run in one pytest subprocess as Microsoft
runs them against a live namespace (``sdk_live/runner.py``: live mode without recording, ``devtools_testutils``
from ``sdk_live/``, pytest-asyncio in auto mode), pointed at one emulator started for this test:

* ``ServiceBusPreparer`` reads ``SERVICEBUS_*`` variables: the namespace is the emulator's loopback address
  (``sdk_live.sb.Namespace``: AMQP over TLS on 5671, the administration API on 443), the connection string is
  the one Azure gives for it, and the queue, session queue, topic and subscription it names are created first
  (the management tests then clear the namespace, as they do on Azure).
* ``get_credential()`` is ``DefaultAzureCredential``, served by a local managed-identity endpoint.

``SELECTION`` is what runs here (the management tests and the tests that need no namespace, about a minute);
``GCW_SB_TESTS`` replaces it with pytest arguments (e.g. ``GCW_SB_TESTS='test_queues.py -k peek'``). Every test
passes, or skips itself, except those in ``GAPS`` (each with its reason; docs/emulators.md has the same list); a
gap whose tests all pass fails this test too, so the list stays true.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from pathlib import Path

import pytest

from tests.emulators.sdk_live import pc, runner, sb

pytestmark = [pytest.mark.xdist_group("sb-amqps-5671"), pytest.mark.timeout(900)]

# the first tier: the management tests (HTTPS administration API) and the tests that need no namespace
SELECTION = (
    "mgmt_tests",
    "unittests",
    "test_batch_sizing.py",
    "test_connection_string_parser.py",
    "test_dictmixin_amqp.py",
    "test_mgmt_client_kwargs.py",
    "test_message.py",
)
# test id prefix (``file::Class::test``, file without ``.py``) -> why its tests cannot pass against the emulator
_ARM = (
    "provisions its namespace and queue through Azure Resource Manager (servicebus_preparer.py), see docs/emulators.md"
)
GAPS: dict[str, str] = {
    "test_message::TestServiceBusMessageBackcompat": _ARM,
    "unittests::test_pyamqp_decode::test_pyamqp_copies_are_byte_identical": "compares the SDK's vendored pyamqp "
    "with the Event Hubs copy in the azure-sdk-for-python checkout (sdk/): not in the sdist, nothing to emulate",
}


def _entities(ns: sb.Namespace) -> dict[str, str]:
    """The entities ServiceBusPreparer names, created on the emulator; the variables naming them."""
    from azure.servicebus.management import ServiceBusAdministrationClient

    assert ns.emulator.ca_cert is not None
    admin = ServiceBusAdministrationClient.from_connection_string(
        ns.emulator.management_connection_string, connection_verify=str(ns.emulator.ca_cert)
    )
    with admin:
        admin.create_queue("sdk-queue", lock_duration=dt.timedelta(seconds=10))
        admin.create_queue("sdk-session-queue", requires_session=True, lock_duration=dt.timedelta(seconds=10))
        admin.create_topic("sdk-topic")
        admin.create_subscription("sdk-topic", "sdk-subscription")
    return {
        "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": ns.management_host,
        "SERVICEBUS_CONNECTION_STR": f"Endpoint=sb://{ns.management_host}/;SharedAccessKeyName="
        "RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE",
        "SERVICEBUS_QUEUE_NAME": "sdk-queue",
        "SERVICEBUS_SESSION_QUEUE_NAME": "sdk-session-queue",
        "SERVICEBUS_SESSION_ID": "sdk-session",
        "SERVICEBUS_TOPIC_NAME": "sdk-topic",
        "SERVICEBUS_SUBSCRIPTION_NAME": "sdk-subscription",
        "SERVICEBUS_SESSION_QUEUE_SAS_POLICY": "RootManageSharedAccessKey",
        "SERVICEBUS_SESSION_QUEUE_SAS_KEY": "SAS_KEY_VALUE",
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    }


def test_official_sdk_tests_pass_in_live_mode(tmp_path: Path) -> None:
    try:
        sdist, deps = sb.sdist(), sb.test_dependencies()
    except pc.Unavailable as exc:
        pytest.skip(str(exc))
    tests = sdist / "tests"
    custom = os.environ.get("GCW_SB_TESTS")
    args = shlex.split(custom) if custom else list(SELECTION)
    (tmp_path / "trust").mkdir()
    ns = sb.Namespace.start(tmp_path / "trust")
    try:
        env = {**ns.env, **_entities(ns)}
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(pc.HERE), str(deps)])
        found, proc = runner.run_pytest(tests, args, env, tmp_path, timeout=840)
    finally:
        ns.stop()
    runner.check(found, GAPS, proc.stdout, allow_skipped=True)
