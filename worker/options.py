"""Command-line options shared by more than one command (``run`` and ``dlq``).

Every option reads an environment variable named ``GCW_`` + the option in upper snake case, e.g.
``--servicebus-connection-string`` ⇔ ``GCW_SERVICEBUS_CONNECTION_STRING``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from worker.servicebus.config import RunConfig

F = TypeVar("F", bound=Callable[..., Any])


def envvar(option: str) -> str:
    """The environment variable that feeds ``--option`` (for a ``--flag/--no-flag`` pair: ``GCW_FLAG``)."""
    primary = option.split("/", 1)[0].strip()
    return "GCW_" + primary.lstrip("-").replace("-", "_").upper()


def option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads its ``GCW_*`` environment variable and says so in ``--help``."""
    return click.option(name, envvar=envvar(name), show_envvar=True, **kwargs)


SERVICEBUS_SETTINGS = (
    "servicebus_connection_string",
    "servicebus_namespace",
    "request_queue",
    "request_topic",
    "request_subscription",
)


def _click_option(f: Field[Any], hint: Any) -> Callable[[F], F]:
    from worker.domain.secrets import Secret
    from worker.servicebus.config import flag_of, setting_of

    info = setting_of(f)
    flag = flag_of(f)
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
    kwargs: dict[str, Any] = {"help": info.help, "envvar": envvar(flag), "show_envvar": True}
    if f.default is not None:
        kwargs["default"] = f.default
        kwargs["show_default"] = True
    if base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, **kwargs)
    if typing.get_origin(base) is tuple:
        kwargs.pop("default", None)
        kwargs.pop("show_default", None)
        return click.option(flag, f.name, multiple=True, **kwargs)
    if info.choices:
        kwargs["type"] = click.Choice(info.choices)
    elif base in (int, float):
        kwargs["type"] = base
    elif base not in (str, Secret):
        raise TypeError(f"no command-line type for {f.name}: {hint!r}")
    return click.option(flag, f.name, **kwargs)


def config_options(names: Iterable[str] | None = None) -> Callable[[F], F]:
    """The click options of ``RunConfig``'s settings (all, or ``names``), in declaration order."""
    from worker.servicebus.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    wanted = None if names is None else set(names)
    decorators = [_click_option(f, hints[f.name]) for f in fields(RunConfig) if wanted is None or f.name in wanted]

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def config_from_values(values: Mapping[str, Any]) -> RunConfig:
    """The ``RunConfig`` of parsed ``config_options`` values (secrets wrapped, repeated flags as tuples)."""
    from worker.domain.secrets import Secret
    from worker.servicebus.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    kwargs: dict[str, Any] = {}
    for f in fields(RunConfig):
        if f.name not in values:
            continue
        value = values[f.name]
        hint = hints[f.name]
        if Secret in typing.get_args(hint) or hint is Secret:
            value = Secret(value) if value else None
        elif typing.get_origin(hint) is tuple:
            value = tuple(value or ())
        kwargs[f.name] = value
    return RunConfig(**kwargs)


def servicebus_options(func: F) -> F:
    """Where the requests come from: a namespace (Entra ID) or a connection string (emulator), and the entity."""
    return config_options(SERVICEBUS_SETTINGS)(func)


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
