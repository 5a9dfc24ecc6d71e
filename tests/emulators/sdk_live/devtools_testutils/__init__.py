"""A live-mode stand-in for ``devtools_testutils``, the azure-sdk-for-python repository's test tooling.

The official ``azure-planetarycomputer`` and ``azure-servicebus`` tests import ``devtools_testutils``, which is not
published on PyPI (it lives in the SDK repository's ``tools/azure-sdk-tools`` and needs its test proxy). This
package provides the part of its surface those tests use, with the semantics the real one has in **live mode
without recording** (``AZURE_TEST_RUN_LIVE=true``, ``AZURE_SKIP_LIVE_RECORDING=true``), the mode in which the
tests talk to a real service:

- ``recorded_by_proxy`` / ``aio.recorded_by_proxy_async`` call the test directly (no proxy, no recording), with
  only the keyword arguments the test function accepts;
- preparers (``preparers.py``, ``resource_testcase.py``) hand the test its resources as keyword arguments:
  ``EnvironmentVariableLoader`` / ``PowerShellPreparer`` from ``<directory>_*`` environment variables, resource
  groups through Azure Resource Manager, and ``AzureMgmtPreparer``, the base the SDK tests' own preparers extend;
- the sanitizers and matchers (``sanitizers.py``) and the ``test_proxy`` fixture do nothing (the real ones send
  nothing to the proxy in this mode);
- ``get_credential()`` and ``AzureRecordedTestCase.get_credential`` return ``DefaultAzureCredential`` (sync or
  ``aio``); the real ones sign in to Entra ID with a service principal or a user, which is what this project
  replaces with a local managed-identity endpoint.

Record and playback modes are refused: they need the test proxy. Nothing here is copied from the real package.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from devtools_testutils.helpers import (
    get_credential,
    hide_signature,
    is_live,
    is_live_and_not_recording,
    require_live,
    trim_kwargs,
)
from devtools_testutils.preparers import (
    AzureMgmtPreparer,
    AzureTestError,
    EnvironmentVariableLoader,
    FakeResource,
    ReservedResourceNameError,
    get_region_override,
)
from devtools_testutils.resource_testcase import (
    CachedResourceGroupPreparer,
    RandomNameResourceGroupPreparer,
    ResourceGroupPreparer,
)
from devtools_testutils.sanitizers import (
    add_body_key_sanitizer,
    add_body_regex_sanitizer,
    add_body_string_sanitizer,
    add_general_regex_sanitizer,
    add_general_string_sanitizer,
    add_header_regex_sanitizer,
    add_oauth_response_sanitizer,
    add_remove_header_sanitizer,
    add_uri_regex_sanitizer,
    remove_batch_sanitizers,
    set_bodiless_matcher,
    set_custom_default_matcher,
)

__all__ = [
    "AzureMgmtPreparer",
    "AzureMgmtRecordedTestCase",
    "AzureRecordedTestCase",
    "AzureTestError",
    "CachedResourceGroupPreparer",
    "EnvironmentVariableLoader",
    "FakeResource",
    "PowerShellPreparer",
    "RandomNameResourceGroupPreparer",
    "ReservedResourceNameError",
    "ResourceGroupPreparer",
    "add_body_key_sanitizer",
    "add_body_regex_sanitizer",
    "add_body_string_sanitizer",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_header_regex_sanitizer",
    "add_oauth_response_sanitizer",
    "add_remove_header_sanitizer",
    "add_uri_regex_sanitizer",
    "get_credential",
    "get_region_override",
    "is_live",
    "is_live_and_not_recording",
    "recorded_by_proxy",
    "remove_batch_sanitizers",
    "set_bodiless_matcher",
    "set_custom_default_matcher",
    "test_proxy",
    "trim_kwargs",
]

F = TypeVar("F", bound=Callable[..., Any])

PowerShellPreparer = EnvironmentVariableLoader  # the real package keeps the old name as an alias


def recorded_by_proxy(test_func: F) -> F:
    """Live mode without recording: the test runs as it is, against the service its variables name."""

    @functools.wraps(test_func)
    def run(*args: Any, **kwargs: Any) -> Any:
        require_live()
        kwargs.pop("variables", None)
        return test_func(*args, **trim_kwargs(test_func, kwargs))

    hide_signature(run)
    return run  # type: ignore[return-value]


class AzureRecordedTestCase:
    """Base class of data-plane tests: clients built with a credential the environment provides."""

    @property
    def is_live(self) -> bool:
        return is_live()

    @property
    def in_recording(self) -> bool:
        return self.is_live

    def is_playback(self) -> bool:
        return not self.is_live

    def get_settings_value(self, key: str) -> str:
        """``AZURE_<key>`` from the environment (live: there are no fake settings)."""
        value = os.environ.get(f"AZURE_{key}")
        if not value:
            raise ValueError(f"live tests need the environment variable AZURE_{key}")
        return value

    def get_credential(self, client_class: type, **kwargs: Any) -> Any:
        return get_credential(**kwargs)

    def create_client_from_credential(self, client_class: type, credential: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("logging_enable", True)
        return client_class(credential=credential, **kwargs)

    def create_random_name(self, name: str) -> str:
        """``name`` plus a checksum of the running test's id: each test its own name, the same on every run."""
        test_id = os.environ.get("PYTEST_CURRENT_TEST", "").encode()
        return f"{name}{zlib.adler32(test_id) & 0xFFFFFFFF:x}"

    get_resource_name = create_random_name
    get_preparer_resource_name = create_random_name

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)  # live: the service's time passes for real

    @staticmethod
    def await_prepared_test(test_fn: Callable[..., Any]) -> Callable[..., Any]:
        """A synchronous test that runs the coroutine test ``test_fn`` to completion on an event loop (the
        current one, else a new one), with the keyword arguments it accepts: what the real decorator does for
        async tests that have no preparer."""

        @functools.wraps(test_fn)
        def run(test_class_instance: object, *args: Any, **kwargs: Any) -> Any:
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
            return loop.run_until_complete(test_fn(test_class_instance, **trim_kwargs(test_fn, kwargs)))

        return run


class AzureMgmtRecordedTestCase(AzureRecordedTestCase):
    """Base class of management-plane tests: management clients for ``AZURE_SUBSCRIPTION_ID``."""

    def create_mgmt_client(self, client_class: type, **kwargs: Any) -> Any:
        subscription_id = self.get_settings_value("SUBSCRIPTION_ID")
        credential = self.get_credential(client_class)
        return self.create_client_from_credential(client_class, credential, subscription_id=subscription_id, **kwargs)


@pytest.fixture(scope="session")
def test_proxy() -> None:
    """The real fixture starts the test proxy; live mode without recording does not use one."""
    require_live()
