"""Preparers: decorators that hand a test the resources it needs, as keyword arguments (live mode only).

The protocol is the one of the real ``AzureMgmtPreparer`` (azure-devtools' ``AbstractPreparer`` underneath), as
the SDK tests' own preparers (``servicebus_preparer.py``) subclass it:

- ``create_resource(name, **kwargs)`` returns the keyword arguments to add (``kwargs`` holds what the outer
  preparers added, e.g. the resource group for a namespace); ``remove_resource(name, **kwargs)`` runs after the
  test, innermost preparer first;
- the name is random (``name_prefix`` + hex digits, ``random_name_enabled``) or derived from the test's id
  (``get_preparer_resource_name``);
- ``set_cache(True, *key)`` shares one resource between every test whose preparer stack has the same keys
  (``Cached...Preparer``); a cached resource is not removed after each test (the real one removes it at the end of
  the session; here the emulator that holds it goes away with the run);
- the next function gets only the keyword arguments it accepts, unless it is a preparer too (then it gets all).

``EnvironmentVariableLoader`` (alias ``PowerShellPreparer``) is the preparer whose resources are environment
variables: ``<directory>_*`` keyword arguments name them, their values are the recordings' fake values.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import secrets
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from devtools_testutils.helpers import require_live, trim_kwargs

__all__ = [
    "AzureMgmtPreparer",
    "AzureTestError",
    "EnvironmentVariableLoader",
    "FakeResource",
    "ReservedResourceNameError",
    "get_region_override",
]

F = TypeVar("F", bound=Callable[..., Any])
_logger = logging.getLogger(__name__)
_IS_PREPARER = "__is_preparer"
_USES_CACHE = "__use_cache"
_AGGREGATE_KEY = "__aggregate_cache_key"

FakeResource = namedtuple("FakeResource", ["name", "id"])


class AzureTestError(Exception):
    """A test's set-up is wrong (a missing variable, a preparer missing from the stack)."""


class ReservedResourceNameError(AzureTestError):
    """Azure refused a resource name as reserved."""


def get_region_override(default: str = "westus") -> str:
    """The region resources are created in: ``RESOURCE_REGION`` when set, else ``default``."""
    return os.environ.get("RESOURCE_REGION") or default


