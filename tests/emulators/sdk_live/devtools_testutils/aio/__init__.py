"""The async half of the live-mode ``devtools_testutils`` stand-in (see the package docstring)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from devtools_testutils.helpers import hide_signature, require_live, trim_kwargs

__all__ = ["recorded_by_proxy_async"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def recorded_by_proxy_async(test_func: F) -> F:
    """Live mode without recording: the coroutine test runs as it is."""

    @functools.wraps(test_func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        require_live()
        kwargs.pop("variables", None)
        return await test_func(*args, **trim_kwargs(test_func, kwargs))

    hide_signature(run)
    return run  # type: ignore[return-value]
