"""The mode switches, keyword trimming and the credential every part of the stand-in shares."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "get_credential",
    "hide_signature",
    "is_live",
    "is_live_and_not_recording",
    "require_live",
    "trim_kwargs",
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"true", "yes", "1"}


def is_live() -> bool:
    """True when the tests run against a service (``AZURE_TEST_RUN_LIVE``)."""
    return _flag("AZURE_TEST_RUN_LIVE")


def is_live_and_not_recording() -> bool:
    return is_live() and _flag("AZURE_SKIP_LIVE_RECORDING")


def require_live() -> None:
    if not is_live_and_not_recording():
        raise RuntimeError(
            "this devtools_testutils stand-in runs tests in live mode without recording only: set "
            "AZURE_TEST_RUN_LIVE=true and AZURE_SKIP_LIVE_RECORDING=true (record/playback need the test proxy)"
        )


def trim_kwargs(func: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``func`` accepts (all of them when it takes ``**kwargs``)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def hide_signature(wrapper: Callable[..., Any]) -> None:
    """Make ``wrapper`` look like ``(*args, **kwargs)`` to pytest, as the real ``recorded_by_proxy`` wrappers do
    (they are not ``functools.wraps``-ed): pytest then asks for no fixture, the preparers pass the values."""
    wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    )


def get_credential(**kwargs: Any) -> Any:
    """The credential live tests authenticate with: ``DefaultAzureCredential`` (``is_async=True``: the aio one).

    The real function picks a user credential (``AZURE_TEST_USE_CLI_AUTH`` and the like), a service principal or
    the pipeline's credential, i.e. an Entra sign-in; the project gives ``DefaultAzureCredential`` a local
    managed-identity endpoint instead (``gcw_emulators.identity.TokenEndpoint``).
    """
    require_live()
    if kwargs.pop("is_async", False):
        from azure.identity.aio import DefaultAzureCredential as AsyncCredential

        return AsyncCredential(**kwargs)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**kwargs)