class AzureMgmtPreparer:
    """Base of every preparer (see the module docstring)."""

    _cache: ClassVar[dict[Any, tuple[str, dict[str, Any]]]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        name_prefix: str,
        random_name_length: int,
        disable_recording: bool = True,
        playback_fake_resource: Any = None,
        client_kwargs: dict[str, Any] | None = None,
        random_name_enabled: bool = False,
    ) -> None:
        self.name_prefix = name_prefix
        self.name_len = random_name_length
        self.disable_recording = disable_recording
        self.resource = playback_fake_resource
        self.client: Any = None
        self.client_kwargs = client_kwargs or {}
        self.random_name_enabled = random_name_enabled
        self.resource_moniker: str | None = None
        self.resource_random_name: str | None = None
        self.test_class_instance: Any = None
        self._cache_key: tuple[Any, ...] = (type(self).__name__,)
        self._use_cache = False

    # -- what subclasses override or use -------------------------------------------------------------------------
    def create_resource(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return {}

    def remove_resource(self, name: str, **kwargs: Any) -> None:
        """Nothing to remove by default."""

    def set_cache(self, enabled: bool, *args: Any) -> None:
        self._cache_key = (type(self).__name__, *args)
        self._use_cache = enabled

    @property
    def is_live(self) -> bool:
        return bool(self.test_class_instance.is_live)

    def create_random_name(self) -> str:
        if self.random_name_enabled:
            digits = max(self.name_len - len(self.name_prefix), 4)
            return self.name_prefix + secrets.token_hex(digits)[:digits]
        return str(self.test_class_instance.get_preparer_resource_name(self.name_prefix))

    @property
    def random_name(self) -> str:
        if not self.resource_random_name:
            self.resource_random_name = self.create_random_name()
        return self.resource_random_name

    @property
    def moniker(self) -> str:
        """The name recordings use; live, the real name stands in for it."""
        if not self.resource_moniker:
            self.resource_moniker = self.random_name
        return self.resource_moniker

    def create_mgmt_client(self, client_class: type, **kwargs: Any) -> Any:
        """A management client for ``AZURE_SUBSCRIPTION_ID`` with the test case's credential."""
        return self.test_class_instance.create_mgmt_client(client_class, **kwargs)

    # -- the decorator ------------------------------------------------------------------------------------------
    def _prepare_create_resource(self, test_class_instance: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        self.test_class_instance = test_class_instance
        name = self.random_name
        update = self.create_resource(name, **kwargs)
        return name, {**kwargs, **(update or {})}

    def _enter(self, fn: Callable[..., Any], instance: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
        require_live()
        self.test_class_instance = instance
        cached = self._use_cache or bool(getattr(fn, _USES_CACHE, False))
        key = (self._cache_key, kwargs.get(_AGGREGATE_KEY))
        kwargs = {**kwargs, _AGGREGATE_KEY: key}
        if not cached:
            self.resource_random_name = None  # a fresh resource for every test
            name, kwargs = self._prepare_create_resource(instance, **kwargs)
            return name, kwargs, False
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = self._prepare_create_resource(instance, **kwargs)
            name, prepared = self._cache[key]
        # the cached resources, under this call's own arguments (e.g. its parametrized ones), as the real one does
        return name, {**prepared, **kwargs}, True

    def _arguments(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(kwargs) if getattr(fn, _IS_PREPARER, False) else trim_kwargs(fn, kwargs)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(test_class_instance: Any, **kwargs: Any) -> Any:
                name, kwargs, cached = self._enter(fn, test_class_instance, kwargs)
                try:
                    return await fn(test_class_instance, **self._arguments(fn, kwargs))
                finally:
                    if not cached:
                        self.remove_resource(name, **kwargs)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run(test_class_instance: Any, **kwargs: Any) -> Any:
                name, kwargs, cached = self._enter(fn, test_class_instance, kwargs)
                try:
                    return fn(test_class_instance, **self._arguments(fn, kwargs))
                finally:
                    if not cached:
                        self.remove_resource(name, **kwargs)

            wrapper = run
        setattr(wrapper, _IS_PREPARER, True)
        if self._use_cache or getattr(fn, _USES_CACHE, False):
            setattr(wrapper, _USES_CACHE, True)
        # pytest sees the signature of ``fn`` (``functools.wraps``): parametrized arguments reach the test, and the
        # prepared ones are the test's keyword arguments with defaults, or hidden by ``recorded_by_proxy``
        return wrapper  # type: ignore[return-value]


class EnvironmentVariableLoader(AzureMgmtPreparer):
    """Passes each ``<directory>_*`` keyword argument's value from the upper-cased environment variable.

    The keyword's own value is the fake one recordings hold (an empty one is an error, as in the real loader). A
    missing variable is an error naming it, unless backup ``preparers`` are given: they then create the resources
    instead. When ``<DIRECTORY>_TENANT_ID``, ``_CLIENT_ID`` and ``_CLIENT_SECRET`` are all set they become
    ``AZURE_TENANT_ID`` / ``AZURE_CLIENT_ID`` / ``AZURE_CLIENT_SECRET`` (a service principal), as in the real one.
    """

    def __init__(
        self,
        directory: str,
        name_prefix: str = "",
        disable_recording: bool = True,
        client_kwargs: dict[str, Any] | None = None,
        random_name_enabled: bool = False,
        use_cache: bool = True,
        preparers: list[AzureMgmtPreparer] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name_prefix, 24, disable_recording, None, client_kwargs, random_name_enabled)
        self.directory = directory
        self.fake_values = {k: v for k, v in kwargs.items() if directory in k}
        self.real_values: dict[str, Any] = {}
        self._backup_preparers = preparers

    def create_random_name(self) -> str:
        return self.name_prefix or self.directory  # no resource is created: the name is never used

    def _service_principal(self) -> None:
        prefix = self.directory.upper()
        values = {part: os.environ.get(f"{prefix}_{part}") for part in ("TENANT_ID", "CLIENT_ID", "CLIENT_SECRET")}
        if all(values.values()):
            os.environ.update({f"AZURE_{part}": str(value) for part, value in values.items()})

    def create_resource(self, name: str, **kwargs: Any) -> dict[str, Any]:
        self._service_principal()
        empty = [key for key, fake in self.fake_values.items() if not fake]
        if empty:
            raise AzureTestError(f"give the fake value recordings use for {', '.join(empty)}")
        missing = sorted(key.upper() for key in self.fake_values if key.upper() not in os.environ)
        if not missing:
            self.real_values = {key.lower(): os.environ[key.upper()] for key in self.fake_values}
            return self.real_values
        if not self._backup_preparers:
            raise AzureTestError(f"live tests need the environment variables {', '.join(missing)}")
        self.real_values, create_kwargs = {}, {}
        for preparer in self._backup_preparers:
            _, values = preparer._prepare_create_resource(self.test_class_instance, **create_kwargs)
            self.real_values.update(values)
            if "resource_group" in values:
                create_kwargs["resource_group"] = values["resource_group"]
        return self.real_values
