"""Command-line options shared by more than one command (``run`` and ``dlq``).

Every option reads an environment variable named ``GCW_`` + the option in upper snake case, e.g.
``--servicebus-connection-string`` ⇔ ``GCW_SERVICEBUS_CONNECTION_STRING``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def envvar(option: str) -> str:
    """The environment variable that feeds ``--option`` (for a ``--flag/--no-flag`` pair: ``GCW_FLAG``)."""
    primary = option.split("/", 1)[0].strip()
    return "GCW_" + primary.lstrip("-").replace("-", "_").upper()


def option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads its ``GCW_*`` environment variable and says so in ``--help``."""
    return click.option(name, envvar=envvar(name), show_envvar=True, **kwargs)


def servicebus_options(func: F) -> F:
    """Where the requests come from: a namespace (Entra ID) or a connection string (emulator), and the entity."""
    decorators = [
        option(
            "--servicebus-connection-string",
            help="Service Bus connection string (the emulator's, or SAS-key auth). Mutually exclusive with "
            "--servicebus-namespace. Treated as a secret: never logged.",
        ),
        option(
            "--servicebus-namespace",
            help="Service Bus namespace (name or FQDN); authenticates with DefaultAzureCredential "
            "(workload identity in Kubernetes).",
        ),
        option("--request-queue", help="Queue the requests arrive on."),
        option("--request-topic", help="Topic the requests arrive on (with --request-subscription)."),
        option("--request-subscription", help="Subscription of --request-topic to consume."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def validate_servicebus_options(
    connection_string: str | None,
    namespace: str | None,
    queue: str | None,
    topic: str | None,
    subscription: str | None,
) -> None:
    """Raise ``click.UsageError`` with a precise message when the combination is wrong."""
    if bool(connection_string) == bool(namespace):
        raise click.UsageError("give exactly one of --servicebus-connection-string or --servicebus-namespace")
    if queue and (topic or subscription):
        raise click.UsageError("give either --request-queue or --request-topic with --request-subscription, not both")
    if not queue and not (topic and subscription):
        raise click.UsageError("give --request-queue, or --request-topic together with --request-subscription")
