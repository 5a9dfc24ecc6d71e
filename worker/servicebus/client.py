"""Build a ServiceBusClient from a connection string (emulator, local) or a namespace + Entra credential."""

from __future__ import annotations

from typing import Any

from azure.servicebus import ServiceBusClient


def make_servicebus_client(
    *,
    connection_string: str | None = None,
    namespace: str | None = None,
    credential: Any = None,
    **kwargs: Any,
) -> ServiceBusClient:
    """Exactly one of ``connection_string`` or ``namespace`` must be given.

    ``namespace`` may be a bare name (``contoso``) or a fully qualified one (``contoso.servicebus.windows.net``);
    it authenticates with ``credential`` or, when none is given, ``DefaultAzureCredential`` (workload identity
    in Kubernetes).
    """
    if bool(connection_string) == bool(namespace):
        raise ValueError("give exactly one of --servicebus-connection-string or --servicebus-namespace")
    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string, **kwargs)
    assert namespace is not None
    fqns = namespace if "." in namespace else f"{namespace}.servicebus.windows.net"
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ServiceBusClient(fqns, credential, **kwargs)
