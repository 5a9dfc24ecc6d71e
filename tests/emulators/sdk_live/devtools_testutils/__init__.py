"""A live-mode stand-in for ``devtools_testutils``, the azure-sdk-for-python repository's test tooling.

The official ``azure-planetarycomputer`` tests import ``devtools_testutils``, which is not published on PyPI (it
lives in the SDK repository's ``tools/azure-sdk-tools`` and needs its test proxy). This package provides the part
of its surface those tests use, with the semantics the real one has in **live mode without recording**
(``AZURE_TEST_RUN_LIVE=true``, ``AZURE_SKIP_LIVE_RECORDING=true``), the mode in which the tests talk to a real
service:

- ``recorded_by_proxy`` / ``aio.recorded_by_proxy_async`` call the test directly (no proxy, no recording), with
  only the keyword arguments the test function accepts;
- ``EnvironmentVariableLoader(directory, **fake_values)`` passes each ``<directory>_*`` keyword's value from the
  upper-cased environment variable (the fake value is what recordings would have; a missing variable is an error,
  as in the real loader);
- the sanitizer functions and the ``test_proxy`` fixture do nothing (the real ones send nothing to the proxy in
  this mode);
- ``AzureRecordedTestCase.get_credential`` returns ``DefaultAzureCredential`` (sync or ``aio``); the real one builds
  a ``ClientSecretCredential`` from ``<DIRECTORY>_TENANT_ID/CLIENT_ID/CLIENT_SECRET`` or a user credential, i.e.
  an Entra sign-in, which is what this project replaces with a local managed-identity endpoint.

Record and playback modes are refused: they need the test proxy. Nothing here is copied from the real package.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

__all__ = [
    "AzureRecordedTestCase",
    "EnvironmentVariableLoader",
    "add_body_key_sanitizer",
    "add_body_regex_sanitizer",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_header_regex_sanitizer",
    "add_uri_regex_sanitizer",
    "is_live",
    "is_live_and_not_recording",
    "recorded_by_proxy",
    "remove_batch_sanitizers",
    "test_proxy",
]

F = TypeVar("F", bound=Callable[..., Any])


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"true", "yes", "1"}


def is_live() -> bool:
    """True when the tests run against a service (``AZURE_TEST_RUN_LIVE``)."""
    return _flag("AZURE_TEST_RUN_LIVE")


def is_live_and_not_recording() -> bool:
    return is_live() and _flag("AZURE_SKIP_LIVE_RECORDING")


def _require_live() -> None:
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


def recorded_by_proxy(test_func: F) -> F:
    """Live mode without recording: the test runs as it is, against the service its variables name."""

    @functools.wraps(test_func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _require_live()
        kwargs.pop("variables", None)
        return test_func(*args, **trim_kwargs(test_func, kwargs))

    return run  # type: ignore[return-value]


class EnvironmentVariableLoader:
    """Decorator passing ``<directory>_*`` values from the environment (live) as keyword arguments."""

    def __init__(self, directory: str, **fake_values: Any) -> None:
        self.directory = directory
        self.fake_values = {k: v for k, v in fake_values.items() if directory in k}

    def values(self) -> dict[str, str]:
        _require_live()
        missing = [k.upper() for k in self.fake_values if k.upper() not in os.environ]
        if missing:
            raise RuntimeError(f"live tests need the environment variables {', '.join(sorted(missing))}")
        return {k: os.environ[k.upper()] for k in self.fake_values}

    def __call__(self, test_func: F) -> F:
        if inspect.iscoroutinefunction(test_func):

            @functools.wraps(test_func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                kwargs.update(self.values())
                return await test_func(*args, **trim_kwargs(test_func, kwargs))

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(test_func)
            def run(*args: Any, **kwargs: Any) -> Any:
                kwargs.update(self.values())
                return test_func(*args, **trim_kwargs(test_func, kwargs))

            wrapper = run
        # pytest must not ask for the injected values as fixtures: expose only ``self``
        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        )
        return wrapper  # type: ignore[return-value]


class AzureRecordedTestCase:
    """Base class of the tests: clients built with a credential the environment provides."""

    @property
    def is_live(self) -> bool:
        return is_live()

    def get_credential(self, client_class: type, **kwargs: Any) -> Any:
        if kwargs.pop("is_async", False):
            from azure.identity.aio import DefaultAzureCredential as AsyncCredential

            return AsyncCredential()
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def create_client_from_credential(self, client_class: type, credential: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("logging_enable", True)
        return client_class(credential=credential, **kwargs)


def _no_proxy(*args: Any, **kwargs: Any) -> None:
    """Sanitizers configure the test proxy's recordings; live mode without recording sends nothing."""


add_body_key_sanitizer = _no_proxy
add_body_regex_sanitizer = _no_proxy
add_general_regex_sanitizer = _no_proxy
add_general_string_sanitizer = _no_proxy
add_header_regex_sanitizer = _no_proxy
add_uri_regex_sanitizer = _no_proxy
remove_batch_sanitizers = _no_proxy


@pytest.fixture(scope="session")
def test_proxy() -> None:
    """The real fixture starts the test proxy; live mode without recording does not use one."""
    _require_live()
