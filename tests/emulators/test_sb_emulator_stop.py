"""Stopping the Service Bus emulator drops its clients the way Azure does: a forced connection close."""

import pytest
from azure.servicebus import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusConnectionError
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator


@pytest.mark.timeout(60)
def test_stop_closes_client_connections_with_a_forced_close():
    emu = ServiceBusEmulator(queues=[QueueConfig("q")]).start()
    client = ServiceBusClient.from_connection_string(emu.connection_string, retry_total=0)
    with client:
        receiver = client.get_queue_receiver("q")
        assert receiver.receive_messages(max_wait_time=1) == []  # the link is open
        emu.stop()
        with pytest.raises(ServiceBusConnectionError) as err:
            receiver.receive_messages(max_wait_time=5)
        assert "connection:forced" in str(err.value) or "shutting down" in str(err.value)
